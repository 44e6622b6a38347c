"""Route: where a run of ingestion runs, decided in one place, by one pure function, for every entry point
(the CLI's `ingest`, each batch of a `watch`, the HTTP API's ingestions, uploads and watches).

The routes:
- `none`: nothing to read (every file stored and unchanged, or failed before and unchanged): no job, no model;
- `in_process`: the files read and embedded in the command's own process, by a model loaded there: with no
  cluster running, where that is expected to take less time than a local Ray (`costs`); on a running cluster,
  for a few files, where its Serve app has no Embedder of the model;
- `warm`: the same steps, embedded by a model already loaded elsewhere (the Serve app's `Embedder`, or a
  watch's own): the app's small ingestions, a watch's small batches, and a command's few files on a cluster
  whose app embeds with the collection's model;
- `ray_data`: a Ray Data job over the listing (CPU actors read and decode, an actor pool embeds);
- `streamed`: a Ray Data job that reads a Parquet manifest itself;
- `ray_job`: (the HTTP API) the CLI submitted as a Ray job, which takes its own route inside;
- `dry_run`: prune's plan, nothing read into the collection or written.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from ray_pipeline.core import defaults
from ray_pipeline.runs.costs import Machine, expected


class RouteKind(StrEnum):
    NONE = "none"
    IN_PROCESS = "in_process"
    WARM = "warm"
    RAY_DATA = "ray_data"
    STREAMED = "streamed"
    RAY_JOB = "ray_job"
    DRY_RUN = "dry_run"


@dataclass(frozen=True)
class Route:
    kind: RouteKind
    reason: str  # why, for people: the log says it once, the summary and the job status carry it

    def as_json(self) -> dict[str, str]:
        """As the summary line and the job status carry it (`route`)."""
        return {"kind": self.kind.value, "reason": self.reason}


@dataclass(frozen=True)
class RunFacts:
    """What the choice needs to know of a run, gathered by its entry point."""

    to_read: int | None  # files left to read after the check of what is stored; None: not checked (the app)
    decode_s: float = 0.0  # the CPU-seconds their reading and decoding is expected to take (`costs.decode_seconds`)
    store_ready: bool = True  # the collection exists, of this model and of the current layout
    streamed: bool = False  # a Parquet manifest, read by Ray Data itself
    dry_run: bool = False
    in_app: bool = False  # asked of the Serve app, whose Embedder is warm
    watch: bool = False  # a watch: the app runs it as a Ray job; the command, batch by batch
    warm_model: bool = False  # a watch's batch: its model is loaded already
    cluster: bool = False  # a Ray cluster runs that the command would join (RAY_ADDRESS, or a local head)
    app_embedder: bool = False  # the cluster's Serve app has an Embedder of this model, loaded and warm
    enrichments: bool = False  # costly enrichments asked for that only the cluster's Serve app makes (captions)
    live_progress: bool = False  # live counts asked for (the HTTP API's job id): kept by the cluster's board
    prune: bool = False
    inline_max_files: int | None = None  # at most this many files run without a Ray job (None: as costs say)
    machine: Machine = Machine(cpus=2, gpus=0)  # where a run with no cluster runs
    precision: str = "fp32"  # the model's arithmetic on this machine's CPU (`embedders.precision_on`)


def choose_route(facts: RunFacts) -> Route:
    """The route of a run, and why."""
    limit = facts.inline_max_files if facts.inline_max_files is not None else defaults.INLINE_MAX_FILES
    if facts.dry_run:
        return Route(RouteKind.DRY_RUN, "--dry-run: prune's plan only, nothing is written")
    if facts.streamed:
        return Route(RouteKind.STREAMED, "a Parquet manifest is read by Ray Data itself, never held by the driver")
    if facts.in_app:
        if facts.watch:
            return Route(RouteKind.RAY_JOB, "a watch follows its folders until stopped: a Ray job of its own")
        if facts.prune:
            return Route(RouteKind.RAY_JOB, "prune runs as `ingest --prune`, a Ray job")
        if facts.to_read is not None and facts.to_read <= limit:
            return Route(RouteKind.WARM, f"{facts.to_read} files, at most INGEST_INLINE_MAX_FILES ({limit}): in the app, "
                                         "embedded by its warm Embedder")
        return Route(RouteKind.RAY_JOB, f"more than INGEST_INLINE_MAX_FILES ({limit}) files: a Ray job")
    to_read = facts.to_read if facts.to_read is not None else limit + 1
    if facts.warm_model:
        if to_read <= limit:
            return Route(RouteKind.WARM, f"{to_read} files to read, at most --inline-max-files ({limit}): embedded by "
                                         "the watch's warm model")
        return Route(RouteKind.RAY_DATA, f"a burst of {to_read} files to read, more than --inline-max-files ({limit}): "
                                         "a Ray Data job")
    if to_read == 0 and facts.store_ready and not facts.enrichments:
        return Route(RouteKind.NONE, "nothing to read: every file is stored and unchanged, or failed before and unchanged")
    for needed, why in ((facts.enrichments, "captions need the cluster's Serve app"),
                        (facts.live_progress, "live progress needs the cluster's progress board")):
        if needed:
            return Route(RouteKind.RAY_DATA, f"{why}: a Ray Data job")
    if facts.cluster:
        if to_read > limit:
            return Route(RouteKind.RAY_DATA, f"{to_read} files to read, more than --inline-max-files ({limit}), on a running "
                                             "Ray cluster: a Ray Data job on it")
        if facts.app_embedder:
            return Route(RouteKind.WARM, f"{to_read} files to read, at most --inline-max-files ({limit}), on a running "
                                         "cluster: embedded by its Serve app's Embedder, loaded already")
        return Route(RouteKind.IN_PROCESS, f"{to_read} files to read, at most --inline-max-files ({limit}), on a running "
                                           "cluster with no Embedder of this model: in this process, no job's actors to start")
    if facts.inline_max_files is not None and to_read > facts.inline_max_files:
        return Route(RouteKind.RAY_DATA, f"{to_read} files to read, more than --inline-max-files ({facts.inline_max_files}): "
                                         "a Ray Data job on a local Ray")
    seconds = expected(facts.decode_s, to_read, facts.machine, facts.precision)
    guess = f"in this process {seconds.in_process:.0f} s, on a local Ray {seconds.local_ray:.0f} s"
    if seconds.in_process <= seconds.local_ray:
        return Route(RouteKind.IN_PROCESS, f"{to_read} files to read, no cluster running, expected {guess}: in this "
                                           "process, without Ray")
    return Route(RouteKind.RAY_DATA, f"{to_read} files to read, no cluster running, expected {guess}: a Ray Data job on "
                                     "a local Ray")
