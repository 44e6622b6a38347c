"""Progress: live counts of running ingestions, kept by one named Ray actor that the HTTP API reads."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from ray_pipeline.cluster.metrics import count_files
from ray_pipeline.core.paths import FileFailure
from ray_pipeline.steps.summary import Tally

BOARD_NAME = "ingest-progress"
BOARD_NAMESPACE = "ray_pipeline"
MAX_ERRORS = 100  # per job: enough to act on, small enough to poll


MAX_LINES = 5000  # an inline run's log lines kept (its counts chunk by chunk, its failures, its end)
RUN_SILENCE_S = 600  # a run with no news this long was lost with the app replica that ran it
CUT_OFF = "cut off by a restart of the app: send the same files again to store the rest (those stored are kept)"
KEPT_RUNS = 1000  # runs kept for the listing; the oldest finished ones are let go first


@dataclass
class Run:
    """An ingestion that runs in the Serve app rather than as a Ray job: what the Job Submission API
    would keep of it (a Ray job's own status lives there)."""

    collection: str
    route: dict | None = None  # where it runs and why ({"kind", "reason"})
    start_time: float = field(default_factory=time.time)
    status: str = "RUNNING"  # then SUCCEEDED, FAILED or STOPPED, as a Ray job's
    end_time: float | None = None
    message: str | None = None
    stop_requested: bool = False
    heard_at: float = field(default_factory=time.time)  # its last news: started, counts, ended

    def as_seen(self, now: float) -> Run:
        """The run as the API reports it: one still RUNNING but silent for RUN_SILENCE_S was lost (the app
        replica running it stopped), and is FAILED."""
        if self.status != "RUNNING" or now - self.heard_at <= RUN_SILENCE_S:
            return self
        return replace(self, status="FAILED", end_time=self.heard_at,
                       message=f"error: no news from the app for {RUN_SILENCE_S} s: it stopped during the job; "
                               "send the same files again to store the rest")


class ProgressBoard:
    """Ray actor (named, detached): job id -> counts and the first errors, and the runs of the jobs that
    are not Ray jobs (in the order they started)."""

    def __init__(self):
        self._jobs: dict[str, dict] = {}
        self._runs: dict[str, Run] = {}
        self._lines: dict[str, list[str]] = {}  # a run's log, as `ingest` would print it

    def _log(self, job_id: str, line: str) -> None:
        if job_id in self._runs:
            kept = self._lines.setdefault(job_id, [])
            if len(kept) < MAX_LINES:
                kept.append(f"{time.strftime('%H:%M:%S')} {line}")

    def lines(self, job_id: str, offset: int) -> list[str] | None:
        """A run's log lines from `offset` on; None for a job that is no run of the app's (a Ray job)."""
        if job_id not in self._runs:
            return None
        return self._lines.get(job_id, [])[offset:]

    def register(self, job_id: str, collection: str, route: dict | None = None) -> None:
        self._runs[job_id] = Run(collection, route)
        self._jobs[job_id] = {"counts": Counter(), "errors": []}
        self._log(job_id, f"started in the app: collection {collection}" + (f" ({route['reason']})" if route else ""))
        finished = [i for i, run in self._runs.items() if run.status != "RUNNING"]
        for old in finished[: max(0, len(self._runs) - KEPT_RUNS)]:
            del self._runs[old]
            self._jobs.pop(old, None)
            self._lines.pop(old, None)

    def settle(self, job_id: str, status: str, message: str | None = None) -> None:
        """A run's end; one asked in time to stop ends STOPPED (even if its last chunk got through)."""
        run = self._runs.get(job_id)
        if run is None:  # a board restarted under the run: it has nothing to settle
            return
        run.status = "STOPPED" if run.stop_requested and status == "SUCCEEDED" else status
        run.end_time = run.heard_at = time.time()
        run.message = message
        self._log(job_id, run.status + (f": {message}" if message else ""))

    def cut_off(self, before: float) -> list[str]:
        """The runs still RUNNING that started before `before` (when the app that ran them started again: its
        jobs end with it) are FAILED, saying so; their ids. One that was not cut off after all (an app replica
        still finishing it) settles as it ends."""
        cut = [job_id for job_id, run in self._runs.items() if run.status == "RUNNING" and run.start_time < before]
        for job_id in cut:
            self.settle(job_id, "FAILED", f"error: {CUT_OFF}")
        return cut

    def request_stop(self, job_id: str) -> bool:
        """Whether a running run was asked to stop now (it stops before its next chunk of files)."""
        run = self._runs.get(job_id)
        if run is None or run.status != "RUNNING" or run.stop_requested:
            return False
        run.stop_requested = True
        return True

    def stop_requested(self, job_id: str) -> bool:
        run = self._runs.get(job_id)
        return run is not None and run.stop_requested

    def runs(self, limit: int) -> dict[str, Run]:
        """The newest runs, newest first."""
        now = time.time()
        return {job_id: run.as_seen(now) for job_id, run in reversed(list(self._runs.items())[-limit:])}

    def run(self, job_id: str) -> Run | None:
        run = self._runs.get(job_id)
        return None if run is None else run.as_seen(time.time())

    def start(self, job_id: str, discovered: int) -> None:
        self._jobs[job_id] = {"counts": Counter(discovered=discovered), "errors": []}

    def add(self, job_id: str, counts: dict[str, int], errors: list[dict]) -> None:
        if job_id in self._runs:
            self._runs[job_id].heard_at = time.time()
        job = self._jobs.setdefault(job_id, {"counts": Counter(), "errors": []})
        job["counts"].update(counts)
        job["errors"].extend(errors[: MAX_ERRORS - len(job["errors"])])
        if any(counts.values()):
            self._log(job_id, ", ".join(f"{key} {value}" for key, value in counts.items() if value))
        for error in errors:
            self._log(job_id, f"failed: {error.get('path')}: {error.get('reason')}")

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
        def created():
            return (
                ray.remote(ProgressBoard)
                .options(name=BOARD_NAME, namespace=BOARD_NAMESPACE, lifetime="detached", get_if_exists=True, num_cpus=0)
                .remote()
            )

        handle = created()
        if not hasattr(handle, "register"):  # a board of an older release, still alive: replaced
            ray.kill(handle, no_restart=True)
            handle = created()
        return handle
    try:
        return ray.get_actor(BOARD_NAME, namespace=BOARD_NAMESPACE)
    except ValueError:
        return None


class Reporter:
    """What a run and its tasks hold to report progress: live counts on the board (with a job id: the HTTP
    API's) and the pipeline's metrics (where Ray runs: `to_metrics`; a run in the command's own process
    starts no Ray just for them). Picklable."""

    def __init__(self, job_id: str | None, collection: str, to_metrics: bool = True):
        self.job_id = job_id
        self.collection = collection
        self.to_metrics = to_metrics
        self.board = board(create=True) if job_id else None

    def start(self, discovered: int, settled: Tally) -> None:
        """The run starts: what is known before any file is read (`settled`: the files settled unread)."""
        if self.board is not None:
            self.board.start.remote(self.job_id, 0)
        self.counted(settled, discovered)

    def counted(self, tally: Tally, discovered: int = 0) -> None:
        """Files counted (a chunk, a block, a batch, or those settled unread), on the board and the metrics."""
        self.add({"discovered": discovered, **tally.counts} if discovered else tally.counts, tally.errors)
        if self.to_metrics:
            count_files(self.collection, tally.outcomes, discovered)

    def add(self, counts: dict[str, int], errors: Sequence[FileFailure] = ()) -> None:
        """Counts of any kind on the board (records removed, enrichments made) and their failures."""
        if self.board is not None:
            self.board.add.remote(self.job_id, dict(counts), [error.as_json() for error in errors[:MAX_ERRORS]])

    def flush(self) -> None:
        """Return once the board has taken every count sent so far (one process's calls run in order)."""
        if self.board is not None:
            import ray

            ray.get(self.board.get.remote(self.job_id))

    def finish(self, summary: dict, errors: Sequence[FileFailure]) -> None:
        if self.board is not None:
            import ray

            ray.get(self.board.finish.remote(self.job_id, summary, [error.as_json() for error in errors[:MAX_ERRORS]]))
