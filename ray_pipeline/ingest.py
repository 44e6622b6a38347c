"""Ingest: one ingestion, from the user's paths to its summary.

The listing, and the check of which files are stored already and unchanged (or failed before and
unchanged), run here in the driver before Ray: a re-run with nothing new to read ends in about a
second, without starting Ray or loading the model. A few files left to read, with no Ray cluster
running, are read and embedded in this very process (`inline`): starting a local Ray and its actors
would cost far more than the work. Everything else goes to the Ray Data plan (`pipeline`). After the
files, the failures are remembered and, with `--prune`, the records of files gone are removed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ray_pipeline.config import IngestConfig
from ray_pipeline.discover import Listing, is_streamed, photo_paths
from ray_pipeline.file_names import FileFailure
from ray_pipeline.journey import read_file
from ray_pipeline.pairs import pair_records
from ray_pipeline.progress import Reporter, announce
from ray_pipeline.prune import PrunePlan, folders_holding, plan_prune
from ray_pipeline.runtime import init_ray, running_cluster
from ray_pipeline.store import RecordStore, opened_for_writing, opened_here
from ray_pipeline.summary import Tally, summary_of
from ray_pipeline.unchanged import Stored, stored_before_start, unchanged_files

logger = logging.getLogger(__name__)


@dataclass
class IngestResult:
    summary: dict  # the line the command prints last
    tally: Tally
    errors: list[FileFailure]  # the files' and the captions' failures
    random_weights: bool
    pruned: list[str]  # what prune did, one line each
    holds: dict[str, str]  # {path: id} of the listed files whose bytes are known (with prune)


def run_ingest(config: IngestConfig) -> IngestResult:
    """Run one ingestion to the end."""
    started = time.monotonic()
    tally = Tally()  # files and folders that fail before any worker sees them are counted here
    if is_streamed(config.manifest):
        return _ingest_streamed(config, tally, started)
    listing = photo_paths(_listed(config), config.manifest)
    tally.fail(listing.problems)
    after = AfterFiles(config, listing)
    if config.dry_run:
        return _dry_run(config, after, tally, started)
    paths = listing.paths
    stored = stored_before_start(config.target, paths, config.within, config.rehash)
    captioned, caption_errors, actors = None, [], None
    if stored is not None and not config.caption and stored.covers(paths, config.model):
        logger.info("all %d files are stored already%s: nothing to embed, no job to run (--rehash reads them all)", len(paths),
                    f" or failed before ({len(stored.failed)}, unchanged since)" if stored.failed else "")
        random_weights = bool((stored.collection_metadata or {}).get("random_weights"))
        reporter = _report_without_job(config, listing, tally, stored)
        if config.prune or stored.duplicates:  # what to prune, or copies whose paths the records learn
            with opened_here(config.target) as store:
                if store is not None:  # covered: the collection is there
                    after(store, stored, tally)
    elif stored is not None and _runs_here(config, paths, stored):
        random_weights, reporter = _ingest_here(config, paths, stored, tally, after), Reporter(None)
    else:
        from ray_pipeline.pipeline import ListedInput, run_pipeline  # Ray, Ray Data and torch load only when needed

        job = run_pipeline(config, ListedInput(config, listing, stored, after), tally)
        captioned, caption_errors, random_weights, reporter = job.captioned, job.caption_errors, job.random_weights, job.reporter
        actors = job.actors
    return _finished(config, tally, started, reporter, captioned, caption_errors, random_weights, actors, after)


def _ingest_streamed(config: IngestConfig, tally: Tally, started: float) -> IngestResult:
    """A Parquet manifest: always a Ray job, which reads the manifest itself (`streamed`)."""
    from ray_pipeline.pipeline import run_pipeline
    from ray_pipeline.streamed import StreamedInput, StreamedManifest

    job = run_pipeline(config, StreamedInput(config, StreamedManifest.open(config.manifest or "")), tally)
    return _finished(config, tally, started, job.reporter, job.captioned, job.caption_errors, job.random_weights, job.actors)


def _finished(config: IngestConfig, tally: Tally, started: float, reporter: Reporter, captioned: int | None,
              caption_errors: list[FileFailure], random_weights: bool, actors: dict | None,
              after: AfterFiles | None = None) -> IngestResult:
    """The run's summary, reported where progress goes, and its result."""
    summary = summary_of(config.target.collection, tally, time.monotonic() - started, captioned, actors)
    errors = tally.errors + caption_errors
    reporter.finish(summary, errors)
    pruned, holds = (after.plan.describe(), after.holds) if after is not None else ([], {})
    return IngestResult(summary, tally, errors, random_weights, pruned, holds)


def _listed(config: IngestConfig) -> list[str]:
    """The paths to list: with --prune-missing-folders, a folder that is gone lists nothing (its records
    go), instead of stopping the run."""
    if config.prune and config.prune_missing_folders:
        return [path for path in config.paths if os.path.lexists(os.path.expanduser(path))]
    return list(config.paths)


