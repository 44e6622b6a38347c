"""Reading a file: a name that leads to no file of data is refused by its kind, before a byte is read and
without blocking; no more is read than the stat says; the descriptor is closed on every path."""

from __future__ import annotations

import os
import socket
import threading

import pytest

from ray_pipeline.core.reasons import lasting
from ray_pipeline.files.reading import TooLarge, read_file

pytestmark = pytest.mark.unit


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def refused(path) -> str:
    with pytest.raises(OSError) as raised:
        read_file(str(path))
    return raised.value.strerror


def test_names_that_lead_to_no_file_of_data_are_refused_at_once(tmp_path):
    os.mkfifo(tmp_path / "fifo.jpg")
    listening = socket.socket(socket.AF_UNIX)
    listening.bind(str(tmp_path / "socket.jpg"))
    (tmp_path / "folder").mkdir()
    os.symlink(tmp_path / "folder", tmp_path / "folder.jpg")
    before = open_descriptors()
    done = []
    reader = threading.Thread(target=lambda: done.append(refused(tmp_path / "fifo.jpg")), daemon=True)
    reader.start()
    reader.join(timeout=5)  # a FIFO with no writer: opened without blocking, refused by its kind
    assert done == ["not a regular file: a FIFO (named pipe)"]
    assert refused(tmp_path / "socket.jpg") == "not a regular file: a socket"
    assert refused(tmp_path / "folder.jpg") == "is a folder, not a file"
    assert refused("/dev/zero") == "not a regular file: a character device"
    assert refused(tmp_path / "none.jpg") == "cannot read file: No such file or directory"
    assert open_descriptors() == before  # closed on every path
    listening.close()


def test_a_kernel_file_that_gives_more_than_its_size_is_refused_and_tried_again_later():
    assert os.stat("/proc/self/status").st_size == 0
    reason = refused("/proc/self/status")
    assert reason.startswith("cannot read file: it holds more than the 0 bytes its stat says")
    assert not lasting(reason)  # a file being written may be whole next time


def test_no_more_is_read_than_asked_for(tmp_path):
    (tmp_path / "photo.jpg").write_bytes(b"x" * 1000)
    assert read_file(str(tmp_path / "photo.jpg"), max_bytes=1000).data == b"x" * 1000
    with pytest.raises(TooLarge):
        read_file(str(tmp_path / "photo.jpg"), max_bytes=999)
