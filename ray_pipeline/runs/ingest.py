"""Ingest: one run of ingestion, from the user's paths to its summary, whatever its route.

The listing, and the check of which files are stored already and unchanged (or failed before and
unchanged), run here in the driver before Ray: a re-run with nothing new to read ends in about a second,
without starting Ray or loading the model. Then `route.choose_route` says where the files left go: nowhere,
this very process, or the Ray Data job (`bulk`), which also reads a Parquet manifest itself (`streamed`).
Every route ends with the one sequence after its files (`steps.after`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

from ray_pipeline.cluster.runtime import init_ray, running_cluster
from ray_pipeline.core.paths import FileFailure
from ray_pipeline.files.listing import Listing, is_streamed, photo_paths
from ray_pipeline.files.reading import read_file
from ray_pipeline.model import clip as clip_model
from ray_pipeline.model.embedders import LoadingEmbedder, LocalEmbedder, local_device, precision_on
from ray_pipeline.records.owner import StoreHandle, long_lived_owner
from ray_pipeline.records.store import RecordStore
from ray_pipeline.runs.costs import Machine, decode_seconds
from ray_pipeline.runs.warm import ServedEmbedder
from ray_pipeline.records.store import opened_for_writing, opened_here
from ray_pipeline.runs.bulk import ListedInput, run_job
from ray_pipeline.runs.config import RunConfig
from ray_pipeline.runs.in_process import EMBED_BATCH, ingest_here
from ray_pipeline.runs.progress import Reporter
from ray_pipeline.runs.route import Route, RouteKind, RunFacts, choose_route
from ray_pipeline.runs.streamed import StreamedInput, StreamedManifest
from ray_pipeline.steps.after import After, FilesThrough, after_files
from ray_pipeline.runs.enrich_actors import ActorsPool
from ray_pipeline.steps.enrich import Enriched, HerePool, Pool, ServedPool, run_queued
from ray_pipeline.steps.pairs import PairsAmong
from ray_pipeline.steps.prune import PrunePlan, Pruning, folders_holding, plan_pruning
from ray_pipeline.steps.summary import Tally, summary_of
from ray_pipeline.steps.unchanged import Stored, stored_before_start, stored_through, unchanged_files

logger = logging.getLogger(__name__)


@dataclass
class RunResult:
    summary: dict  # the line the command prints last
    tally: Tally
    errors: list[FileFailure]  # the files' and the enrichments' failures
    random_weights: bool
    pruned: list[str]  # what prune did, one line each
    holds: dict[str, str]  # {path: id} of the listed files whose bytes are known (with prune)
    route: Route
    config: RunConfig  # as it ran: with its collection's enrichments on by default


@dataclass(frozen=True)
class _Done:
    """What a route leaves for the run's summary."""

    random_weights: bool
    reporter: Reporter
    after: After | None = None
    enriched: Enriched = field(default_factory=Enriched)
    actors: dict | None = None


def run_ingest(config: RunConfig) -> RunResult:
    """Run one ingestion to the end."""
    started = time.monotonic()
    tally = Tally()  # files and folders that fail before any worker sees them are counted here
    if is_streamed(config.manifest):
        route = _said(choose_route(RunFacts(to_read=None, streamed=True)))
        job = run_job(config, StreamedInput(config, StreamedManifest.open(config.manifest or "")), tally)
        return _finished(config, route, tally, started, _Done(job.random_weights, job.reporter, job.after, job.enriched,
                                                                job.actors))
    listing = photo_paths(_listed(config), config.manifest)
    tally.fail(listing.problems)
    pruning = _pruning(config, listing) if config.prune else None
    if config.dry_run:
        route = _said(choose_route(RunFacts(to_read=None, dry_run=True)))
        return _dry_run(config, route, listing, pruning or _pruning(config, listing), tally, started)
    stored = stored_before_start(config.target, listing.paths, config.within, config.rehash)
    handle = None
    if stored is None:  # the embedded folder's owner (a Serve app's) holds it: reached through Ray
        init_ray()
        handle = StoreHandle(config.target, long_lived_owner(config.target.folder, detached=False))
        stored = stored_through(handle, listing.paths, config.within, config.rehash)
    config = config.with_defaults_of(stored.collection_metadata)
    if 0 < len(stored.holds()) < len(listing.paths):
        logger.info("%d of %d files are stored already: not read again (--rehash reads them all)",
                    len(stored.holds()), len(listing.paths))
    facts = _facts(config, listing, stored)
    app = ServedEmbedder.find(config.serve_app, config.model) if _asks_for_the_app(facts) else None
    route = _said(choose_route(replace(facts, app_embedder=app is not None)))
    if route.kind == RouteKind.NONE:
        done = _nothing_to_read(config, listing, stored, tally, pruning, handle)
    elif route.kind in (RouteKind.IN_PROCESS, RouteKind.WARM):
        done = _here(config, listing, stored, tally, pruning, handle, app)
    else:
        job = run_job(config, ListedInput(config, listing, stored, pruning), tally)
        done = _Done(job.random_weights, job.reporter, job.after, job.enriched, job.actors)
    return _finished(config, route, tally, started, done)


