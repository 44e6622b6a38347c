"""After the files: what every run does once its files are through, in one sequence, whatever its route
(in this process, the app's warm path, a watch's batch, the Ray Data job, a streamed manifest):

1. remember the files that failed for a lasting reason (`core.reasons.lasting`), with their state before
   reading, and forget the failures of files read fine now, or seen going; a failed file the Serve app
   uploaded is deleted instead (it is the app's copy, and of no use);
2. give records the paths of the copies of their bytes found in this run;
3. mark the RAW+JPEG pairs among its files;
4. with prune, remove the records of files gone, or holding other bytes now (or have them follow a copy);
5. queue the costly enrichments asked for, for the records stored (the run's pool then makes them).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace

from ray_pipeline.core import record_keys as keys
from ray_pipeline.core.paths import is_within
from ray_pipeline.core.reasons import lasting
from ray_pipeline.files.state import FileState
from ray_pipeline.files.upload_names import name_file, upload_name
from ray_pipeline.records.enrichments import CostlyEnrichment
from ray_pipeline.records.failures import Failure
from ray_pipeline.records.store import RecordStore
from ray_pipeline.steps.enrich import Queued, queue
from ray_pipeline.steps.pairs import PairScope
from ray_pipeline.steps.prune import PrunePlan, Pruning, plan_pruning
from ray_pipeline.steps.summary import Tally
from ray_pipeline.steps.unchanged import Stored


@dataclass(frozen=True)
class FilesThrough:
    """What a run knows of its files once they are through, beside its tally."""

    pairs: PairScope  # where the run's RAW+JPEG pairs are looked for
    read_before: dict[str, FileState] = field(default_factory=dict)  # the files it read, each as it was before
    changed_since_failing: frozenset[str] = frozenset()  # files it read that had failed before in another state
    settled_copies: dict[str, str] = field(default_factory=dict)  # {path: id}: copies of stored bytes, settled unread
    holds: dict[str, str] = field(default_factory=dict)  # {path: id} of its files whose bytes are known unread
    gone: tuple[str, ...] = ()  # paths seen going (a watch's): what failed there is forgotten with them

    @classmethod
    def of(cls, stored: Stored, pairs: PairScope, gone: tuple[str, ...] = ()) -> FilesThrough:
        """A listed run's files, as the check before reading (`unchanged.stored_in`) found them."""
        return cls(pairs, stored.states, stored.changed_since_failing, dict(stored.duplicates), stored.holds(), gone)


@dataclass(frozen=True)
class After:
    """What the sequence did: what prune planned (and applied), every file's known content, what is queued."""

    plan: PrunePlan
    holds: dict[str, str]  # {path: id} of the run's files whose bytes are known: unread, or read now
    queued: list[Queued]


def after_files(store: RecordStore, files: FilesThrough, tally: Tally, pruning: Pruning | None = None,
                enrichments: tuple[CostlyEnrichment, ...] = (), uploads: str | None = None) -> After:
    """The steps after a run's files, on the store the run wrote; `tally.removed` counts what prune removed.
    `uploads`: the Serve app's upload folder, whose failed files are deleted, and whose stored files' records
    learn the names they were uploaded with."""
    failed = {error.path: error.reason for error in tally.errors}
    if uploads is not None:
        discarded = [path for path in failed if is_within(os.path.realpath(path), (uploads,))]
        names = {path: upload_name(uploads, path) for path in discarded}  # reported by the names they came with
        tally.errors = [replace(error, name=names[error.path]) if names.get(error.path) else error for error in tally.errors]
        discard_uploads(uploads, discarded)
        failed = {path: reason for path, reason in failed.items() if path not in discarded}
    store.remember_failures(
        [Failure(path, files.read_before[path], reason) for path, reason in failed.items()
         if path in files.read_before and lasting(reason)],
        sorted({*(path for path in files.changed_since_failing if path not in failed), *files.gone}))
    copies = [*tally.copies, *((record_id, path) for path, record_id in files.settled_copies.items())]
    if copies:
        store.add_paths(_by_record(copies))
    files.pairs.mark(store)
    holds = {**files.holds, **{path: record_id for record_id, path in tally.held}}
    plan = PrunePlan()
    if pruning is not None:
        plan = plan_pruning(store, pruning, holds)
        plan.apply(store)
        tally.removed += len(plan.removals)
    if uploads is not None:
        named = {record_id: {keys.UPLOAD_NAME: name} for record_id, path in tally.stored
                 if is_within(os.path.realpath(path), (uploads,)) and (name := upload_name(uploads, path))}
        if named:
            store.merge_metadata(named)
    store.note_ingestion({"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **tally.summary(),
                          "removed": tally.removed})
    return After(plan, holds, queue(store, enrichments, tally.stored) if enrichments else [])


def discard_uploads(uploads: str, paths: list[str]) -> None:
    """Delete the app's copies of uploads that failed, and the names they came with: kept, they would fill its
    folder with files of no use."""
    for path in [*paths, *(name_file(uploads, path) for path in paths)]:
        try:
            os.remove(path)
        except OSError:  # gone already (the same bytes uploaded twice, failing twice)
            continue


def _by_record(copies: list[tuple[str, str]]) -> dict[str, list[str]]:
    """(id, path) of each file holding a record's bytes, as {id: paths}."""
    by_record: dict[str, list[str]] = {}
    for record_id, path in copies:
        by_record.setdefault(record_id, []).append(path)
    return by_record
