"""Bulk: the `ray_data` and `streamed` routes, the Ray Data job of one run, from the paths left to read to
records in Chroma. Its input is a listing the driver holds (`ListedInput`) or a Parquet manifest Ray Data
reads itself (`streamed.StreamedInput`); its stages are in `bulk_stages`.

Ray is imported where it is used, so that a run that takes another route never pays for it.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from ray_pipeline.cluster.runtime import init_ray, quiet_ray_data
from ray_pipeline.core.errors import UserFacingError, user_facing_reason
from ray_pipeline.files.listing import Listing
from ray_pipeline.model import clip as clip_model
from ray_pipeline.records.owner import OWNER_NAMESPACE, EmbeddedOwner, StoreHandle, owner_answer, owner_name
from ray_pipeline.records.target import StoreTarget
from ray_pipeline.runs.bulk_stages import EmbedOptions, EmbedStage, PrepareStage, tally_of, write_block
from ray_pipeline.runs.claims import ShardedClaims
from ray_pipeline.runs.config import RunConfig
from ray_pipeline.runs.plan import ActorPlan, plan_actors
from ray_pipeline.runs.progress import Reporter
from ray_pipeline.steps.after import After, FilesThrough, after_files
from ray_pipeline.runs.enrich_actors import ActorsPool
from ray_pipeline.steps.enrich import Enriched, ServedPool, run_queued
from ray_pipeline.steps.pairs import PairsAmong
from ray_pipeline.steps.prune import Pruning
from ray_pipeline.steps.summary import Tally
from ray_pipeline.steps.unchanged import Stored

logger = logging.getLogger(__name__)

DECODE_BATCH_SIZE = 16  # files per CPU-stage call: small, since RAW files are large in memory
DECODE_ACTOR_MEMORY = 2 * 1024**3  # declared to Ray per decode actor so a node is not over-packed
# Writing to Chroma is I/O: write tasks take a sliver of a CPU, from the reserve the actors leave free
# (plan.LIGHT_TASK_RESERVE), so they stream records out while the actors hold the other CPUs.
LIGHT_TASK_CPUS = 0.1


class PipelineError(UserFacingError):
    """The job cannot run as configured; the message is the one line users see."""


def rows_per_block(files: int, cpus: float) -> int:
    """Paths per block of a job's input: small enough to spread over the CPU actors (8 blocks a CPU)."""
    return min(1024, max(DECODE_BATCH_SIZE, math.ceil(files / (max(1, int(cpus)) * 8))))


def choose_device(requested: str) -> str:
    import ray

    gpus = ray.cluster_resources().get("GPU", 0)
    if requested == "cuda" and gpus < 1:
        raise PipelineError("--device cuda, but the Ray cluster has no GPU")
    if requested == "auto":
        return "cuda" if gpus >= 1 else "cpu"
    return requested


class JobInput(Protocol):
    """What a job reads: a listing held by the driver (`ListedInput`), or a manifest streamed by Ray Data
    (`streamed.StreamedInput`)."""

    files: int  # how many files are listed (at most): sizes the duplicate registry

    def settle(self, store: StoreHandle, claims: ShardedClaims, tally: Tally) -> tuple[int, Any]:
        """Count the files settled without reading into `tally`; returns (files discovered, the Ray dataset
        of `path` rows the job reads, or None when there is none)."""
        ...

    def after(self, store: StoreHandle, tally: Tally) -> After:
        """The sequence after the files (`steps.after`), while the store is still open."""
        ...


class ListedInput:
    """A job's input from a listing the driver holds; `stored` is what the collection holds of it; `pruning`: what prune looks at, when asked; `gone`:
    paths seen going (a watch's), whose remembered failures are forgotten."""

    def __init__(self, config: RunConfig, listing: Listing, stored: Stored, pruning: Pruning | None = None,
                 gone: tuple[str, ...] = ()):
        self.config, self.listing, self.stored, self.pruning, self.gone = config, listing, stored, pruning, gone
        self.files = len(listing.paths)

    def settle(self, store: StoreHandle, claims: ShardedClaims, tally: Tally):
        paths, config = self.listing.paths, self.config
        to_read = self.stored.left_to_read(paths)
        claims.claim(self.stored.claims())  # first: a copy of a file passed over, read in this job, is a duplicate
        self.stored.count_into(tally, keep_stored=config.keeps_contents)
        return self.listing.discovered, _paths_dataset(to_read) if to_read else None

    def after(self, store: StoreHandle, tally: Tally) -> After:
        paths = self.listing.paths
        fresh = {path for path in paths if path not in self.stored.unchanged}
        return after_files(store.store, FilesThrough.of(self.stored, PairsAmong(paths, fresh), self.gone), tally,
                           self.pruning, self.config.enrichments, self.config.uploads)


def _paths_dataset(paths: list[str]):
    """The input as a dataset of `path` rows, cut in blocks small enough to spread over the CPU actors."""
    import pyarrow as pa
    import ray

    rows = rows_per_block(len(paths), ray.cluster_resources().get("CPU", 1))
    names = [os.fsencode(path) for path in paths]  # bytes: a file name need not be UTF-8
    blocks = [pa.table({"path": pa.array(names[i : i + rows], pa.binary())}) for i in range(0, len(names), rows)]
    return ray.data.from_arrow(blocks or [pa.table({"path": pa.array([], pa.binary())})])


@dataclass(frozen=True)
class JobResult:
    """What the Ray job leaves beside the tally."""

    enriched: Enriched  # the costly enrichments made after the records were written
    random_weights: bool
    reporter: Reporter
    actors: dict | None  # the plan the Ray Data job ran with (`Stages.described`); None when no file was read
    after: After