def _said(route: Route) -> Route:
    logger.info("route: %s (%s)", route.kind.value, route.reason)
    return route


def _facts(config: RunConfig, listing: Listing, stored: Stored) -> RunFacts:
    """What the route of a listed run hangs on."""
    to_read = stored.left_to_read(listing.paths)
    return RunFacts(
        to_read=len(to_read),
        decode_s=decode_seconds(to_read),
        store_ready=stored.covers(listing.paths, config.model),
        cluster=running_cluster() is not None,
        enrichments=any(enrichment.served_only for enrichment in config.enrichments),
        live_progress=bool(config.progress_id),
        inline_max_files=config.inline_max_files,
        machine=Machine.here(),
        precision=precision_on(config.precision, "cpu") if config.device != "cuda" else "fp16",
    )


def _asks_for_the_app(facts: RunFacts) -> bool:
    """Whether the route could be the Serve app's warm Embedder: a few files to read on a running cluster."""
    few = choose_route(replace(facts, app_embedder=True)).kind == RouteKind.WARM
    if few:
        init_ray()
    return few


def _finished(config: RunConfig, route: Route, tally: Tally, started: float, done: _Done) -> RunResult:
    """The run's summary, reported where progress goes, and its result."""
    summary = summary_of(config.target.collection, tally, time.monotonic() - started, done.enriched.counts,
                         done.actors, route.as_json())
    errors = tally.errors + done.enriched.errors
    done.reporter.finish(summary, errors)
    after = done.after
    pruned, holds = (after.plan.describe(), after.holds) if after is not None else ([], {})
    return RunResult(summary, tally, errors, done.random_weights, pruned, holds, route, config)


def _listed(config: RunConfig) -> list[str]:
    """The paths to list: with --prune-missing-folders, a folder that is gone lists nothing (its records
    go), instead of stopping the run."""
    if config.prune and config.prune_missing_folders:
        return [path for path in config.paths if os.path.lexists(os.path.expanduser(path))]
    return list(config.paths)


def _pruning(config: RunConfig, listing: Listing) -> Pruning:
    """What prune looks at: the folders of the run (named files and manifests prune nothing), the folders
    holding the photos listed, and the folders that could not be listed (nothing under them goes)."""
    given = [os.path.abspath(os.path.expanduser(path)) for path in config.paths]
    missing_too = config.prune_missing_folders
    folders = [path for path in given if os.path.isdir(path) or (missing_too and not os.path.lexists(path))]
    return Pruning(folders, folders_holding(listing.paths), tuple(problem.path for problem in listing.problems),
                   force=missing_too, machine=config.machine)


def _nothing_to_read(config: RunConfig, listing: Listing, stored: Stored, tally: Tally, pruning: Pruning | None,
                     handle: StoreHandle | None) -> _Done:
    """Every file settled unread: counted; progress and metrics are reported where a job would have run (a
    cluster that is up already), and no Ray is started just for them. The sequence after the files runs
    where prune or copies ask for it."""
    logger.info("all %d files are stored already%s: nothing to embed, no job to run (--rehash reads them all)",
                len(listing.paths), f" or failed before ({len(stored.failed)}, unchanged since)" if stored.failed else "")
    stored.count_into(tally, keep_stored=config.keeps_contents)
    reporter = Reporter(None, config.target.collection, to_metrics=False)
    if config.progress_id or running_cluster():
        init_ray()
        reporter = Reporter(config.progress_id, config.target.collection)
        reporter.start(listing.discovered, tally)
    after, enriched = None, Enriched()
    # What to prune, copies whose paths the records learn, or records to enrich (their own pool's enrichments:
    # the route took a job for the Serve app's).
    if pruning is not None or stored.duplicates or config.enrichments:
        with _store_as_it_is(config, handle) as store:
            if store is not None:  # the collection is there: every file is settled in it
                after = after_files(store, _through(listing, stored), tally, pruning, config.enrichments, config.uploads)
                enriched = run_queued(store, after.queued, _own_pool(config), reporter)
    return _Done(bool((stored.collection_metadata or {}).get("random_weights")), reporter, after, enriched)


def _own_pool(config: RunConfig) -> Pool:
    """Where a run's small enrichment models run: Ray actors on a running cluster (the records lacking text may
    be many more than the files it read), else this process. The route took a job for the Serve app's."""
    if running_cluster():
        init_ray()
        return ActorsPool(ServedPool(config.serve_app))
    return HerePool()


