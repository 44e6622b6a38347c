"""Enrich records: fill in the costly enrichments (the text in photos, captions) that a collection's records
lack, made after they were ingested (`python -m ray_pipeline enrich`). Resumable by nature: each chunk of
answers is written as it comes, and a record that has one is not asked again; a run stopped half way goes on
where it stopped. On a running Ray cluster the small models run in Ray actors of this job (`ActorsPool`) and
captions in the Serve app; with none, text is read in this process."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from ray_pipeline.cluster.runtime import init_ray, running_cluster
from ray_pipeline.core import defaults
from ray_pipeline.core.paths import FileFailure, recorded_path
from ray_pipeline.records.enrichments import CostlyEnrichment
from ray_pipeline.records.errors import MissingCollection
from ray_pipeline.records.store import opened_here
from ray_pipeline.records.target import StoreTarget
from ray_pipeline.runs.enrich_actors import ActorsPool
from ray_pipeline.runs.progress import Reporter
from ray_pipeline.steps.enrich import HerePool, Queued, ServedPool, run_queued

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EnrichResult:
    summary: dict  # {"collection", "records", one count per enrichment, "failed", "seconds"}
    errors: list[FileFailure]


def run_enrich(target: StoreTarget, enrichments: tuple[CostlyEnrichment, ...], serve_app: str = defaults.SERVE_APP) -> EnrichResult:
    """Make each enrichment for every record of the collection that lacks it."""
    started = time.monotonic()
    cluster = running_cluster() is not None
    if cluster:
        logger.info("running on %s", init_ray())
    pool = ActorsPool(ServedPool(serve_app)) if cluster else HerePool()
    for enrichment in enrichments:
        pool.check(enrichment)  # before any work: captions need the Serve app
    with opened_here(target) as store:
        if store is None:
            raise MissingCollection(f"no collection {target.collection!r} in {target.describe()}: ingest it first")
        records = store.matching(None, None)
        queued = [Queued(enrichment, sorted((i, recorded_path(m) or "") for i, m in records.items()
                                            if m.get(enrichment.key) is None))
                  for enrichment in enrichments]
        for work in queued:
            logger.info("%s: %d of %d records lack it", work.enrichment.key, len(work.records), len(records))
        reporter = Reporter(None, target.collection, to_metrics=cluster)
        enriched = run_queued(store, queued, pool, reporter)
    summary = {"collection": target.collection, "records": len(records), **enriched.counts,
               "failed": len(enriched.errors), "seconds": round(time.monotonic() - started, 1)}
    return EnrichResult(summary, enriched.errors)
