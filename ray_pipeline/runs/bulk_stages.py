"""The bulk job's stages, each a plain class or function that Ray Data runs (no Ray in this module):

- `PrepareStage` (CPU actors): each file's journey (`steps.journey`). Rows leave it with a `status`: "new"
  rows carry model-sized pixels and their metadata; "existing", "duplicate" and "failed" rows carry only
  what the summary and the errors file need.
- `EmbedStage` (an actor pool, one GPU each or the CPU): the new rows' pixels to vectors.
- `write_block` (light tasks): each block's new records upserted into the collection, every row's outcome
  counted; a block leaves as one row, its tally, which the driver adds up (`tally_of`).
"""

from __future__ import annotations

import json
import os
import pickle
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ray_pipeline.cluster.metrics import metrics, observe_files
from ray_pipeline.cluster.runtime import as_batch_work
from ray_pipeline.core.geometry import InputGeometry
from ray_pipeline.core.outcome import Outcome
from ray_pipeline.model import clip as clip_model
from ray_pipeline.model.embedders import LocalEmbedder, compiles
from ray_pipeline.records.owner import StoreHandle
from ray_pipeline.runs.claims import ShardedClaims
from ray_pipeline.runs.progress import Reporter
from ray_pipeline.steps.journey import Journey, PhotoFile
from ray_pipeline.steps.summary import STAGE_COLUMNS, Tally


class PrepareStage:
    """Ray Data class UDF for the CPU stage; one instance per CPU actor."""

    def __init__(self, store: StoreHandle, claims: ShardedClaims, geometry: InputGeometry, max_pixels: int,
                 within: tuple[str, ...] = (), machine: str = ""):
        """`claims`: the job's duplicate registry, in shards."""
        as_batch_work()
        self.journey = Journey(store.store, claims.claim, geometry, max_pixels, within, machine)
        self.collection = store.target.collection

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        files = self.journey.run([os.fsdecode(path) for path in batch["path"]])
        observe_files(self.collection, files)
        return rows_of(files)


def rows_of(files: list[PhotoFile]) -> dict[str, np.ndarray]:
    """The stage's output columns, one row per file."""

    def column(values) -> np.ndarray:
        return np.array(list(values), dtype=object)

    return {
        "path": column(os.fsencode(photo.path) for photo in files),  # bytes: a name need not be UTF-8
        "id": column(photo.id for photo in files),
        "status": column(photo.status.value for photo in files),
        "reason": column(photo.reason for photo in files),
        "pixels": column(photo.picture.pixels.tobytes() if photo.status == Outcome.NEW else b"" for photo in files),
        "metadata": column(json.dumps(photo.metadata) if photo.status == Outcome.NEW else "" for photo in files),
        "read_seconds": np.array([photo.read_seconds for photo in files]),
        "decode_seconds": np.array([photo.decode_seconds for photo in files]),
    }


@dataclass(frozen=True)
class EmbedOptions:
    """What an embedding actor is made with."""

    resolved: clip_model.ResolvedModel
    device: str  # cpu | cuda
    compile: str  # auto | on | off
    batch_size: int
    collection: str  # the metrics' tag
    threads: int = 1  # torch threads, on the CPU
    precision: str = "auto"  # as `--precision` asks; each actor decides `auto` on its own node


class EmbedStage:
    """Ray Data class UDF: embeds the batch's "new" rows, passes the others through."""

    def __init__(self, options: EmbedOptions):
        resolved, device, compile, batch_size = options.resolved, options.device, options.compile, options.batch_size
        as_batch_work()
        self.tags = {"collection": options.collection}
        self.shape = resolved.geometry.pixel_shape
        # Ray sets one torch thread per whole CPU the actor holds, at least one: `threads` is what it may use.
        self._embedder: Future = Future()
        if compiles(compile, device):  # compiled and warmed up here, on the actor's main thread
            self._embedder.set_result(LocalEmbedder(resolved, device, compile, batch_size, threads=options.threads,
                                                    precision=options.precision))
        else:  # loaded while the first files are read; batches with nothing new never wait for it
            self._embedder = ThreadPoolExecutor(1).submit(LocalEmbedder, resolved, device, compile, batch_size,
                                                          threads=options.threads, precision=options.precision)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        new = np.flatnonzero(batch["status"] == Outcome.NEW)
        embeddings = np.array([b""] * len(batch["status"]), dtype=object)
        embed_seconds = np.zeros(len(batch["status"]))
        if len(new):
            pixels = np.stack([np.frombuffer(batch["pixels"][i], np.uint8).reshape(self.shape) for i in new])
            embedder = self._embedder.result()  # a model that failed to load raises here
            started = time.perf_counter()
            vectors = embedder.embed(pixels)
            elapsed = time.perf_counter() - started
            metrics().embed_seconds.observe(elapsed, tags=self.tags)
            embed_seconds[new] = elapsed / len(new)  # the batch's time, shared by its pictures
            for i, vector in zip(new, vectors):
                embeddings[i] = vector.astype(np.float32).tobytes()
        batch["embedding"] = embeddings
        batch["embed_seconds"] = embed_seconds
        # The precision the vectors were made in, where any were: `auto` is decided on each actor's node.
        made_in = self._embedder.result().precision if len(new) else ""
        batch["precision"] = np.array([made_in] * len(batch["status"]), dtype=object)
        del batch["pixels"]  # not needed downstream: keep it out of the object store
        return batch


def write_block(rows: dict[str, np.ndarray], store: StoreHandle, reporter: Reporter, keep_stored: bool) -> dict:
    """Upsert a block's new records and count every row's outcome (with `keep_stored`, the (id, path) of
    each file, for captions and prune); the reporter hears of it at once. Returns one row: the block's tally."""
    tally = Tally()
    new = np.flatnonzero(rows["status"] == Outcome.NEW)
    started = time.perf_counter()
    if len(new):
        store.store.upsert(
            [str(rows["id"][i]) for i in new],
            np.stack([np.frombuffer(rows["embedding"][i], np.float32) for i in new]),
            [json.loads(rows["metadata"][i]) for i in new],
        )
    tally.seconds["write"] = time.perf_counter() - started
    tally.precisions.update(str(made_in) for made_in in rows["precision"] if made_in)
    tally.seconds.update({stage: float(rows[column].sum()) for stage, column in STAGE_COLUMNS.items()})
    paths = [os.fsdecode(path) for path in rows["path"]]
    tally.count(zip([Outcome(status) for status in rows["status"]], paths, map(str, rows["reason"]), map(str, rows["id"])),
                keep_stored)
    reporter.counted(tally)
    return {"tally": np.array([pickle.dumps(tally)], dtype=object)}


def tally_of(written_rows) -> Tally:
    """The job's tally: the tallies of its written blocks (`write_block`'s rows, as the driver receives them)."""
    tally = Tally()
    for batch in written_rows:
        for block_tally in batch["tally"]:
            tally.add(pickle.loads(block_tally))
    return tally
