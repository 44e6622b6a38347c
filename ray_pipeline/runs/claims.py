"""Claims: a job's duplicate registry (`journey.DuplicateRegistry`), spread over several Ray actors by
the contents' ids, so that no one actor holds every id of a job of 10^8 files.

The semantics are the registry's: the first path seen with a content owns it, later ones are
duplicates, and a path that claims again keeps what it owned. Each content's id falls in exactly one
shard, so one shard decides for all of its paths.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from ray_pipeline.records.shards import shard_of
from ray_pipeline.steps.journey import DuplicateRegistry

IDS_PER_SHARD = 2_000_000  # about half a GB of one actor's memory (an id, a path and a dict entry each)
MAX_SHARDS = 64
PAIRS_PER_CALL = 100_000  # (id, path) pairs in one round of calls to the shards: a few MB each


def shard_count(files: int) -> int:
    """How many shards a job of this many files gets: one per IDS_PER_SHARD files, at least one."""
    return max(1, min(MAX_SHARDS, math.ceil(files / IDS_PER_SHARD)))


class ShardedClaims:
    """What the driver and the job's CPU actors claim through: picklable, it holds the shards' actor
    handles. `get` turns a shard's reply into its answer (`ray.get`; the tests' local shards need none)."""

    def __init__(self, shards: list, get: Callable | None = None):
        self.shards = shards
        self._get = get

    @classmethod
    def start(cls, files: int, **options) -> ShardedClaims:
        """Shard actors for a job of this many files; `options`: their Ray actor options."""
        import ray


        actor = ray.remote(DuplicateRegistry).options(num_cpus=0, **options)
        return cls([actor.remote() for _ in range(shard_count(files))])

    def claim(self, pairs: list[tuple[str, str]]) -> list[bool]:
        """For each (id, path): does this path own the content? Asked PAIRS_PER_CALL at a time (the driver
        claims every stored file of a job at once), all shards at once."""
        owns: list[bool] = []
        for start in range(0, len(pairs), PAIRS_PER_CALL):
            owns += self._claim_at_once(pairs[start : start + PAIRS_PER_CALL])
        return owns

    def _claim_at_once(self, pairs: list[tuple[str, str]]) -> list[bool]:
        rows: dict[int, list[int]] = {}
        for row, (record_id, _) in enumerate(pairs):
            rows.setdefault(shard_of(record_id, len(self.shards)), []).append(row)
        replies = {shard: self.shards[shard].claim.remote([pairs[row] for row in shard_rows])
                   for shard, shard_rows in rows.items()}
        get = self._get or _ray_get
        owns = [False] * len(pairs)
        for shard, shard_rows in rows.items():
            for row, owner in zip(shard_rows, get(replies[shard])):
                owns[row] = owner
        return owns

    def stop(self) -> None:
        import ray

        for shard in self.shards:
            ray.kill(shard)


def _ray_get(reply):
    import ray

    return ray.get(reply)
