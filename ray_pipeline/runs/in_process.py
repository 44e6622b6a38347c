"""In process: a run's files read, hashed, decoded, embedded and written right here, with no Ray job and no
new actor: the `in_process` route (a model loaded in the command's own process) and the `warm` route (a
model loaded elsewhere: the Serve app's Embedder, or a watch's own actor).

The files go on their journey (`steps.journey`) a chunk at a time on a few threads, while the chunk before
is embedded and written; the Ray Data job stays the route for everything larger.
"""

from __future__ import annotations

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
from ray_pipeline.runs.progress import Reporter
from ray_pipeline.steps.journey import DuplicateRegistry, Journey, PhotoFile
from ray_pipeline.steps.summary import Tally
from ray_pipeline.steps.unchanged import Stored

CHUNK = 8  # files per journey: small, so the first vectors are written soon and memory stays low
THREADS = 2  # journeys at once: decoders release the GIL, so these overlap each other and the model


def ingest_here(paths: list[str], stored: Stored, store: RecordStore, embedder: Embedder, geometry: InputGeometry,
                max_pixels: int, within: tuple[str, ...], reporter: Reporter, keep_stored: bool = False,
                stop_requested: Callable[[], bool] | None = None) -> Tally:
    """The files of `paths` that `stored` (what the check before reading found) leaves to read, taken here:
    a copy of a stored file is a duplicate, the vectors come from `embedder`, the records go to `store`, a
    chunk's new records in one upsert (so a record is written whole or not at all). `reporter` hears of each
    chunk once it is written; `stop_requested`, asked after each, stops the run between two chunks."""
    registry = DuplicateRegistry()
    registry.claim(stored.claims())
    journey = Journey(store, registry.claim, geometry, max_pixels, within)
    return journeys(stored.left_to_read(paths), journey, embedder, store, reporter, keep_stored, stop_requested)


class RunStopped(Exception):
    """Someone asked the run to stop (DELETE /ingest/{job_id}); it stopped between two chunks."""


def journeys(paths: list[str], journey: Journey, embedder: Embedder, store: RecordStore, reporter: Reporter,
             keep_stored: bool = False, stop_requested: Callable[[], bool] | None = None) -> Tally:
    """Read, embed and write these files; returns their tally."""
    tally = Tally()
    chunks = iter([paths[start : start + CHUNK] for start in range(0, len(paths), CHUNK)])
    with ThreadPoolExecutor(THREADS) as pool:
        # THREADS chunks on their journeys ahead of the one being written, no more: a run that stops (or
        # fails) reads no further.
        ahead = deque(pool.submit(journey.run, chunk) for chunk in islice(chunks, THREADS))
        try:
            while ahead:
                files = ahead.popleft().result()
                ahead.extend(pool.submit(journey.run, chunk) for chunk in islice(chunks, 1))
                written = _write(files, embedder, store)
                written.count(((f.status, f.path, f.reason, f.id) for f in files), keep_stored)
                _report(reporter, files, written)
                tally.add(written)
                if stop_requested is not None and stop_requested():
                    raise RunStopped()
        finally:
            for journeying in ahead:
                journeying.cancel()
    return tally


def _report(reporter: Reporter, files: list[PhotoFile], chunk: Tally) -> None:
    """A written chunk's counts on the board, and on the metrics as the bulk job's stages report theirs."""
    reporter.counted(chunk)
    if reporter.to_metrics:
        observe_files(reporter.collection, files)
        if chunk.seconds["embed"]:
            metrics().embed_seconds.observe(chunk.seconds["embed"], tags={"collection": reporter.collection})


def _write(files: list[PhotoFile], embedder: Embedder, store: RecordStore) -> Tally:
    """Embed the chunk's new files and upsert their records; the seconds each stage took."""
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
