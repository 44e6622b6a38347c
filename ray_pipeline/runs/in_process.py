"""In process: a run's files read, hashed, decoded, embedded and written right here, with no Ray job and no
new actor: the `in_process` route (a model loaded in the command's own process) and the `warm` route (a
model loaded elsewhere: the Serve app's Embedder, or a watch's own actor).

The files go on their journey (`steps.journey`) a few at a time on a thread per core, while the batch before
is embedded and written; the Ray Data job stays the route for everything larger.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from itertools import islice

import numpy as np

from ray_pipeline.cluster.metrics import metrics, observe_files
from ray_pipeline.core.geometry import InputGeometry
from ray_pipeline.core.outcome import Outcome
from ray_pipeline.model.embedders import Embedder
from ray_pipeline.records.store import RecordStore
from ray_pipeline.runs.costs import THREAD_SCALING
from ray_pipeline.runs.progress import Reporter
from ray_pipeline.steps.journey import DuplicateRegistry, Journey, PhotoFile
from ray_pipeline.steps.summary import Tally
from ray_pipeline.steps.unchanged import Stored

CHUNK = 4  # files per journey: small, so the decoding threads share the work evenly and memory stays low
# Journeys at once: the decoders let go of Python's lock, so these overlap each other and the model; more
# threads than cores only take turns.
THREADS = max(2, min(len(os.sched_getaffinity(0)), THREAD_SCALING))
# New files per embedding and upsert: a batch of 32 takes the model 40% less time per photo than one of 8 on
# CPU (benchmarks/RESULTS.md, issue 29), and one upsert holds each batch's records whole.
EMBED_BATCH = 32
# Files on their journeys ahead of the batch being embedded, at most: enough to keep the decoders busy while the
# model loads (`embedders.LoadingEmbedder`, seconds) and while a batch is embedded; each holds its picture at the
# model's size only (150 KB at 224 x 224).
AHEAD = 256


def ingest_here(paths: list[str], stored: Stored, store: RecordStore, embedder: Embedder, geometry: InputGeometry,
                max_pixels: int, within: tuple[str, ...], machine: str, reporter: Reporter, keep_stored: bool = False,
                stop_requested: Callable[[], bool] | None = None) -> Tally:
    """The files of `paths` that `stored` (what the check before reading found) leaves to read, taken here:
    a copy of a stored file is a duplicate, the vectors come from `embedder`, the records go to `store`, a
    batch's new records in one upsert (so a record is written whole or not at all). `reporter` hears of each
    batch once it is written; `stop_requested`, asked after each, stops the run between two batches."""
    registry = DuplicateRegistry()
    registry.claim(stored.claims())
    journey = Journey(store, registry.claim, geometry, max_pixels, within, machine)
    return journeys(stored.left_to_read(paths), journey, embedder, store, reporter, keep_stored, stop_requested)


class RunStopped(Exception):
    """Someone asked the run to stop (DELETE /ingest/{job_id}); it stopped between two batches."""


def journeys(paths: list[str], journey: Journey, embedder: Embedder, store: RecordStore, reporter: Reporter,
             keep_stored: bool = False, stop_requested: Callable[[], bool] | None = None,
             batch: int = EMBED_BATCH) -> Tally:
    """Read, embed and write these files, `batch` new files at a time; returns their tally."""
    tally = Tally()
    chunks = iter([paths[start : start + CHUNK] for start in range(0, len(paths), CHUNK)])
    waiting: list[PhotoFile] = []  # journeyed files of the batch not written yet
    with ThreadPoolExecutor(THREADS) as pool:
        # AHEAD files on their journeys, no more: a run that stops (or fails) reads no further.
        ahead = deque(pool.submit(journey.run, chunk) for chunk in islice(chunks, max(AHEAD, batch) // CHUNK))
        try:
            while ahead:
                waiting += ahead.popleft().result()
                ahead.extend(pool.submit(journey.run, chunk) for chunk in islice(chunks, 1))
                if ahead and sum(f.status == Outcome.NEW for f in waiting) < batch:
                    continue
                written = _write(waiting, embedder, store)
                written.count(((f.status, f.path, f.reason, f.id) for f in waiting), keep_stored)
                _report(reporter, waiting, written)
                tally.add(written)
                waiting = []
                if stop_requested is not None and stop_requested():
                    raise RunStopped()
        finally:
            for journeying in ahead:
                journeying.cancel()
    return tally


def _report(reporter: Reporter, files: list[PhotoFile], batch: Tally) -> None:
    """A written batch's counts on the board, and on the metrics as the bulk job's stages report theirs."""
    reporter.counted(batch)
    if reporter.to_metrics:
        observe_files(reporter.collection, files)
        if batch.seconds["embed"]:
            metrics().embed_seconds.observe(batch.seconds["embed"], tags={"collection": reporter.collection})


def _write(files: list[PhotoFile], embedder: Embedder, store: RecordStore) -> Tally:
    """Embed the batch's new files and upsert their records; the seconds each stage took."""
    written = Tally()
    written.seconds["read"] = sum(f.read_seconds for f in files)
    written.seconds["decode"] = sum(f.decode_seconds for f in files)
    new = [f for f in files if f.status == Outcome.NEW]
    if new:
        started = time.perf_counter()
        vectors = embedder.embed(np.stack([f.picture.pixels for f in new]))
        written.seconds["embed"] = time.perf_counter() - started
        started = time.perf_counter()
        store.upsert([f.id for f in new], np.asarray(vectors, np.float32), [f.metadata for f in new])
        written.seconds["write"] = time.perf_counter() - started
    return written
