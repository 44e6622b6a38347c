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
from dataclasses import dataclass

from ray_pipeline.core.paths import path_fields
from ray_pipeline.files.state import FileState
from ray_pipeline.records.companions import FAILURES_SUFFIX, companion_name
from ray_pipeline.records.connection import with_retries
from ray_pipeline.records.target import StoreTarget


@dataclass(frozen=True)
class Failure:
    path: str
    state: FileState
    reason: str


def failures_collection(collection: str) -> str:
    return companion_name(collection, FAILURES_SUFFIX)


def failure_id(path: str) -> str:
    """One memory per path: the SHA-256 of its name's bytes."""
    return hashlib.sha256(os.fsencode(path)).hexdigest()


class FailureMemory:
    """A collection's remembered failures: its companion collection, one record per path."""

    def __init__(self, companion, target: StoreTarget, max_batch: int):
        self._companion = companion
        self._target = target
        self._max_batch = max_batch

    @classmethod
    def of(cls, client, target: StoreTarget, max_batch: int, create: bool) -> FailureMemory | None:
        """The memory of the target's collection; None when it has none yet and `create` is false."""
        name = failures_collection(target.collection)
        if create:
            companion = with_retries(target, client.get_or_create_collection, name, embedding_function=None,
                                     metadata={"failures_of": target.collection})
        else:
            try:
                companion = client.get_collection(name, embedding_function=None)
            except Exception:  # none yet
                return None
        return cls(companion, target, max_batch)

    def failed_before(self, states: dict[str, FileState]) -> dict[str, str | None]:
        """{path: reason} of those of these files that failed before in this very state, and {path: None}
        of those that failed before in another state (changed since)."""
        paths = {failure_id(path): path for path in states}
        ids, found = list(paths), {}
        for start in range(0, len(ids), self._max_batch):
            batch = with_retries(self._target, self._companion.get, ids=ids[start : start + self._max_batch],
                                 include=["metadatas"])
            for failure, metadata in zip(batch["ids"], batch["metadatas"]):
                state = states[paths[failure]]
                same = (metadata.get("file_size"), metadata.get("mtime_ns"), metadata.get("ctime_ns")) == (
                    state.size, state.mtime_ns, state.ctime_ns)
                found[paths[failure]] = metadata.get("reason", "") if same else None
        return found

    def remember(self, failed: list[Failure], cleared: list[str]) -> None:
        """Remember these failures, and forget what was remembered of the `cleared` paths."""
        forget = [failure_id(path) for path in cleared]
        for start in range(0, len(forget), self._max_batch):
            with_retries(self._target, self._companion.delete, ids=forget[start : start + self._max_batch])
        for start in range(0, len(failed), self._max_batch):
            batch = failed[start : start + self._max_batch]
            with_retries(self._target, self._companion.upsert, ids=[failure_id(f.path) for f in batch],
                         embeddings=[[1.0]] * len(batch),
                         metadatas=[{**path_fields(f.path), "reason": f.reason, "file_size": f.state.size,
                                     "mtime_ns": f.state.mtime_ns, "ctime_ns": f.state.ctime_ns} for f in batch])
