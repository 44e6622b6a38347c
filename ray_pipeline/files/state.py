"""File state: what tells whether a file changed since it was last looked at (its size, mtime and ctime),
taken without reading it, many files at once."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

STAT_THREADS = 16  # os.stat releases the GIL: on a network file system many answers are awaited at once


@dataclass(frozen=True)
class FileState:
    """What tells whether a file changed since it failed."""

    size: int
    mtime_ns: int
    ctime_ns: int


def file_state(path: str) -> FileState | None:
    """The file's state now; None when it cannot be stat'ed at all."""
    for stat in (os.stat, os.lstat):  # a link that leads nowhere is known by its own stat
        try:
            info = stat(path)
        except OSError:
            continue
        return FileState(info.st_size, info.st_mtime_ns, info.st_ctime_ns)
    return None


def file_states(paths: list[str]) -> dict[str, FileState]:
    """The state of each of these files now, taken before they are read (those that vanished are left out)."""
    with ThreadPoolExecutor(STAT_THREADS) as pool:
        return {path: state for path, state in zip(paths, pool.map(file_state, paths)) if state is not None}
