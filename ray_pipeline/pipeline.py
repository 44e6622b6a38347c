"""Pipeline: the Ray Data plan of one ingestion, from the paths left to read to records in Chroma."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

import pyarrow as pa
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from ray_pipeline import model as clip_model
from ray_pipeline.caption import caption_records, check_captioner
from ray_pipeline.claims import ShardedClaims
from ray_pipeline.config import DECODE_ACTOR_MEMORY, DECODE_BATCH_SIZE, LIGHT_TASK_CPUS, IngestConfig, rows_per_block
from ray_pipeline.discover import Listing
from ray_pipeline.embed import EmbedImages, EmbedOptions
from ray_pipeline.errors import UserFacingError, user_facing_reason
from ray_pipeline.file_names import FileFailure
from ray_pipeline.plan import ActorPlan, plan_actors
from ray_pipeline.prepare import PrepareImages
from ray_pipeline.progress import Reporter, announce
from ray_pipeline.runtime import init_ray, quiet_ray_data_actors
from ray_pipeline.sink import ChromaDatasink
from ray_pipeline.store import (
    OWNER_NAMESPACE,
    EmbeddedOwner,
    StoreHandle,
    StoreTarget,
    owner_answer,
    owner_name,
)
from ray_pipeline.summary import Tally
from ray_pipeline.unchanged import Stored, stored_in

logger = logging.getLogger(__name__)


class PipelineError(UserFacingError):
    """The job cannot run as configured; the message is the one line users see."""


def choose_device(requested: str) -> str:
    gpus = ray.cluster_resources().get("GPU", 0)
    if requested == "cuda" and gpus < 1:
        raise PipelineError("--device cuda, but the Ray cluster has no GPU")
    if requested == "auto":
        return "cuda" if gpus >= 1 else "cpu"
    return requested


def _paths_dataset(paths: list[str]) -> ray.data.Dataset:
    """The input as a dataset of `path` rows, cut in blocks small enough to spread over the CPU actors."""
    rows = rows_per_block(len(paths), ray.cluster_resources().get("CPU", 1))
    names = [os.fsencode(path) for path in paths]  # bytes: a file name need not be UTF-8
    blocks = [pa.table({"path": pa.array(names[i : i + rows], pa.binary())}) for i in range(0, len(names), rows)]
    return ray.data.from_arrow(blocks or [pa.table({"path": pa.array([], pa.binary())})])


def _start_owner(target: StoreTarget, here) -> tuple[object, object, object]:
    """(owner, actor to stop at the end or None, ref of its opening or None). Embedded Chroma is reached
    through its single owner: the long-lived one of a Serve app when it runs, else one started for this
    job, whose process starts while the rest is set up. A Chroma server needs none."""
    if not target.embedded:
        return None, None, None
    try:
        return ray.get_actor(owner_name(target.folder), namespace=OWNER_NAMESPACE), None, None
    except ValueError:
        owner = ray.remote(EmbeddedOwner).options(num_cpus=0, scheduling_strategy=here).remote()
        return owner, owner, owner.open_folder.remote(target.folder)


def _open_store(target: StoreTarget, owner, opening, collection_metadata: dict) -> StoreHandle:
    """The collection, created or checked for this model, through the owner once it holds the folder."""
    if opening is not None:
        owner_answer(opening)
    store = StoreHandle(target, owner)
    store.open(collection_metadata)
    return store


@dataclass(frozen=True)
class JobResult:
    """What the Ray job leaves beside the tally."""

    captioned: int | None  # files captioned; None when captions were not asked for
    caption_errors: list[FileFailure]
    random_weights: bool
    reporter: Reporter
    actors: dict | None  # the plan the Ray Data job ran with (`Stages.described`); None when no file was read


@contextmanager
def _job_actors(target: StoreTarget, files: int) -> Iterator[tuple[object, object, ShardedClaims]]:
    """(store owner, ref of its opening or None, the duplicate registry's shards) for one job: the owner
    on this node (the local folder), the shards spread over the cluster. The job's own actors are stopped
    however it ends, which releases an embedded Chroma folder now, not when garbage collection gets to it."""
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    owner, own_owner, opening = _start_owner(target, here)
    claims = ShardedClaims.start(files, scheduling_strategy="SPREAD")
    try:
        yield owner, opening, claims
    finally:
        claims.stop()
        if own_owner is not None:
            ray.kill(own_owner)


class JobInput(Protocol):
    """What a job reads: a listing held by the driver (`ListedInput`), or a manifest streamed by Ray Data
    (`streamed.StreamedInput`)."""

    files: int  # how many files are listed (at most): sizes the duplicate registry

    def settle(self, store: StoreHandle, claims: ShardedClaims, tally: Tally) -> tuple[int, ray.data.Dataset | None]:
        """Count the files settled without reading into `tally`; returns (files discovered, the dataset of
        `path` rows the job reads, or None when there is none)."""
        ...

    def after(self, store: StoreHandle, tally: Tally) -> None:
        """What the run does once its files are through, while the store is still open."""
        ...


class ListedInput:
    """A job's input from a listing the driver holds; `stored` is what the collection holds of it (None:
    checked through the store's owner once Ray is up), `after` an `ingest.AfterFiles`."""

    def __init__(self, config: IngestConfig, listing: Listing, stored: Stored | None, after):
        self.config, self.listing, self.stored, self._after = config, listing, stored, after
        self.files = len(listing.paths)

    def settle(self, store: StoreHandle, claims: ShardedClaims, tally: Tally) -> tuple[int, ray.data.Dataset | None]:
        paths, config = self.listing.paths, self.config
        if self.stored is None:  # the embedded folder's owner answers now
            self.stored = stored_in(store, paths, config.within, config.rehash)
        to_read = _left_to_read(paths, self.stored, claims)
        self.stored.count_into(tally, keep_stored=config.keeps_contents)
        return self.listing.discovered, _paths_dataset(to_read) if to_read else None

    def after(self, store: StoreHandle, tally: Tally) -> None:
        assert self.stored is not None, "settled first"
        self._after(store, self.stored, tally)


def run_pipeline(config: IngestConfig, files: JobInput, tally: Tally) -> JobResult:
    """Read, embed and store the files of `files` that the collection does not hold. `tally` holds the
    counts so far and receives the rest."""
    resolving = _in_background(clip_model.resolve, config.model)  # the model loads while Ray starts
    logger.info("running on %s", init_ray())
    if config.caption:
        check_captioner(config.serve_app)  # before any work, not after the embeddings
    device = choose_device(config.device)
    with _job_actors(config.target, files.files) as (owner, opening, registry):
        resolved, _ = resolving.result()
        clip_model.warn_if_random(resolved, config.target.collection)
        # Reachable, and written by this very model (else refused), before any file is read.
        store = _open_store(config.target, owner, opening, resolved.collection_metadata())
        # Planned from the CPUs free now, before the settling's own Ray tasks come and go.
        stages = _stages(config, device, store, registry, resolved)
        with _stops_with_reason():
            discovered, to_read = files.settle(store, registry, tally)
        reporter = announce(config.progress_id, config.target.collection, discovered, tally)
        sink = ChromaDatasink(store, reporter, keep_stored=config.keeps_contents)
        with _stops_with_reason():
            if to_read is not None:  # nothing new: what is left is captions, if asked for
                with quiet_ray_data_actors():
                    _read_embed_write(to_read, stages, sink)
            tally.add(sink.tally)
            files.after(store, tally)
        captioned, caption_errors = (
            caption_records(store, tally.stored, config.serve_app, reporter) if config.caption else (None, [])
        )
    return JobResult(captioned, caption_errors, resolved.random_weights, reporter,
                     stages.described() if to_read is not None else None)


def _left_to_read(paths: list[str], stored: Stored, registry: ShardedClaims) -> list[str]:
    """The files the job reads; those passed over are claimed first in its duplicate registry."""
    to_read = stored.left_to_read(paths)
    if len(to_read) < len(paths):
        logger.info("%d of %d files are stored already: the job does not read them (--rehash reads them all)",
                    len(paths) - len(to_read), len(paths))
        registry.claim(stored.claims())
    return to_read


@dataclass(frozen=True)
class Stages:
    """The Ray Data job's actors: their constructor arguments, and how many of each."""

    prepare: tuple  # PrepareImages(store, claims, geometry, max_pixels, within)
    embed: EmbedOptions
    plan: ActorPlan
    registry_shards: int

    def described(self) -> dict:
        """The plan as the job summary records it (`actors`)."""
        plan = self.plan
        return {"device": self.embed.device, "embed_actors": list(plan.embed_actors), "embed_cpus": plan.embed_cpus,
                "embed_threads": plan.embed_threads, "batch_size": self.embed.batch_size,
                "decode_actors": plan.decode_actors, "decode_cpus": plan.decode_cpus,
                "duplicate_registry_shards": self.registry_shards}


def _stages(config: IngestConfig, device: str, store: StoreHandle, registry: ShardedClaims, resolved) -> Stages:
    resources = ray.cluster_resources()
    plan = plan_actors(device, config.actors, ray.available_resources().get("CPU", 0), int(resources.get("GPU", 0)))
    embed = EmbedOptions(resolved=resolved, device=device, compile=config.compile,
                         batch_size=config.batch_size or (256 if device == "cuda" else 32),
                         collection=config.target.collection, threads=plan.embed_threads)
    return Stages((store, registry, resolved.geometry, config.max_pixels, config.within), embed, plan, len(registry.shards))


@contextmanager
def _stops_with_reason() -> Iterator[None]:
    """An error users can act on (a Chroma server gone, a refused collection), raised in a Ray task or
    actor, stops the job with that one line, not a Ray traceback."""
    try:
        yield
    except Exception as exc:
        reason = user_facing_reason(exc)
        if reason is None:
            raise
        raise PipelineError(f"the job stopped: {reason}") from None


def _in_background(function, *args) -> Future:
    """`function(*args)` on a thread of its own; `.result()` gives its value or raises its error."""
    pool = ThreadPoolExecutor(1, thread_name_prefix=function.__name__)
    try:
        return pool.submit(function, *args)
    finally:
        pool.shutdown(wait=False)


def _read_embed_write(paths: ray.data.Dataset, stages: Stages, sink: ChromaDatasink) -> None:
    """The Ray Data job: CPU actors read, hash and decode; embedding actors (GPU or CPU) encode; light
    tasks write."""
    plan = stages.plan
    (
        paths
        .map_batches(
            PrepareImages,
            fn_constructor_args=stages.prepare,
            batch_size=DECODE_BATCH_SIZE,
            # All decode actors from the start, spread over the nodes (Ray Data's default for actor pools):
            # reading is I/O on each node.
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=plan.decode_actors, initial_size=plan.decode_actors),
            num_cpus=plan.decode_cpus,
            memory=DECODE_ACTOR_MEMORY,
        )
        .map_batches(
            EmbedImages,
            fn_constructor_args=(stages.embed,),
            batch_size=stages.embed.batch_size,
            compute=ray.data.ActorPoolStrategy(min_size=plan.embed_actors[0], max_size=plan.embed_actors[1]),
            num_gpus=1 if stages.embed.device == "cuda" else 0,
            num_cpus=plan.embed_cpus,
        )
        .write_datasink(sink, ray_remote_args={"num_cpus": LIGHT_TASK_CPUS})
    )