def run_job(config: RunConfig, files: JobInput, tally: Tally) -> JobResult:
    """Read, embed and store the files of `files` that the collection does not hold. `tally` holds the
    counts so far and receives the rest."""
    resolving = _in_background(clip_model.resolve, config.model)  # the model loads while Ray starts
    logger.info("running on %s", init_ray())
    import ray

    # A stage's own error (a Chroma server gone, say) reaches the driver as raised, not wrapped in Ray Data's
    # UserCodeException (whose cause a process boundary drops): the job then stops with its one line.
    ray.data.DataContext.get_current().raise_original_map_exception = True
    pool = ActorsPool(ServedPool(config.serve_app))
    for enrichment in config.enrichments:
        pool.check(enrichment)  # before any work, not after the embeddings
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
        reporter = Reporter(config.progress_id, config.target.collection)
        reporter.start(discovered, tally)
        with _stops_with_reason():
            if to_read is not None:  # nothing new: what is left is the sequence after the files
                with quiet_ray_data():
                    tally.add(_read_embed_write(to_read, stages, store, reporter, config.keeps_contents))
            after = files.after(store, tally)
            enriched = run_queued(store.store, after.queued, pool, reporter)
    actors = stages.described(tally.precisions) if to_read is not None else None
    return JobResult(enriched, resolved.random_weights, reporter, actors, after)


def _start_owner(target: StoreTarget, here) -> tuple[object, object, object]:
    """(owner, actor to stop at the end or None, ref of its opening or None). Embedded Chroma is reached
    through its single owner: the long-lived one of a Serve app when it runs, else one started for this
    job, whose process starts while the rest is set up. A Chroma server needs none."""
    import ray

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


@contextmanager
def _job_actors(target: StoreTarget, files: int) -> Iterator[tuple[object, object, ShardedClaims]]:
    """(store owner, ref of its opening or None, the duplicate registry's shards) for one job: the owner
    on this node (the local folder), the shards spread over the cluster. The job's own actors are stopped
    however it ends, which releases an embedded Chroma folder now, not when garbage collection gets to it."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    owner, own_owner, opening = _start_owner(target, here)
    claims = ShardedClaims.start(files, scheduling_strategy="SPREAD")
    try:
        yield owner, opening, claims
    finally:
        claims.stop()
        if own_owner is not None:
            ray.kill(own_owner)


@dataclass(frozen=True)
class Stages:
    """The Ray Data job's actors: their constructor arguments, and how many of each."""

    prepare: tuple  # PrepareStage(store, claims, geometry, max_pixels, within)
    embed: EmbedOptions
    plan: ActorPlan
    registry_shards: int

    def described(self, precisions: set[str]) -> dict:
        """The plan as the job summary records it (`actors`), with the precisions its vectors were made in."""
        plan = self.plan
        return {"device": self.embed.device, "precision": ", ".join(sorted(precisions)) or self.embed.precision,
                "embed_actors": list(plan.embed_actors), "embed_cpus": plan.embed_cpus,
                "embed_threads": plan.embed_threads, "batch_size": self.embed.batch_size,
                "decode_actors": plan.decode_actors, "decode_cpus": plan.decode_cpus,
                "duplicate_registry_shards": self.registry_shards}


def _stages(config: RunConfig, device: str, store: StoreHandle, registry: ShardedClaims, resolved) -> Stages:
    import ray

    resources = ray.cluster_resources()
    plan = plan_actors(device, config.actors, ray.available_resources().get("CPU", 0), int(resources.get("GPU", 0)))
    embed = EmbedOptions(resolved=resolved, device=device, compile=config.compile,
                         batch_size=config.batch_size or (256 if device == "cuda" else 32),
                         collection=config.target.collection, threads=plan.embed_threads, precision=config.precision)
    return Stages((store, registry, resolved.geometry, config.max_pixels, config.within, config.machine), embed, plan,
                  len(registry.shards))


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


def _read_embed_write(paths, stages: Stages, store: StoreHandle, reporter: Reporter, keep_stored: bool) -> Tally:
    """The Ray Data job: CPU actors read, hash and decode; embedding actors (GPU or CPU) embed; light
    tasks write. The driver adds up the written blocks' tallies as they come."""
    import ray

    plan = stages.plan
    written = (
        paths
        .map_batches(
            PrepareStage,
            fn_constructor_args=stages.prepare,
            batch_size=DECODE_BATCH_SIZE,
            # All decode actors from the start, spread over the nodes (Ray Data's default for actor pools):
            # reading is I/O on each node.
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=plan.decode_actors, initial_size=plan.decode_actors),
            num_cpus=plan.decode_cpus,
            memory=DECODE_ACTOR_MEMORY,
        )
        .map_batches(
            EmbedStage,
            fn_constructor_args=(stages.embed,),
            batch_size=stages.embed.batch_size,
            compute=ray.data.ActorPoolStrategy(min_size=plan.embed_actors[0], max_size=plan.embed_actors[1]),
            num_gpus=1 if stages.embed.device == "cuda" else 0,
            num_cpus=plan.embed_cpus,
        )
        .map_batches(write_block, fn_kwargs={"store": store, "reporter": reporter, "keep_stored": keep_stored},
                     batch_size=None, num_cpus=LIGHT_TASK_CPUS)
    )
    return tally_of(written.iter_batches(batch_size=None, batch_format="numpy"))
