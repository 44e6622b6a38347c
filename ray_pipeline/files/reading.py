"""Reading: a file's bytes and stat, read once, or the reason users see when it cannot be read."""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass

from ray_pipeline.core.reasons import PERMISSION_DENIED, READ_ERROR


@dataclass
class FileBytes:
    path: str
    data: bytes
    size: int
    mtime: float
    mtime_ns: int = 0  # exact, where `mtime` (a float) does not survive Chroma's storage bit for bit


def read_file(path: str) -> FileBytes:
    """The file's bytes and stat, or an OSError whose message is the reason users see."""
    try:
        with open(path, "rb") as f:
            stat = os.fstat(f.fileno())
            data = f.read()
    except OSError as exc:
        raise OSError(exc.errno, _read_failure(path, exc)) from None
    return FileBytes(path=path, data=data, size=stat.st_size, mtime=stat.st_mtime, mtime_ns=stat.st_mtime_ns)


def _read_failure(path: str, exc: OSError) -> str:
    if exc.errno == errno.ENOENT and os.path.islink(path):
        return "broken symlink"
    if exc.errno == errno.ELOOP:
        return "symlink loop"
    if exc.errno == errno.EACCES:
        return PERMISSION_DENIED
    if exc.errno == errno.EISDIR:
        return "is a folder, not a file"
    return f"{READ_ERROR}: {exc.strerror or exc}"


