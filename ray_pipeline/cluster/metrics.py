"""Metrics: the pipeline's counters and histograms on Ray's metrics endpoint (Prometheus format), so they
appear in the Ray dashboard's Grafana views next to Ray's own."""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache

from ray_pipeline.core import record_keys as keys
from ray_pipeline.core.outcome import Outcome

COLLECTION = ("collection",)


class PipelineMetrics:
    """One set per process: Ray metrics are created where they are recorded, never pickled."""

    def __init__(self):
        from ray.util.metrics import Counter, Histogram

        def counter(name: str, what: str) -> Counter:
            return Counter(f"photo_{name}", description=what, tag_keys=COLLECTION)

        self.files = {
            key: counter(f"files_{key}", f"files {key} by ingestion jobs")
            for key in ("discovered", *(outcome.metric for outcome in Outcome))
        }
        self.bytes_read = counter("bytes_read", "bytes read from photo files")
        # A costly enrichment's records made, by the record key it fills.
        self.enriched = {keys.CAPTION: counter("captions", "captions written"),
                         keys.TEXT: counter("texts_read", "photos whose text was read (OCR), an empty text included"),
                         keys.FACES: counter("looked_for_faces", "photos looked at for faces, those with none included")}
        self.batch_halvings = Counter("photo_embed_batch_halvings", description="embedding batches halved after "
                                      "running out of GPU memory", tag_keys=("device",))
        self.decode_seconds = Histogram("photo_decode_seconds", description="read, hash and decode time per file",
                                        boundaries=[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5], tag_keys=COLLECTION)
        self.embed_seconds = Histogram("photo_embed_batch_seconds", description="embedding time per batch",
                                       boundaries=[0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30], tag_keys=COLLECTION)


@lru_cache(maxsize=1)
def metrics() -> PipelineMetrics:
    return PipelineMetrics()


def observe_files(collection: str, files) -> None:
    """Bytes read and decode time of files that have been on their journey (`steps.journey.PhotoFile`)."""
    tags = {"collection": collection}
    for photo in files:
        if photo.file is not None and photo.file.size:  # Ray counters take positive increments only
            metrics().bytes_read.inc(photo.file.size, tags=tags)
        if photo.decode_seconds:
            metrics().decode_seconds.observe(photo.decode_seconds, tags=tags)


def count_files(collection: str, outcomes: Mapping[Outcome, int], discovered: int = 0) -> None:
    """Files by outcome, and files discovered, onto the file counters."""
    tags = {"collection": collection}
    if discovered:
        metrics().files["discovered"].inc(discovered, tags=tags)
    for outcome, value in outcomes.items():
        if value:  # Ray counters take positive increments only
            metrics().files[outcome.metric].inc(value, tags=tags)


def count_enriched(collection: str, key: str, made: int) -> None:
    """Records given a costly enrichment (by the record key it fills) onto its counter."""
    if made:  # Ray counters take positive increments only
        metrics().enriched[key].inc(made, tags={"collection": collection})