def _through(listing: Listing, stored: Stored) -> FilesThrough:
    """A listed run's files after the journeys: the pairs are looked for among the shots of the files read."""
    fresh = {path for path in listing.paths if path not in stored.unchanged}
    return FilesThrough.of(stored, PairsAmong(listing.paths, fresh))


def _here(config: RunConfig, listing: Listing, stored: Stored, tally: Tally, pruning: Pruning | None,
          handle: StoreHandle | None, app: ServedEmbedder | None) -> _Done:
    """Read, embed and write the files left to read in this process: embedded by the Serve app's Embedder
    (`app`, the warm route), else by the model loaded here."""
    embedder = app if app is not None else _model_here(config)
    facts = embedder.facts()
    stored.count_into(tally, keep_stored=config.keeps_contents)
    # Ray is joined where a cluster runs (`_asks_for_the_app`): its dashboard shows this run too.
    on_ray = handle is not None or app is not None or running_cluster() is not None
    reporter = Reporter(None, config.target.collection, to_metrics=on_ray)
    with _store_for_writing(config, handle, facts.collection_metadata) as store:
        if isinstance(embedder, LoadingEmbedder):
            embedder.start()  # Chroma imported: the model's imports run alone
        tally.add(ingest_here(listing.paths, stored, store, embedder, facts.geometry, config.max_pixels, config.within,
                              config.machine, reporter, config.keeps_contents))
        after = after_files(store, _through(listing, stored), tally, pruning, config.enrichments, config.uploads)
        enriched = run_queued(store, after.queued, _own_pool(config), reporter)
    return _Done(bool(facts.collection_metadata.get("random_weights")), reporter, after, enriched, embedder.described())


def _model_here(config: RunConfig) -> LocalEmbedder | LoadingEmbedder:
    """The model, in this process. Where it was resolved before (`clip.known`), it loads on a thread of its own
    while the first files are decoded, instead of before them."""
    # torch.compile pays off over a long job, not a few files: here only where asked for (--compile on).
    compile = "on" if config.compile == "on" else "off"
    known = clip_model.known(config.model)
    if known is not None:
        clip_model.warn_if_random(known, config.target.collection)
        device = config.device if config.device != "auto" else "cuda" if Machine.here().gpus else "cpu"
        return LoadingEmbedder(known, config.model, device=device, compile=compile, batch_size=EMBED_BATCH,
                               precision=config.precision)
    resolved, network = clip_model.resolve(config.model)
    clip_model.warn_if_random(resolved, config.target.collection)
    return LocalEmbedder(resolved, local_device(config.device), compile, EMBED_BATCH, network=network,
                         precision=config.precision)


@contextmanager
def _store_as_it_is(config: RunConfig, handle: StoreHandle | None) -> Iterator[RecordStore | None]:
    """The collection, opened here (None when there is none), or reached through its folder's owner."""
    if handle is not None:
        yield handle.store
        return
    with opened_here(config.target) as store:
        yield store


@contextmanager
def _store_for_writing(config: RunConfig, handle: StoreHandle | None, collection_metadata: dict) -> Iterator[RecordStore]:
    """The collection opened for writing (created when missing, its model checked): here, or through its
    folder's owner."""
    if handle is not None:
        yield handle.open(collection_metadata)
        return
    with opened_for_writing(config.target, collection_metadata) as store:
        yield store


def _dry_run(config: RunConfig, route: Route, listing: Listing, pruning: Pruning, tally: Tally, started: float) -> RunResult:
    """What prune would remove, changing nothing: the files whose record does not match their stat are
    read and hashed here, and nothing is embedded or written."""
    plan = PrunePlan()
    with opened_here(config.target) as store:
        if store is not None:
            unchanged, leftovers = unchanged_files(store, listing.paths, config.within)
            with ThreadPoolExecutor(4) as pool:
                hashed = dict(zip([path for path, _, _ in leftovers], pool.map(_sha256, [path for path, _, _ in leftovers])))
            plan = plan_pruning(store, pruning, {**{path: digest for path, digest in hashed.items() if digest}, **unchanged})
    # Nothing was ingested: the summary says what was listed and what would go.
    summary = {"collection": config.target.collection, "dry_run": True, "discovered": len(listing.paths),
               "removed": len(plan.removals), "seconds": round(time.monotonic() - started, 2), "route": route.as_json()}
    return RunResult(summary, tally, tally.errors, False, plan.describe(), {}, route, config)


def _sha256(path: str) -> str | None:
    try:
        return hashlib.sha256(read_file(path).data).hexdigest()
    except OSError:
        return None
