"""Progress: live counts of running ingestions, kept by one named Ray actor that the HTTP API reads."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from ray_pipeline.metrics import count_files

BOARD_NAME = "ingest-progress"
BOARD_NAMESPACE = "ray_pipeline"
MAX_ERRORS = 100  # per job: enough to act on, small enough to poll


@dataclass
class Run:
    """An ingestion that runs in the Serve app rather than as a Ray job: what the Job Submission API
    would keep of it (a Ray job's own status lives there)."""

    collection: str
    start_time: float = field(default_factory=time.time)
    status: str = "RUNNING"  # then SUCCEEDED, FAILED or STOPPED, as a Ray job's
    end_time: float | None = None
    message: str | None = None
    stop_requested: bool = False


class ProgressBoard:
    """Ray actor (named, detached): job id -> counts and the first errors, and the runs of the jobs that
    are not Ray jobs."""

    def __init__(self):
        self._jobs: dict[str, dict] = {}
        self._runs: dict[str, Run] = {}

    def register(self, job_id: str, collection: str) -> None:
        self._runs[job_id] = Run(collection)
        self._jobs[job_id] = {"counts": Counter(), "errors": []}

    def settle(self, job_id: str, status: str, message: str | None = None) -> None:
        """A run's end; a run asked to stop ends STOPPED."""
        run = self._runs[job_id]
        run.status = "STOPPED" if run.stop_requested and status != "SUCCEEDED" else status
        run.end_time, run.message = time.time(), message

    def request_stop(self, job_id: str) -> bool:
        """Whether a running run was asked to stop now (it stops between two chunks of files)."""
        run = self._runs[job_id]
        if run.status != "RUNNING" or run.stop_requested:
            return False
        run.stop_requested = True
        return True

    def stop_requested(self, job_id: str) -> bool:
        return self._runs[job_id].stop_requested

    def runs(self, limit: int) -> dict[str, Run]:
        """The newest runs, newest first."""
        return dict(sorted(self._runs.items(), key=lambda item: item[1].start_time, reverse=True)[:limit])

    def run(self, job_id: str) -> Run | None:
        return self._runs.get(job_id)

    def start(self, job_id: str, discovered: int) -> None:
        self._jobs[job_id] = {"counts": Counter(discovered=discovered), "errors": []}

    def add(self, job_id: str, counts: dict[str, int], errors: list[dict]) -> None:
        job = self._jobs.setdefault(job_id, {"counts": Counter(), "errors": []})
        job["counts"].update(counts)
        job["errors"].extend(errors[: MAX_ERRORS - len(job["errors"])])

    def finish(self, job_id: str, summary: dict[str, int], errors: list[dict]) -> None:
        """`errors`: at most MAX_ERRORS (the Reporter trims them). The final summary replaces the live counts (a retried write task may have reported twice)."""
        counts = {k: v for k, v in summary.items() if isinstance(v, int)}
        self._jobs[job_id] = {"counts": Counter(counts), "errors": errors}

    def get(self, job_id: str) -> dict | None:
        job = self._jobs.get(job_id)
        return None if job is None else {"counts": dict(job["counts"]), "errors": list(job["errors"])}


def board(create: bool = False):
    """The cluster's progress board actor (created when `create`), or None when there is none."""
    import ray

    if create:
        return (
            ray.remote(ProgressBoard)
            .options(name=BOARD_NAME, namespace=BOARD_NAMESPACE, lifetime="detached", get_if_exists=True, num_cpus=0)
            .remote()
        )
    try:
        return ray.get_actor(BOARD_NAME, namespace=BOARD_NAMESPACE)
    except ValueError:
        return None


class Reporter:
    """What the pipeline's tasks hold to report progress: picklable, and a no-op without a job id."""

    def __init__(self, job_id: str | None):
        self.job_id = job_id
        self.board = board(create=True) if job_id else None

    def start(self, discovered: int) -> None:
        if self.board is not None:
            self.board.start.remote(self.job_id, discovered)

    def add(self, counts: dict[str, int], errors: list[dict] | None = None) -> None:
        if self.board is not None:
            self.board.add.remote(self.job_id, dict(counts), list(errors or [])[:MAX_ERRORS])

    def flush(self) -> None:
        """Return once the board has taken every count sent so far (one process's calls run in order)."""
        if self.board is not None:
            import ray

            ray.get(self.board.get.remote(self.job_id))

    def finish(self, summary: dict, errors: list[dict]) -> None:
        if self.board is not None:
            import ray

            ray.get(self.board.finish.remote(self.job_id, summary, errors[:MAX_ERRORS]))


def announce(job_id: str | None, collection: str, discovered: int, counts: dict[str, int], errors: list[dict]) -> Reporter:
    """The job's reporter, told what is known before any file is read, with the same counts on the
    metrics. Ray must be up."""
    reporter = Reporter(job_id)
    reporter.start(discovered)
    reporter.add(counts, errors)
    count_files(collection, {"discovered": discovered, **counts})
    return reporter
