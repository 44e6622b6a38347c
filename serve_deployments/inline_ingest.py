"""InlineIngest: the app's small ingestions, the `warm` route. Each file goes on its journey
(`ray_pipeline.steps.journey`: read, hash, skip what is stored, decode) on this replica's threads, the app's
`Embedder` makes the vectors, and the records go straight into the collection; then the one sequence after
the files (`ray_pipeline.steps.after`), as every route has it: no Ray job, no new actor, no model to load.
Replicas scale with the uploads."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import ray
from ray import serve

from ray_pipeline.files.listing import photo_paths
from ray_pipeline.model.embedders import ModelFacts
from ray_pipeline.runs import progress
from ray_pipeline.runs.config import RunConfig
from ray_pipeline.runs.in_process import ingest_here
from ray_pipeline.runs.warm import ServedEmbedder
from ray_pipeline.steps.after import FilesThrough, after_files
from ray_pipeline.steps.enrich import Enriched, Queued, ServedPool, run_queued
from ray_pipeline.steps.pairs import PairsAmong, beside
from ray_pipeline.steps.summary import Tally
from ray_pipeline.steps.unchanged import stored_in
from serve_deployments.settings import Settings
from serve_deployments.store_access import long_lived_owner, store_handle

logger = logging.getLogger("ray.serve")


@dataclass(frozen=True)
class InlineJob:
    job_id: str
    config: RunConfig  # its paths: real paths inside the allowed roots


@dataclass(frozen=True)
class Written:
    """What an inline run leaves once its records are written: its tally, and its costly enrichments queued."""

    tally: Tally
    queued: list[Queued]


@serve.deployment(max_ongoing_requests=8)
class InlineIngest:
    def __init__(self, embedders: list, settings: Settings):
        self.embedders = [ServedEmbedder(handle) for handle in embedders]  # one per model of the app's (`Settings.models`)
        self.settings = settings
        self.owner = long_lived_owner(settings)
        self.board = progress.board(create=True)
        self._facts: dict[int, ModelFacts] = {}

    async def ingest(self, job: InlineJob) -> Written:
        """Read, embed and write the job's files (by the Embedder of the job's model), then the sequence after them."""
        number = self.settings.models.index(job.config.model)
        if number not in self._facts:
            self._facts[number] = await self.embedders[number].handle.model.remote()
        return await asyncio.to_thread(self._ingest, job, self.embedders[number], self._facts[number])

    async def enrich(self, job: InlineJob, queued: list[Queued]) -> Enriched:
        """Make the enrichments queued for the job's records (captions) with the app's deployments."""
        store = store_handle(self.settings, job.config.target.collection, self.owner).store
        reporter = progress.Reporter(job.job_id, job.config.target.collection)
        enriched = await asyncio.to_thread(run_queued, store, queued, ServedPool(job.config.serve_app), reporter)
        await asyncio.to_thread(reporter.flush)
        return enriched

    def _ingest(self, job: InlineJob, embedder: ServedEmbedder, facts: ModelFacts) -> Written:
        config = job.config
        tally = Tally()
        listing = photo_paths(list(config.paths))
        tally.fail(listing.problems)
        handle = store_handle(self.settings, config.target.collection, self.owner)
        store = handle.open(facts.collection_metadata)
        stored = stored_in(store, listing.paths, config.within, read_leftovers=False)
        stored.count_into(tally, keep_stored=True)
        reporter = progress.Reporter(job.job_id, config.target.collection)
        reporter.start(listing.discovered, tally)
        try:
            tally.add(ingest_here(listing.paths, stored, store, embedder, facts.geometry, config.max_pixels,
                                  config.within, config.machine, reporter, keep_stored=True,
                                  stop_requested=lambda: ray.get(self.board.stop_requested.remote(job.job_id))))
            after = after_files(store, FilesThrough.of(stored, PairsAmong(beside(listing.paths))), tally,
                                enrichments=config.enrichments, uploads=config.uploads)
        finally:  # the live counts are all on the board before the caller reads or replaces them
            reporter.flush()
        return Written(tally, after.queued)
