"""Ingest: one ingestion, from the user's paths to its summary.

The listing, and the check of which files are stored already and unchanged, run here in the driver
before Ray: a re-run with nothing new to read ends in about a second, without starting Ray or loading
the model. A few files left to read, with no Ray cluster running, are read and embedded in this very
process (`inline`): starting a local Ray and its actors would cost far more than the work. Everything
else goes to the Ray Data plan (`pipeline`).
"""

from __future__ import annotations

import logging
import time

from ray_pipeline.config import IngestConfig
from ray_pipeline.discover import photo_paths
from ray_pipeline.progress import Reporter, announce
from ray_pipeline.runtime import init_ray, running_cluster
from ray_pipeline.summary import Tally, summary_of
from ray_pipeline.unchanged import Stored, stored_before_start

logger = logging.getLogger(__name__)

NOTHING_KNOWN = Stored({}, frozenset(), None)  # with --rehash: every file is read by the job


def run_ingest(config: IngestConfig) -> dict:
    """Run one ingestion to the end and return its summary (the errors list under "errors")."""
    started = time.monotonic()
    tally = Tally()  # files and folders that fail before any worker sees them are counted here
    paths, problems = photo_paths(list(config.paths), config.manifest)
    tally.fail(problems)
    stored = NOTHING_KNOWN if config.rehash else stored_before_start(config.target, paths, config.within)
    captioned, caption_errors = None, []
    if stored is not None and not config.caption and stored.covers(paths, config.model):
        logger.info("all %d files are stored already: nothing to embed, no job to run (--rehash reads them all)", len(paths))
        random_weights = bool(stored.collection_metadata.get("random_weights"))
        reporter = _report_without_job(config, tally, stored)
    elif _runs_here(config, paths, stored):
        random_weights, reporter = _ingest_here(config, paths, stored, tally), Reporter(None)
    else:
        from ray_pipeline.pipeline import run_pipeline  # Ray, Ray Data and torch load only when needed

        captioned, caption_errors, random_weights, reporter = run_pipeline(config, paths, stored, tally)
    summary = summary_of(config.target.collection, tally, time.monotonic() - started, captioned)
    errors = tally.errors + caption_errors
    reporter.finish(summary, errors)
    return {**summary, "errors": errors, "random_weights": random_weights}


def _report_without_job(config: IngestConfig, tally: Tally, stored: Stored) -> Reporter:
    """Count the settled files; progress and metrics are reported where a job would have run (a
    cluster that is up already), and no Ray is started just for them."""
    stored.count_into(tally)
    discovered = sum(tally.counts.values())
    if not (config.progress_id or running_cluster()):
        return Reporter(None)
    init_ray()
    return announce(config.progress_id, config.target.collection, discovered, dict(tally.counts), tally.errors)


def _runs_here(config: IngestConfig, paths: list[str], stored: Stored | None) -> bool:
    """A few files to read and no cluster to join: no Ray at all. Captions and live progress need the
    cluster's Serve app and progress board; a folder another process holds is reached through Ray."""
    if stored is None or config.caption or config.progress_id or running_cluster():
        return False
    return len(stored.left_to_read(paths)) <= config.inline_max_files


def _ingest_here(config: IngestConfig, paths: list[str], stored: Stored, tally: Tally) -> bool:
    """Read, embed and write the files left to read in this process; returns whether the weights are
    random."""
    from ray_pipeline import model as clip_model
    from ray_pipeline.embed import ImageEncoder, local_device
    from ray_pipeline.inline import CHUNK, ingest_inline
    from ray_pipeline.journey import DuplicateRegistry, Journey
    from ray_pipeline.store import opened_here

    to_read = stored.left_to_read(paths)
    logger.info("%d files to read: embedded in this process, without Ray (no cluster running, and at most "
                "--inline-max-files %d)", len(to_read), config.inline_max_files)
    resolved, network = clip_model.resolve(config.model)
    clip_model.warn_if_random(resolved, config.target.collection)
    # torch.compile pays off over a long job, not a few files: here only where asked for (--compile on).
    compile = "on" if config.compile == "on" else "off"
    encoder = ImageEncoder(resolved, local_device(config.device), compile, CHUNK, network=network)
    registry = DuplicateRegistry()
    registry.claim(stored.claims())
    stored.count_into(tally)
    with opened_here(config.target, resolved.collection_metadata()) as store:
        journey = Journey(store, registry.claim, resolved.geometry, config.max_pixels, config.within)
        tally.add(ingest_inline(to_read, journey, encoder.encode, store))
    return resolved.random_weights
