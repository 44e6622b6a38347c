"""Enrich: the costly enrichments (`records.enrichments`) of the records a run stored, made after the records
are written, by a pool of their own, so they never slow embedding.

The one sequence after a run's files queues the records that lack each enrichment (`queue`); the run then
has the pool work through them (`run_queued`): each file read once, decoded at the size the enrichment's
model takes, sent to the model (the Serve app's deployment, which batches what comes at once; or, for a small
model, the run's own pool: `HerePool` in this process, Ray actors in a job), and the answers written into the
records. A failure costs that photo's enrichment only: the record stays whole, and the next run fills it in.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ray_pipeline.cluster.metrics import count_enriched
from ray_pipeline.core import defaults
from ray_pipeline.core.errors import UserFacingError
from ray_pipeline.core.paths import FileFailure
from ray_pipeline.files.decode import DecodeError, decode_file
from ray_pipeline.files.reading import read_file
from ray_pipeline.model.faces import FaceFinder, FacesFound
from ray_pipeline.model.text_reader import TextReader
from ray_pipeline.records.enrichments import FACES, TEXT, CostlyEnrichment
from ray_pipeline.records.store import RecordStore

logger = logging.getLogger(__name__)

CHUNK = 32  # requests in flight at once; the deployment batches them
RESULT_TIMEOUT_S = 600  # for a chunk's answers, all together: a pool that answers none in this time is given up


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
    """Where an enrichment's model runs: `submit` one photo (its path), get back something whose
    `result(timeout_s=...)` is the record's value; a photo that cannot be read or decoded raises OSError or
    DecodeError, from `submit` or from `result`."""

    def check(self, enrichment: CostlyEnrichment) -> None: ...

    def submit(self, enrichment: CostlyEnrichment, path: str) -> Any: ...


class ServedPool:
    """The Serve application's deployments: one per enrichment, each scaling to zero while idle. The photo is
    decoded here and sent at the size the model takes."""

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

    def submit(self, enrichment: CostlyEnrichment, path: str):
        return self._handle(enrichment).remote(picture_for(enrichment, path))


def text_of(lines: list[str]) -> str:
    """The `text` a record keeps of the lines read in its photo: one per line ("" for none: read, and not again)."""
    return "\n".join(lines)


def reads_text(threads: int | None = None) -> Callable[[np.ndarray], str]:
    """The text enrichment's model, loaded now: a picture in, the record's `text` out."""
    reader = TextReader(threads)
    return lambda picture: text_of(reader.read(picture))


def finds_faces(threads: int | None = None) -> Callable[[np.ndarray], FacesFound]:
    """The faces enrichment's models, loaded now: a picture in, its faces out (dlib runs on one thread)."""
    return FaceFinder().find


# The enrichments whose models are small enough to run in a run's own pool (`CostlyEnrichment.served_only`),
# each with the loader of its model (given the threads it may use; None: every core).
OWN_MODELS: dict[str, Callable[[int | None], Callable[[np.ndarray], Any]]] = {TEXT.key: reads_text,
                                                                            FACES.key: finds_faces}


def write_answers(store: RecordStore, enrichment: CostlyEnrichment, answers: dict[str, Any]) -> dict[str, int]:
    """A chunk's answers ({record id: the model's answer}) written; what they count besides the records made.
    Faces go to the collection's people (`records.people`), the other enrichments into the records."""
    if enrichment.key == FACES.key:
        store.store_faces(answers)
        return {"faces": sum(len(found.faces) for found in answers.values()),
                "faces_too_small": sum(found.too_small for found in answers.values())}
    store.enrich({record_id: {enrichment.key: value} for record_id, value in answers.items()})
    return {}


class OwnModel:
    """A small enrichment model with what it needs around it: the photo read and decoded for it."""

    def __init__(self, enrichment: CostlyEnrichment, threads: int | None = None):
        self.enrichment = enrichment
        self.model = OWN_MODELS[enrichment.key](threads)

    def __call__(self, path: str) -> Any:
        return self.model(picture_for(self.enrichment, path))


