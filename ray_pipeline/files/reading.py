"""Reading: a file's bytes and stat, read once, or the reason users see when it cannot be read.

A name can lead to something that is not a file: a FIFO, a device, a socket, a folder, or a kernel file
(/proc, /sys) whose stat says 0 bytes and whose reads never end. Each is opened without blocking and refused
by its kind before a byte is read, and no more is ever read than the stat says, so no thread waits on a
writer that never comes and no read grows without bound. The descriptor is closed on every path.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass

from ray_pipeline.core.reasons import PERMISSION_DENIED, READ_ERROR

NOT_REGULAR = "not a regular file"
_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket"))


@dataclass
class FileBytes:
    path: str
    data: bytes
    size: int
    mtime: float
    mtime_ns: int = 0  # exact, where `mtime` (a float) does not survive Chroma's storage bit for bit


class TooLarge(OSError):
    """The file holds more bytes than the reader takes."""


def read_file(path: str, max_bytes: int | None = None) -> FileBytes:
    """The file's bytes and stat, or an OSError whose message is the reason users see. `max_bytes`: a file
    larger than this is refused (TooLarge) before any byte is read."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise OSError(exc.errno, _open_failure(path, exc)) from None
    try:
        info = os.fstat(descriptor)
        if stat.S_ISDIR(info.st_mode):
            raise OSError(errno.EISDIR, "is a folder, not a file")
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, f"{NOT_REGULAR}: {_kind(info.st_mode)}")
        if max_bytes is not None and info.st_size > max_bytes:
            raise TooLarge(errno.EFBIG, f"larger than {max_bytes} bytes")
        data = _read_exactly(descriptor, info.st_size)
    finally:
        os.close(descriptor)
    return FileBytes(path=path, data=data, size=info.st_size, mtime=info.st_mtime, mtime_ns=info.st_mtime_ns)


def _read_exactly(descriptor: int, size: int) -> bytes:
    """The `size` bytes a regular file's stat promises: one more says it grows, or is a kernel file."""
    chunks, left = [], size + 1
    try:
        while left > 0:
            chunk = os.read(descriptor, min(left, 1 << 24))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    except OSError as exc:
        raise OSError(exc.errno, f"{READ_ERROR}: {exc.strerror or exc}") from None
    data = b"".join(chunks)
    if len(data) > size:
        raise OSError(errno.EIO, f"{READ_ERROR}: it holds more than the {size} bytes its stat says (a file being "
                                 "written, or a kernel file of /proc or /sys)")
    return data


def _kind(mode: int) -> str:
    return next((kind for test, kind in _KINDS if test(mode)), "not a file of data")


def _open_failure(path: str, exc: OSError) -> str:
    if exc.errno == errno.ENOENT and os.path.islink(path):
        return "broken symlink"
    if exc.errno == errno.ELOOP:
        return "symlink loop"
    if exc.errno == errno.EACCES:
        return PERMISSION_DENIED
    if exc.errno in (errno.ENXIO, errno.EOPNOTSUPP):  # a socket, or a FIFO or device that opens to nothing
        try:
            return f"{NOT_REGULAR}: {_kind(os.stat(path).st_mode)}"
        except OSError:
            pass
    return f"{READ_ERROR}: {exc.strerror or exc}"
