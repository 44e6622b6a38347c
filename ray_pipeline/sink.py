"""Sink: the Ray Data Datasink that upserts new records into Chroma and tallies every row's outcome."""

from __future__ import annotations

import json
import os
import time
from typing import Iterable

import numpy as np
from ray.data import Datasink
from ray.data.block import Block, BlockAccessor

from ray_pipeline.metrics import count_files
from ray_pipeline.outcome import Outcome
from ray_pipeline.progress import Reporter
from ray_pipeline.store import RecordStore
from ray_pipeline.summary import STAGE_COLUMNS, Tally


class ChromaDatasink(Datasink[Tally]):
    """`reporter` (progress.Reporter) gets each block's counts as soon as they are written."""

    def __init__(self, store: RecordStore, reporter: Reporter, keep_stored: bool = False):
        self.store = store  # StoreHandle
        self.reporter = reporter
        self.keep_stored = keep_stored  # remember (id, path) of the files, for captions and prune
        self.tally = Tally()

    def write(self, blocks: Iterable[Block], ctx) -> Tally:
        tally = Tally()
        for block in blocks:
            rows = BlockAccessor.for_block(block).to_numpy(
                ["path", "status", "reason", "id", "embedding", "metadata", *STAGE_COLUMNS.values()])
            new = np.flatnonzero(rows["status"] == Outcome.NEW)
            block_tally = Tally()
            started = time.perf_counter()
            if len(new):
                self.store.upsert(
                    [str(rows["id"][i]) for i in new],
                    np.stack([np.frombuffer(rows["embedding"][i], np.float32) for i in new]),
                    [json.loads(rows["metadata"][i]) for i in new],
                )
            block_tally.seconds["write"] = time.perf_counter() - started
            block_tally.seconds.update({stage: float(rows[column].sum()) for stage, column in STAGE_COLUMNS.items()})
            paths = [os.fsdecode(path) for path in rows["path"]]
            block_tally.count(zip([Outcome(status) for status in rows["status"]], paths, map(str, rows["reason"]), map(str, rows["id"])),
                              self.keep_stored)
            self.reporter.add(block_tally.counts, block_tally.errors)
            count_files(self.store.target.collection, block_tally.outcomes)
            tally.add(block_tally)
        return tally

    def on_write_complete(self, write_result) -> None:
        for tally in write_result.write_returns:
            self.tally.add(tally)
