"""Ingest: one ingestion, from the user's paths to its summary.

The listing, and the check of which files are stored already and unchanged, run here in the driver
before Ray: a re-run with nothing new to read ends in about a second, without starting Ray or loading
the model. Whatever is left to read goes to the Ray Data plan (`pipeline`).
"""

from __future__ import annotations

import logging
import time

from ray_pipeline.config import IngestConfig
from ray_pipeline.discover import discover, read_manifest, split_unnamed
from ray_pipeline.progress import Reporter, announce
from ray_pipeline.runtime import init_ray, running_cluster
from ray_pipeline.summary import Tally
from ray_pipeline.unchanged import Stored, stored_before_start

logger = logging.getLogger(__name__)

NOTHING_KNOWN = Stored({}, frozenset(), None)  # with --rehash: every file is read by the job


def run_ingest(config: IngestConfig) -> dict:
    """Run one ingestion to the end and return its summary (the errors list under "errors")."""
    started = time.monotonic()
    tally = Tally()  # files and folders that fail before any worker sees them are counted here
    listed = read_manifest(config.manifest) if config.manifest else discover(list(config.paths), tally.errors)
    paths, unnamed = split_unnamed(listed)
    tally.errors += unnamed
    tally.counts["failed"] = len(tally.errors)
    stored = NOTHING_KNOWN if config.rehash else stored_before_start(config.target, paths, config.within)
    if stored is not None and not config.caption and stored.covers(paths, config.model):
        logger.info("all %d files are stored already: nothing to embed, no job to run (--rehash reads them all)", len(paths))
        captioned, caption_errors = None, []
        random_weights = bool(stored.collection_metadata.get("random_weights"))
        reporter = _report_without_job(config, tally, stored)
    else:
        from ray_pipeline.pipeline import run_pipeline  # Ray, Ray Data and torch load only when needed

        captioned, caption_errors, random_weights, reporter = run_pipeline(config, paths, stored, tally)
    summary = {"collection": config.target.collection, **tally.summary()}
    if captioned is not None:
        summary["captioned"] = captioned
    summary["seconds"] = round(time.monotonic() - started, 2)
    summary["stage_seconds"] = tally.stage_seconds()
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
