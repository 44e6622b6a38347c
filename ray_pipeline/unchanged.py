"""Unchanged: the listed files whose stored record was made from them as they are now (same path,
size and modification time). They are found before any file is read, so a re-run reads only what is
new or changed, and one with nothing new starts no Ray job at all. `--rehash` turns this off.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ray_pipeline.discover import is_within
from ray_pipeline.model import ModelSpec, recorded_identity
from ray_pipeline.store import MODEL_KEYS, FolderInUse, StoreTarget, opened_here

# os.stat releases the GIL: on a network file system many answers are awaited at once.
STAT_THREADS = 16
PATHS_PER_TASK = 1024


def _stats(paths: list[str]) -> list[tuple[str, int, int]]:
    """(path, size, mtime_ns) of those paths that can be stat'ed (reading the others says why)."""
    found = []
    for path in paths:
        try:
            stat = os.stat(path)
        except OSError:
            continue
        found.append((path, stat.st_size, stat.st_mtime_ns))
    return found


def unchanged_files(store, paths: list[str], within: tuple[str, ...] = ()) -> dict[str, str]:
    """{path: stored id} of the files that need not be read. `store` is a ChromaStore or StoreHandle.

    With `within`, only files that really lie inside those folders qualify: the others go on to be
    refused with their reason.
    """
    if within:
        paths = [path for path in paths if is_within(os.path.realpath(path), within)]
    chunks = [paths[start : start + PATHS_PER_TASK] for start in range(0, len(paths), PATHS_PER_TASK)]
    with ThreadPoolExecutor(STAT_THREADS) as pool:
        stats = [stat for chunk in pool.map(_stats, chunks) for stat in chunk]
    return store.unchanged(stats) if stats else {}


@dataclass(frozen=True)
class Stored:
    """What the collection holds of the listed files, as seen before the job starts."""

    unchanged: dict[str, str]  # path -> id of its record
    collection_metadata: dict | None  # None: the collection does not exist yet

    def covers(self, paths: list[str], model: ModelSpec) -> bool:
        """Whether every listed file is stored unchanged, in a collection of this very model (a
        different model is refused by the job, not passed over here)."""
        if self.collection_metadata is None or len(self.unchanged) < len(paths):
            return False
        identity = recorded_identity(model)
        return identity is not None and all(self.collection_metadata.get(k) == identity[k] for k in MODEL_KEYS)


def stored_before_start(target: StoreTarget, paths: list[str], within: tuple[str, ...] = ()) -> Stored | None:
    """Checked by this process, before Ray starts; None when another process holds the embedded folder
    (a Serve app's owner): the job then checks through that owner."""
    try:
        with opened_here(target) as store:
            if store is None:
                return Stored({}, None)
            return Stored(unchanged_files(store, paths, within), store.metadata)
    except FolderInUse:
        return None
