"""Enrich: the costly enrichments (`records.enrichments`) of the records a run stored, made after the records
are written, by a pool of their own, so they never slow embedding.

The one sequence after a run's files queues the records that lack each enrichment (`queue`); the run then
has the pool work through them (`run_queued`): each file read once, decoded at the size the enrichment's
model takes, sent to the Serve app's deployment that runs it (which batches what comes at once), and the
answers written into the records. A failure costs that photo's enrichment only: the record stays whole,
and the next run fills it in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from ray_pipeline.cluster.metrics import count_enriched
from ray_pipeline.core import defaults
from ray_pipeline.core.errors import UserFacingError
from ray_pipeline.core.paths import FileFailure
from ray_pipeline.files.decode import DecodeError, decode_file
from ray_pipeline.files.reading import read_file
from ray_pipeline.records.enrichments import CostlyEnrichment
from ray_pipeline.records.store import RecordStore

CHUNK = 32  # requests in flight at once; the deployment batches them
RESULT_TIMEOUT_S = 600


class PoolMissing(UserFacingError):
    """The pool that makes an enrichment asked for does not run."""


@dataclass(frozen=True)
class Queued:
    """The records (id, path) of a run that lack an enrichment."""

    enrichment: CostlyEnrichment
    records: list[tuple[str, str]]


def queue(store: RecordStore, enrichments: tuple[CostlyEnrichment, ...], stored: list[tuple[str, str]]) -> list[Queued]:
    """For each enrichment, the records among `stored` (id, path) that lack it."""
    paths = dict(stored)
    queued = []
    for enrichment in enrichments:
        lacking = store.lacking(enrichment.key, sorted(paths)) if paths else []
        queued.append(Queued(enrichment, [(record_id, paths[record_id]) for record_id in sorted(lacking)]))
    return queued


class Pool(Protocol):
    """Where an enrichment's model runs: `submit` one picture, get back something whose `result()` is the value."""

    def check(self, enrichment: CostlyEnrichment) -> None: ...

    def submit(self, enrichment: CostlyEnrichment, picture) -> Any: ...


class ServedPool:
    """The Serve application's deployments: one per enrichment, each scaling to zero while idle."""

    def __init__(self, serve_app: str = defaults.SERVE_APP):
        self.serve_app = serve_app

    def _handle(self, enrichment: CostlyEnrichment):
        from ray import serve

        return serve.get_deployment_handle(enrichment.deployment, app_name=self.serve_app)

    def check(self, enrichment: CostlyEnrichment) -> None:
        """Before any work: the deployment runs on this cluster."""
        try:
            self._handle(enrichment)
        except Exception:
            raise PoolMissing(
                f"{enrichment.option} needs the Serve application {self.serve_app!r} with its {enrichment.deployment} "
                "deployment running on this Ray cluster (serve run serve_deployments.app:app)"
            ) from None

    def submit(self, enrichment: CostlyEnrichment, picture):
        return self._handle(enrichment).remote(picture)


@dataclass
class Enriched:
    """What the pool made: records enriched, by the enrichment's summary key, and the photos it failed on."""

    counts: dict[str, int] = field(default_factory=dict)
    errors: list[FileFailure] = field(default_factory=list)


def picture_for(enrichment: CostlyEnrichment, path: str):
    """The photo at `path` as the enrichment's model takes it, decoded as ingestion decodes."""
    return decode_file(read_file(path), enrichment.geometry, defaults.MAX_PIXELS).pixels


def run_queued(store: RecordStore, queued: list[Queued], pool: Pool, reporter) -> Enriched:
    """Make each queued enrichment with the pool, CHUNK photos at a time, writing each chunk's answers;
    `reporter` (a `runs.progress.Reporter`) hears of each chunk."""
    done = Enriched()
    for work in queued:
        enrichment, paths = work.enrichment, dict(work.records)
        ids = [record_id for record_id, _ in work.records]
        made = 0
        for start in range(0, len(ids), CHUNK):
            requests, failed = [], []
            for record_id in ids[start : start + CHUNK]:
                try:
                    requests.append((record_id, pool.submit(enrichment, picture_for(enrichment, paths[record_id]))))
                except (OSError, DecodeError) as exc:
                    failed.append(FileFailure(paths[record_id], f"{enrichment.key}: {exc}"))
            values = {}
            for record_id, response in requests:
                try:
                    values[record_id] = {enrichment.key: response.result(timeout_s=RESULT_TIMEOUT_S)}
                except Exception as exc:  # a lost replica or a model error costs this photo's enrichment only
                    failed.append(FileFailure(paths[record_id], f"{enrichment.key} failed: {type(exc).__name__}: {exc}"[:500]))
            if values:
                store.enrich(values)
            made += len(values)
            done.errors += failed
            reporter.add({enrichment.summary_key: len(values), f"{enrichment.key}_failed": len(failed)}, failed)
            count_enriched(store.target.collection, enrichment.key, len(values))
        done.counts[enrichment.summary_key] = made
    return done
