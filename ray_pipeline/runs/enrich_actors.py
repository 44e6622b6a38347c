"""A Ray job's own pool for the small enrichment models (`steps.enrich.OWN_MODELS`: reading the text in photos):
Ray actors of one CPU each, started at the first photo, each reading and decoding its photos itself, so the
pool grows with the cluster, not with the driver. They run after the job's embedding, at batch priority
(`as_batch_work`), and go with the job. A served-only enrichment (captions) goes to the Serve app (`served`).
"""

from __future__ import annotations

from typing import Any

from ray_pipeline.cluster.runtime import as_batch_work
from ray_pipeline.records.enrichments import CostlyEnrichment
from ray_pipeline.steps.enrich import HerePool, OwnModel, Pool

MAX_ACTORS = 8  # per enrichment: OCR takes about a second of a core per photo


class _Actor:
    """One actor's model, on one core."""

    def __init__(self, enrichment: CostlyEnrichment):
        as_batch_work()
        self.model = OwnModel(enrichment, threads=1)

    def __call__(self, path: str) -> Any:
        return self.model(path)


class _RayAnswer:
    """An actor's answer, read as a Serve response is (`result(timeout_s=...)`)."""

    def __init__(self, ref):
        self.ref = ref

    def result(self, timeout_s: float | None = None):
        import ray

        return ray.get(self.ref, timeout=timeout_s)


class ActorsPool(HerePool):
    """As `HerePool`, with the small models in Ray actors, one per free CPU of the cluster (MAX_ACTORS at most)."""

    def __init__(self, served: Pool | None = None):
        super().__init__(served)
        self._actors: dict[str, list] = {}
        self._next = 0

    def submit(self, enrichment: CostlyEnrichment, path: str):
        if enrichment.served_only:
            return super().submit(enrichment, path)
        actors = self._actors.get(enrichment.key) or self._start(enrichment)
        self._next += 1
        return _RayAnswer(actors[self._next % len(actors)].__call__.remote(path))

    def _start(self, enrichment: CostlyEnrichment) -> list:
        import ray

        cpus = int(ray.available_resources().get("CPU", 1))
        actor = ray.remote(num_cpus=1)(_Actor)
        self._actors[enrichment.key] = [actor.remote(enrichment) for _ in range(max(1, min(MAX_ACTORS, cpus)))]
        return self._actors[enrichment.key]
