"""Inline: a small ingestion run where it is asked for, with no Ray job and no new actors.

The files go on their journey (`journey`) a chunk at a time on a few threads, while the chunk before
is embedded by an encoder already at hand (the model loaded in this process, or the Serve app's
`Embedder`) and written. Used by the CLI for small ingestions when no cluster runs, and by the Serve
app for small ingestions through the HTTP API; the Ray Data job stays the path for everything larger.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from itertools import islice

import numpy as np

from ray_pipeline.decode import InputGeometry
from ray_pipeline.journey import Journey, PhotoFile
from ray_pipeline.outcome import Outcome
from ray_pipeline.store import RecordStore
from ray_pipeline.summary import Tally
from ray_pipeline.unchanged import Stored

CHUNK = 8  # files per journey: small, so the first vectors are written soon and memory stays low
THREADS = 2  # journeys at once: decoders release the GIL, so these overlap each other and the model

# (N, H, W, 3) uint8 pictures at the model's input size -> (N, D) float32 unit vectors.
Encode = Callable[[np.ndarray], np.ndarray]


def ingest_inline(paths: list[str], journey: Journey, encode: Encode, store: RecordStore, *, keep_stored: bool = False,
                  on_chunk: Callable[[list[PhotoFile], Tally], None] | None = None) -> Tally:
    """Read, embed and write these files; returns their tally. `store` (a ChromaStore or StoreHandle)
    gets each chunk's new records in one upsert, so a record is written whole or not at all.
    `on_chunk` hears of each chunk once it is written (progress, metrics)."""
    tally = Tally()
    chunks = iter([paths[start : start + CHUNK] for start in range(0, len(paths), CHUNK)])
    with ThreadPoolExecutor(THREADS) as pool:
        # THREADS chunks on their journeys ahead of the one being written, no more: a job that stops (or
        # fails) reads no further.
        ahead = deque(pool.submit(journey.run, chunk) for chunk in islice(chunks, THREADS))
        try:
            while ahead:
                files = ahead.popleft().result()
                ahead.extend(pool.submit(journey.run, chunk) for chunk in islice(chunks, 1))
                written = _write(files, encode, store)
                written.count(((f.status, f.path, f.reason, f.id) for f in files), keep_stored)
                if on_chunk is not None:
                    on_chunk(files, written)
                tally.add(written)
        finally:
            for journeying in ahead:
                journeying.cancel()
    return tally


def ingest_left_to_read(paths: list[str], stored: Stored, store: RecordStore, geometry: InputGeometry, max_pixels: int, within: tuple[str, ...],
                        encode: Encode, keep_stored: bool, on_chunk=None) -> Tally:
    """The files of `paths` that `stored` (an `unchanged.Stored`) leaves to read, on their journeys in
    this process: a copy of a stored file is a duplicate, the vectors come from `encode`, the records
    go to `store`."""
    from ray_pipeline.journey import DuplicateRegistry

    registry = DuplicateRegistry()
    registry.claim(stored.claims())
    journey = Journey(store, registry.claim, geometry, max_pixels, within)
    return ingest_inline(stored.left_to_read(paths), journey, encode, store, keep_stored=keep_stored, on_chunk=on_chunk)


def report_chunk(collection: str, reporter, files: list[PhotoFile], chunk: Tally) -> None:
    """A written chunk's counts on the progress board (a `progress.Reporter`) and on the pipeline's
    metrics, as the bulk path reports its blocks."""
    from ray_pipeline.metrics import count_files, metrics, observe_files

    reporter.add(chunk.counts, chunk.errors)
    count_files(collection, chunk.outcomes)
    observe_files(collection, files)
    if chunk.seconds["embed"]:
        metrics().embed_seconds.observe(chunk.seconds["embed"], tags={"collection": collection})


def _write(files: list[PhotoFile], encode: Encode, store: RecordStore) -> Tally:
    """Embed the chunk's new files and upsert their records; the seconds each stage took."""
    written = Tally()
    written.seconds["read"] = sum(f.read_seconds for f in files)
    written.seconds["decode"] = sum(f.decode_seconds for f in files)
    new = [f for f in files if f.status == Outcome.NEW]
    if new:
        started = time.perf_counter()
        vectors = encode(np.stack([f.picture.pixels for f in new]))
        written.seconds["embed"] = time.perf_counter() - started
        started = time.perf_counter()
        store.upsert([f.id for f in new], np.asarray(vectors, np.float32), [f.metadata for f in new])
        written.seconds["write"] = time.perf_counter() - started
    return written