class AfterFiles:
    """What a run does once its files are through, where the collection is open: remember the failures,
    give the records the paths of their copies, mark RAW+JPEG pairs, and prune. Called with the store,
    what it held before, and the tally."""

    def __init__(self, config: IngestConfig, listing: Listing):
        self.config = config
        self.paths = listing.paths
        self.problems = listing.problems
        self.plan = PrunePlan()
        self.holds: dict[str, str] = {}

    @property
    def folders(self) -> list[str]:
        """The folders of the run, where prune looks (named files and manifests prune nothing)."""
        given = [os.path.abspath(os.path.expanduser(path)) for path in self.config.paths]
        missing_too = self.config.prune_missing_folders
        return [path for path in given if os.path.isdir(path) or (missing_too and not os.path.lexists(path))]

    def __call__(self, store: RecordStore, stored: Stored, tally: Tally) -> None:
        stored.remember(store, tally)
        stored.add_copies(store, tally)
        pair_records(store, self.paths, {path for path in self.paths if path not in stored.unchanged})
        if self.config.prune:
            self.holds = {**stored.holds(), **{path: record_id for record_id, path in tally.held}}
            self.prune(store, self.holds)
            self.plan.apply(store)
            tally.removed = len(self.plan.removals)

    def prune(self, store: RecordStore, holds: dict[str, str]) -> None:
        """Plan what goes, from {path: id} of the listed files whose bytes are known."""
        folders = self.folders
        kept = tuple(problem.path for problem in self.problems)  # folders that could not be listed
        self.plan = plan_prune(store.records_under(folders) if folders else {}, holds, folders,
                               folders_holding(self.paths), kept, self.config.prune_missing_folders)
        if self.plan.moves:
            logger.info("prune: %d records of files gone take the path of a copy that is still there", len(self.plan.moves))


def _dry_run(config: IngestConfig, after: AfterFiles, tally: Tally, started: float) -> IngestResult:
    """What prune would remove, changing nothing: the files whose record does not match their stat are
    read and hashed here, and nothing is embedded or written."""
    with opened_here(config.target) as store:
        if store is not None:
            unchanged, leftovers = unchanged_files(store, after.paths, config.within)
            with ThreadPoolExecutor(4) as pool:
                hashed = dict(zip([path for path, _, _ in leftovers], pool.map(_sha256, [path for path, _, _ in leftovers])))
            after.prune(store, {**{path: digest for path, digest in hashed.items() if digest}, **unchanged})
    # Nothing was ingested: the summary says what was listed and what would go.
    summary = {"collection": config.target.collection, "dry_run": True, "discovered": len(after.paths),
               "removed": len(after.plan.removals), "seconds": round(time.monotonic() - started, 2)}
    return IngestResult(summary, tally, tally.errors, False, after.plan.describe(), {})


def _sha256(path: str) -> str | None:
    try:
        return hashlib.sha256(read_file(path).data).hexdigest()
    except OSError:
        return None


def _report_without_job(config: IngestConfig, listing: Listing, tally: Tally, stored: Stored) -> Reporter:
    """Count the settled files; progress and metrics are reported where a job would have run (a
    cluster that is up already), and no Ray is started just for them."""
    stored.count_into(tally)
    if not (config.progress_id or running_cluster()):
        return Reporter(None)
    init_ray()
    return announce(config.progress_id, config.target.collection, listing.discovered, tally)


def _runs_here(config: IngestConfig, paths: list[str], stored: Stored) -> bool:
    """A few files to read and no cluster to join: no Ray at all. Captions and live progress need the
    cluster's Serve app and progress board; a folder another process holds is reached through Ray."""
    if config.caption or config.progress_id or running_cluster():
        return False
    return len(stored.left_to_read(paths)) <= config.inline_max_files


def _ingest_here(config: IngestConfig, paths: list[str], stored: Stored, tally: Tally, after: AfterFiles) -> bool:
    """Read, embed and write the files left to read in this process; returns whether the weights are
    random."""
    from ray_pipeline import model as clip_model
    from ray_pipeline.embed import ImageEncoder, local_device
    from ray_pipeline.inline import CHUNK, ingest_left_to_read

    logger.info("%d files to read: embedded in this process, without Ray (no cluster running, and at most "
                "--inline-max-files %d)", len(stored.left_to_read(paths)), config.inline_max_files)
    resolved, network = clip_model.resolve(config.model)
    clip_model.warn_if_random(resolved, config.target.collection)
    # torch.compile pays off over a long job, not a few files: here only where asked for (--compile on).
    compile = "on" if config.compile == "on" else "off"
    encoder = ImageEncoder(resolved, local_device(config.device), compile, CHUNK, network=network)
    stored.count_into(tally, keep_stored=config.keeps_contents)
    with opened_for_writing(config.target, resolved.collection_metadata()) as store:
        tally.add(ingest_left_to_read(paths, stored, store, resolved.geometry, config.max_pixels, config.within,
                                      encoder.encode, config.keeps_contents))
        after(store, stored, tally)
    return resolved.random_weights
