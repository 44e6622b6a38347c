"""Failures remembered: a file that failed is reported again with its reason, without being read, until
it changes. So a library with a corrupt file re-runs as fast as a clean one.

A file is the same file while its path, size, mtime and ctime are (a chmod that makes it readable
changes its ctime, so it is tried again). A dangling symlink or a loop is known by the link's own stat,
and is tried again once its target appears. The failures live in a companion collection beside the
collection (`failures_collection`), so that every process writing it sees them: the CLI, a Ray job,
the Serve app.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

FAILURES_SUFFIX = "--failed-files"
MAX_NAME = 512  # Chroma's longest collection name
STAT_THREADS = 16  # os.stat releases the GIL: on a network file system many answers are awaited at once


@dataclass(frozen=True)
class FileState:
    """What tells whether a file changed since it failed."""

    size: int
    mtime_ns: int
    ctime_ns: int


@dataclass(frozen=True)
class Failure:
    path: str
    state: FileState
    reason: str


def lasting(reason: str) -> bool:
    """Whether a failure comes from the file itself, and stays while the file does: not one that hangs on
    this run's settings (--max-pixels, --within) or on a passing state (a read error, a permission)."""
    from ray_pipeline.decode import PIXEL_LIMIT
    from ray_pipeline.journey import OUTSIDE_ROOTS, PERMISSION_DENIED, READ_ERROR

    return not reason.startswith((PERMISSION_DENIED, READ_ERROR, OUTSIDE_ROOTS)) and PIXEL_LIMIT not in reason


def failures_collection(collection: str) -> str:
    """The companion's name: the collection's, and the suffix; a name too long for Chroma (512
    characters) is cut and told apart by a hash of the whole."""
    name = collection + FAILURES_SUFFIX
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.sha256(collection.encode()).hexdigest()[:16]
    return f"{collection[: MAX_NAME - len(FAILURES_SUFFIX) - 17]}-{digest}{FAILURES_SUFFIX}"


def is_failures_collection(name: str) -> bool:
    return name.endswith(FAILURES_SUFFIX)


def failure_id(path: str) -> str:
    """One memory per path: the SHA-256 of its name's bytes."""
    return hashlib.sha256(os.fsencode(path)).hexdigest()


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
