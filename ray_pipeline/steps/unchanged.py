"""Unchanged: the listed files whose stored record was made from them as they are now (same path,
size and modification time). They are found before any file is read, so a re-run reads only what is
new or changed, and one with nothing new starts no Ray job at all. `--rehash` turns this off.

A few files left over (copies of stored files, files moved or touched) are read and hashed right here
rather than start a Ray job for them.
"""

from __future__ import annotations

import hashlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ray_pipeline.core.outcome import Outcome
from ray_pipeline.core.paths import FileFailure, is_within, recorded_path
from ray_pipeline.files.reading import read_file
from ray_pipeline.files.state import STAT_THREADS, FileState, file_states
from ray_pipeline.model.clip import ModelSpec, recorded_identity
from ray_pipeline.records.chroma import same_model
from ray_pipeline.records.enrichments import LAYOUT_KEY, RECORD_LAYOUT
from ray_pipeline.records.errors import FolderInUse, MissingCollection
from ray_pipeline.records.owner import StoreHandle
from ray_pipeline.records.store import RecordStore, opened_here
from ray_pipeline.records.target import StoreTarget
from ray_pipeline.steps.journey import refresh_records
from ray_pipeline.steps.summary import Tally

logger = logging.getLogger(__name__)

PATHS_PER_TASK = 1024
# Leftover files read here at most: starting a Ray job costs more than reading and hashing this much.
LEFTOVER_FILES = 10_000
LEFTOVER_BYTES = 1 << 30


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


def unchanged_files(store: RecordStore, paths: list[str], within: tuple[str, ...] = ()) -> tuple[dict[str, str], list]:
    """({path: stored id} of the files that need not be read, the (path, size, mtime_ns) of the others).

    With `within`, only files that really lie inside those folders qualify: the others go on to be
    refused with their reason.
    """
    stats = _stats_within(paths, within)
    unchanged = store.unchanged(stats) if stats else {}
    return unchanged, [stat for stat in stats if stat[0] not in unchanged]


def _stats_within(paths: list[str], within: tuple[str, ...]) -> list[tuple[str, int, int]]:
    """The stats of those paths that really lie inside `within` (when given), in parallel."""
    if within:
        paths = [path for path in paths if is_within(os.path.realpath(path), within)]
    chunks = [paths[start : start + PATHS_PER_TASK] for start in range(0, len(paths), PATHS_PER_TASK)]
    with ThreadPoolExecutor(STAT_THREADS) as pool:
        return [stat for chunk in pool.map(_stats, chunks) for stat in chunk]


def settle_leftovers(store: RecordStore, leftovers: list[tuple[str, int, int]], unchanged: dict[str, str]) -> dict[str, str]:
    """Read and hash the leftover files (path, size, mtime_ns), when they are few, to settle those whose
    bytes are stored: a moved or touched file is its record's (which learns the new path or stat) and
    joins `unchanged`; a copy of a file stored under another path is a duplicate. Returns the duplicates
    {path: id}; files with new bytes, or that cannot be read, are left to the job."""
    if not leftovers or len(leftovers) > LEFTOVER_FILES or sum(size for _, size, _ in leftovers) > LEFTOVER_BYTES:
        return {}
    hashed = {}
    for path, _, _ in leftovers:
        try:
            file = read_file(path)
        except OSError:
            continue
        digest = hashlib.sha256(file.data).hexdigest()
        file.data = b""  # only its stat is needed from here on
        hashed[path] = (file, digest)
    recorded = store.records(sorted({record_id for _, record_id in hashed.values()}))
    duplicates, refresh = {}, {}
    for path, (file, record_id) in hashed.items():
        if record_id not in recorded:
            continue  # new bytes: the job embeds them
        # A copy: its record's own file is listed and unchanged, or an earlier leftover settled it.
        if unchanged.get(recorded_path(recorded[record_id]) or "") == record_id or record_id in refresh:
            duplicates[path] = record_id
            continue
        unchanged[path] = record_id
        refresh[record_id] = (file, recorded[record_id])
    refresh_records(store, refresh)
    if hashed:
        logger.info("files read here, their records not matching path, size and mtime: %d (%d stored already, "
                    "%d copies, %d new)", len(hashed), len(refresh), len(duplicates), len(hashed) - len(refresh) - len(duplicates))
    return duplicates


