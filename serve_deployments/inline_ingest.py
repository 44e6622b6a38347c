"""InlineIngest: small ingestions run in the Serve app, warm. Each file goes on its journey
(`ray_pipeline.journey`: read, hash, skip what is stored, decode) on this replica's threads, the
app's `Embedder` makes the vectors, and the records go straight into the collection: no Ray job, no
new actor, no model to load. Replicas scale with the uploads."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import numpy as np
import ray
from ray import serve
from ray.exceptions import ActorUnavailableError, RayActorError
from ray.serve.exceptions import DeploymentUnavailableError, ReplicaUnavailableError

from ray_pipeline import progress
from ray_pipeline.caption import caption_records
from ray_pipeline.decode import DEFAULT_MAX_PIXELS
from ray_pipeline.discover import photo_paths
from ray_pipeline.errors import UserFacingError
from ray_pipeline.file_names import FileFailure
from ray_pipeline.inline import ingest_inline, report_chunk
from ray_pipeline.journey import DuplicateRegistry, Journey, PhotoFile
from ray_pipeline.pairs import beside, pair_records
from ray_pipeline.summary import Tally
from ray_pipeline.unchanged import add_copies
from serve_deployments.embedder import EmbedderModel
from serve_deployments.settings import Settings
from serve_deployments.store_access import long_lived_owner, store_handle

logger = logging.getLogger("ray.serve")

# A replica that died or cannot be reached, as Serve reports it to the caller.
REPLICA_LOST = (RayActorError, ActorUnavailableError, ReplicaUnavailableError, DeploymentUnavailableError)
EMBED_ATTEMPTS = 2  # a lost Embedder replica costs one retry, on another (or a restarted) replica
EMBED_TIMEOUT_S = 300


class EmbedderLost(UserFacingError):
    """The Embedder was lost twice while embedding one chunk; what was written before stays whole."""


class JobStopped(Exception):
    """Someone asked for the job to stop (DELETE /ingest/{job_id}); it stops between two chunks."""


@dataclass(frozen=True)
class InlineJob:
    job_id: str
    paths: tuple[str, ...]  # real paths inside the allowed roots
    collection: str


@serve.deployment(max_ongoing_requests=8)
class InlineIngest:
    def __init__(self, embedder, settings: Settings):
        self.embedder = embedder
        self.settings = settings
        self.owner = long_lived_owner(settings)
        self.board = progress.board(create=True)
        self._model: EmbedderModel | None = None

    async def ingest(self, job: InlineJob) -> Tally:
        """Read, embed and write the job's files; the tally remembers the stored ones (for captions)."""
        if self._model is None:
            self._model = await self.embedder.model.remote()
        return await asyncio.to_thread(self._ingest, job, self._model)

    async def caption(self, job: InlineJob, stored: list[tuple[str, str]]) -> tuple[int, list[FileFailure]]:
        """Caption those of the stored records (id, path) that have no caption: (captioned, errors)."""
        store = store_handle(self.settings, job.collection, self.owner)
        reporter = progress.Reporter(job.job_id)
        captioned = await asyncio.to_thread(caption_records, store, stored, self.settings.serve_app, reporter)
        await asyncio.to_thread(reporter.flush)
        return captioned

    def _ingest(self, job: InlineJob, model: EmbedderModel) -> Tally:
        tally = Tally()
        listing = photo_paths(list(job.paths))
        tally.fail(listing.problems)
        reporter = progress.announce(job.job_id, job.collection, listing.discovered, tally)
        store = store_handle(self.settings, job.collection, self.owner)
        store.open(model.collection_metadata)
        journey = Journey(store, DuplicateRegistry().claim, model.geometry, DEFAULT_MAX_PIXELS,
                          self.settings.ingestion_roots())

        def written(files: list[PhotoFile], chunk: Tally) -> None:
            report_chunk(job.collection, reporter, files, chunk)
            if ray.get(self.board.stop_requested.remote(job.job_id)):
                raise JobStopped(job.job_id)

        try:
            tally.add(ingest_inline(listing.paths, journey, self._embed, store, keep_stored=True, on_chunk=written))
            add_copies(store, tally.copies)
            pair_records(store, beside(listing.paths))
        finally:  # the live counts are all on the board before the caller reads or replaces them
            reporter.flush()
        return tally

    def _embed(self, pixels: np.ndarray) -> np.ndarray:
        """Vectors from the Embedder (called from this replica's worker threads)."""
        for attempt in range(1, EMBED_ATTEMPTS + 1):
            try:
                return self.embedder.embed_images.remote(pixels).result(timeout_s=EMBED_TIMEOUT_S)
            except REPLICA_LOST as exc:
                logger.warning("the Embedder was lost while embedding %d pictures (attempt %d of %d): %s",
                               len(pixels), attempt, EMBED_ATTEMPTS, type(exc).__name__)
        raise EmbedderLost("the Embedder was lost while embedding; the records written before are whole: "
                           "send the same files again to store the rest")