class _Answer:
    """A future of this process, answering as a Serve response does (`result(timeout_s=...)`)."""

    def __init__(self, future: Future):
        self.future = future

    def result(self, timeout_s: float | None = None):
        return self.future.result(timeout=timeout_s)


class HerePool:
    """The small models' pool in this process: each loaded at its first photo, run on a thread of their own
    (the model's own arithmetic uses every core). A served-only enrichment (captions) goes to `served`."""

    def __init__(self, served: Pool | None = None):
        self.served = served
        self._models: dict[str, OwnModel] = {}
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="enrich")

    def check(self, enrichment: CostlyEnrichment) -> None:
        if not enrichment.served_only:
            return
        if self.served is None:
            raise PoolMissing(f"{enrichment.option} needs the Serve application's {enrichment.deployment} deployment "
                              "on a running Ray cluster")
        self.served.check(enrichment)

    def submit(self, enrichment: CostlyEnrichment, path: str):
        if enrichment.served_only:
            self.check(enrichment)
            assert self.served is not None
            return self.served.submit(enrichment, path)
        if enrichment.key not in self._models:
            self._models[enrichment.key] = OwnModel(enrichment)
        return _Answer(self._thread.submit(self._models[enrichment.key], path))


@dataclass
class Enriched:
    """What the pool made: records enriched, by the enrichment's summary key, and the photos it failed on."""

    counts: dict[str, int] = field(default_factory=dict)  # and what the answers counted besides (faces found)
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
            requests, failed, timed_out = [], [], 0
            for record_id in ids[start : start + CHUNK]:
                try:
                    requests.append((record_id, pool.submit(enrichment, paths[record_id])))
                except (OSError, DecodeError) as exc:
                    failed.append(FileFailure(paths[record_id], f"{enrichment.key}: {exc}"))
            values = {}
            deadline = time.monotonic() + RESULT_TIMEOUT_S
            for record_id, response in requests:
                try:
                    values[record_id] = response.result(timeout_s=max(0.0, deadline - time.monotonic()))
                except TimeoutError:
                    timed_out += 1
                    failed.append(FileFailure(paths[record_id], f"{enrichment.key}: no answer in {RESULT_TIMEOUT_S} s"))
                except (OSError, DecodeError) as exc:  # read or decoded where the model runs
                    failed.append(FileFailure(paths[record_id], f"{enrichment.key}: {_reason(exc)}"))
                except Exception as exc:  # a lost replica or a model error costs this photo's enrichment only
                    failed.append(FileFailure(paths[record_id], f"{enrichment.key} failed: {type(exc).__name__}: {exc}"[:500]))
            counted = write_answers(store, enrichment, values) if values else {}
            made += len(values)
            for name, number in counted.items():
                done.counts[name] = done.counts.get(name, 0) + number
            done.errors += failed
            logger.info("%s: %d of %d photos done, %d failed", enrichment.key, made, len(ids),
                        sum(e.reason.startswith(enrichment.key) for e in done.errors))
            reporter.add({enrichment.summary_key: len(values), f"{enrichment.key}_failed": len(failed), **counted}, failed)
            count_enriched(store.target.collection, enrichment.key, len(values))
            if requests and timed_out == len(requests):  # the pool answers nothing (no free CPU, no replica)
                logger.warning("%s: no answer in %d s; the %d photos left are left for the next run", enrichment.key,
                               RESULT_TIMEOUT_S, len(ids) - start - CHUNK)
                break
        done.counts[enrichment.summary_key] = made
    return done


def _reason(exc: BaseException) -> str:
    """A read or decode error's own words, also where it was raised in a Ray actor (whose error wraps it)."""
    cause = getattr(exc, "cause", None)
    return str(cause if isinstance(cause, (OSError, DecodeError)) else exc)