@dataclass(frozen=True)
class Stored:
    """What the collection holds of the listed files, as seen before the job starts."""

    unchanged: dict[str, str]  # path -> id of its record
    duplicates: dict[str, str]  # path -> id of a record stored under another listed path
    collection_metadata: dict | None  # None: the collection does not exist yet
    failed: dict[str, str] = field(default_factory=dict)  # path -> reason: failed before, unchanged since
    states: dict[str, FileState] = field(default_factory=dict)  # the files to read, as they were before
    changed_since_failing: frozenset[str] = frozenset()  # files to read that failed before, in another state

    def settled(self, path: str) -> bool:
        return path in self.unchanged or path in self.duplicates or path in self.failed

    def holds(self) -> dict[str, str]:
        """{path: id} of the listed files whose content is known without reading them."""
        return {**self.duplicates, **self.unchanged}

    def left_to_read(self, paths: list[str]) -> list[str]:
        return [path for path in paths if not self.settled(path)]

    def claims(self) -> list[tuple[str, str]]:
        """(id, path) of the files passed over unread: claimed in the job's duplicate registry first, so
        that a copy of one of them, read in this job, still counts as a duplicate."""
        return [(record_id, path) for path, record_id in self.unchanged.items()]

    def count_into(self, tally: Tally, keep_stored: bool = False) -> None:
        """The settled files in the job's summary; with `keep_stored`, the unchanged
        files are remembered as stored (for captions)."""
        tally.outcomes[Outcome.EXISTING] += len(self.unchanged)
        tally.outcomes[Outcome.DUPLICATE] += len(self.duplicates)
        tally.fail([FileFailure(path, reason) for path, reason in self.failed.items()])
        if keep_stored:
            tally.stored += self.claims()

    def covers(self, paths: list[str], model: ModelSpec) -> bool:
        """Whether every listed file is settled, in a collection of this very model (a different model
        is refused by the job, not passed over here) whose records are of the current layout (an older one
        is brought up to date by the job, when it opens the collection for writing)."""
        if self.collection_metadata is None or len(self.unchanged) + len(self.duplicates) + len(self.failed) < len(paths):
            return False
        if self.collection_metadata.get(LAYOUT_KEY, 1) < RECORD_LAYOUT:
            return False
        identity = recorded_identity(model)
        return identity is not None and same_model(self.collection_metadata, identity)


def stored_in(store: RecordStore, paths: list[str], within: tuple[str, ...] = (), rehash: bool = False,
              read_leftovers: bool = True) -> Stored:
    """What `store` holds of these files: unchanged files, copies and moves
    of stored ones (a few leftovers are read here to tell, unless `read_leftovers` is false: their
    journeys will tell), and files that failed before and have not changed since. With `rehash`, nothing
    is settled: every file is read, those that failed before too."""
    unchanged: dict[str, str] = {}
    duplicates: dict[str, str] = {}
    if not rehash:
        unchanged, leftovers = unchanged_files(store, paths, within)
        duplicates = settle_leftovers(store, leftovers, unchanged) if read_leftovers else {}
    states = file_states([path for path in paths if path not in unchanged and path not in duplicates])
    remembered = store.failed_before(states)
    if rehash:  # read again, and remembered afresh
        remembered = dict.fromkeys(remembered)
    failed = {path: reason for path, reason in remembered.items() if reason is not None}
    if failed:
        logger.info("%d files failed before and have not changed since: reported again, not read (--rehash reads them)",
                    len(failed))
    return Stored(unchanged, duplicates, store.metadata, failed, {p: s for p, s in states.items() if p not in failed},
                  frozenset(path for path, reason in remembered.items() if reason is None))


def stored_before_start(target: StoreTarget, paths: list[str], within: tuple[str, ...] = (),
                        rehash: bool = False) -> Stored | None:
    """Checked by this process, before Ray starts; None when another process holds the embedded folder
    (a Serve app's owner): the job then checks through that owner."""
    try:
        with opened_here(target) as store:
            if store is None:  # every file is read; those that fail are remembered as they were before
                return Stored({}, {}, None, states=file_states(paths))
            return stored_in(store, paths, within, rehash)
    except FolderInUse:
        return None


def stored_through(handle: StoreHandle, paths: list[str], within: tuple[str, ...] = (), rehash: bool = False) -> Stored:
    """As `stored_before_start`, through the owner that holds the embedded folder (a Serve app's)."""
    try:
        return stored_in(handle.store, paths, within, rehash)
    except MissingCollection:
        return Stored({}, {}, None, states=file_states(paths))
