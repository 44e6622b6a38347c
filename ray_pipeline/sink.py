"""Sink: the Ray Data Datasink that upserts new records into Chroma and tallies every row's outcome."""

from __future__ import annotations

import json
from collections import Counter
from typing import Iterable

import numpy as np
from ray.data import Datasink
from ray.data.block import Block, BlockAccessor

from ray_pipeline.prepare import DUPLICATE, EXISTING, FAILED, NEW

# How each row status is counted in the job summary.
SUMMARY_KEYS = {NEW: "embedded", EXISTING: "skipped_existing", DUPLICATE: "duplicates", FAILED: "failed"}


class Tally:
    """Counts per summary key, and the failed files with their reasons."""

    def __init__(self, counts: Counter | None = None, errors: list[dict] | None = None):
        self.counts = counts or Counter()
        self.errors = errors or []

    def add(self, other: "Tally") -> None:
        self.counts.update(other.counts)
        self.errors.extend(other.errors)

    def summary(self) -> dict[str, int]:
        counts = {key: self.counts.get(key, 0) for key in SUMMARY_KEYS.values()}
        return {"discovered": sum(counts.values()), **counts}


class ChromaDatasink(Datasink[Tally]):
    def __init__(self, store):
        self.store = store  # StoreHandle
        self.tally = Tally()

    def write(self, blocks: Iterable[Block], ctx) -> Tally:
        tally = Tally()
        for block in blocks:
            rows = BlockAccessor.for_block(block).to_numpy(["path", "status", "reason", "id", "embedding", "metadata"])
            new = np.flatnonzero(rows["status"] == NEW)
            if len(new):
                self.store.upsert(
                    [str(rows["id"][i]) for i in new],
                    np.stack([np.frombuffer(rows["embedding"][i], np.float32) for i in new]),
                    [json.loads(rows["metadata"][i]) for i in new],
                )
            tally.counts.update(SUMMARY_KEYS[str(s)] for s in rows["status"])
            tally.errors += [
                {"path": str(rows["path"][i]), "reason": str(rows["reason"][i])}
                for i in np.flatnonzero(rows["status"] == FAILED)
            ]
        return tally

    def on_write_complete(self, write_result) -> None:
        for tally in write_result.write_returns:
            self.tally.add(tally)
