"""Jobs: the API's ingestions, of two kinds with one face. Large ones run as Ray jobs through the Job
Submission API, with the CLI as entrypoint, so they show on the dashboard's Jobs page with their logs;
small ones run inline in the app (`InlineIngest`), warm. Both have a job id, the same status JSON and
live counts from the progress board."""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import os
import re
import shlex
import sys
import tempfile
import time
import uuid

from ray_pipeline.core.errors import user_facing_reason
from ray_pipeline.model.clip import ModelSpec
from ray_pipeline.runs import progress
from ray_pipeline.runs.config import RunConfig
from ray_pipeline.runs.in_process import RunStopped
from ray_pipeline.runs.route import Route
from ray_pipeline.search.similar import similar_in
from ray_pipeline.steps.summary import summary_in, summary_of
from serve_deployments.inline_ingest import InlineJob
from serve_deployments.settings import Settings

JOB_KIND = "photo-ingest"  # metadata tag: only jobs this API started are reported by it
JOB_PATHS = ".jobs"  # in the upload folder (hidden: never ingested): each Ray job's paths, a file each
# A watch that is stopped ends its batch in hand and writes its summary: Ray's job supervisor waits this
# long after SIGTERM before SIGKILL (3 s by default).
WATCH_STOP_WAIT_S = 60
COUNT_KEYS = ("discovered", "embedded", "skipped_existing", "duplicates", "failed", "removed", "captioned", "text_read",
              "looked_for_faces", "faces")
FINISHED = {"SUCCEEDED", "FAILED", "STOPPED"}

logger = logging.getLogger("ray.serve")


class UnknownJob(LookupError):
    pass


def ingest_entrypoint(config: RunConfig, command: str, paths_from: str) -> str:
    """The CLI command line the job runs (`ingest`, or `watch`, which uses the app's Embedder), asking for the
    very run the app was asked for, its paths read from the file `paths_from` (a command line has a length
    limit; a list of paths has none); it carries no secret."""
    return shlex.join([sys.executable, "-m", "ray_pipeline", command, "--paths-from", paths_from, *config.cli_args()])


def write_paths(folder: str, job_id: str, paths: tuple[str, ...]) -> str:
    """The job's paths, one per line, in a hidden folder of the upload folder, which every node of a cluster
    sees (its photos are read from there); the file's path."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{job_id}.paths")
    with tempfile.NamedTemporaryFile("wb", dir=folder, delete=False) as out:
        out.write(b"".join(os.fsencode(p) + b"\n" for p in paths))
    os.replace(out.name, path)
    return path


def similar_entrypoint(settings: Settings, collection: str, threshold: float) -> str:
    """The CLI command line of a `similar` job: its pairs found by Ray tasks, its groups printed as JSON."""
    return shlex.join([sys.executable, "-m", "ray_pipeline", "similar", *settings.target(collection).cli_args(),
                       "--threshold", str(threshold), "--in-process-max", "0",
                       "--max-pairs", str(settings.similar_max_pairs), "--json"])


def reindex_entrypoint(settings: Settings, collection: str, model: ModelSpec, job_id: str, allow_left_out: bool) -> str:
    """The CLI command line of a `collections reindex` job: into one of the app's models, reading only inside the
    ingestion roots, as the app's machine, its live counts under the job's id."""
    store = settings.target(collection).cli_args()[2:]  # where it lives; the collection is `reindex`'s NAME
    within = [arg for folder in settings.ingestion_roots() for arg in ("--within", folder)]
    return shlex.join([sys.executable, "-m", "ray_pipeline", "collections", "reindex", collection, *store,
                       *model.cli_args(), *within, "--machine", settings.machine, "--progress-id", job_id,
                       "--inline-max-files", str(settings.inline_max_files),
                       *(["--allow-left-out"] if allow_left_out else [])])


JOB_ID = re.compile(r"ingest-[0-9a-f]{16}")  # what `new_job_id` makes: any other id names no job of this API


def new_job_id() -> str:
    return f"ingest-{uuid.uuid4().hex[:16]}"


class Jobs:
    def __init__(self, settings: Settings, inline):
        """`inline`: the app's InlineIngest deployment (a handle to it)."""
        import ray
        from ray.job_submission import JobSubmissionClient

        self.settings = settings
        self.inline = inline
        # This cluster's own address, not whichever one auto-detection finds: a machine may run several.
        self.client = JobSubmissionClient(os.environ.get("RAY_JOBS_ADDRESS") or ray.get_runtime_context().gcs_address)
        self.board = progress.board(create=True)
        # The app's runs live in its ingress (this object): those the app ran before it started again ended with it.
        cut = ray.get(self.board.cut_off.remote(time.time()))
        if cut:
            logger.warning("%d ingestion(s) in the app were cut off by its restart: %s", len(cut), ", ".join(cut))
        self._final: dict[str, dict] = {}  # counts read from finished jobs' logs, read once each
        self._running: set[asyncio.Task] = set()  # inline jobs in flight, kept until they end
        self._reindexing: dict[str, str] = {}  # collection -> the reindex job started by this app

    def submit(self, config: RunConfig, route: Route, watch: bool = False) -> str:
        """A Ray job of `ingest` (with `config.prune`: `ingest --prune`) or, with `watch`, of `watch`, which runs
        until stopped; `config.progress_id` is its id."""
        job_id = config.progress_id or new_job_id()
        command = "watch" if watch else "ingest"
        paths_from = write_paths(os.path.join(self.settings.upload_dir, JOB_PATHS), job_id, config.paths)
        self.client.submit_job(
            entrypoint=ingest_entrypoint(config, command, paths_from),
            submission_id=job_id,
            metadata={"kind": JOB_KIND, "collection": config.target.collection, "command": command,
                      "route": json.dumps(route.as_json())},
            runtime_env={"env_vars": {"RAY_JOB_STOP_WAIT_TIME_S": str(WATCH_STOP_WAIT_S)}} if watch else None,
        )
        return job_id

    def submit_similar(self, collection: str, threshold: float) -> str:
        """A Ray job of `similar`; its status, once it has succeeded, carries the groups (`similar`)."""
        job_id = new_job_id()
        self.client.submit_job(entrypoint=similar_entrypoint(self.settings, collection, threshold), submission_id=job_id,
                               metadata={"kind": JOB_KIND, "collection": collection, "command": "similar"})
        return job_id

    def submit_reindex(self, collection: str, model: ModelSpec, allow_left_out: bool = False) -> str:
        """A Ray job of `collections reindex`; its status, once it has ended, carries the reindex's summary (`reindex`)."""
        job_id = new_job_id()
        self.client.submit_job(entrypoint=reindex_entrypoint(self.settings, collection, model, job_id, allow_left_out),
                               submission_id=job_id,
                               metadata={"kind": JOB_KIND, "collection": collection, "command": "reindex"})
        self._reindexing[collection] = job_id
        return job_id

    def reindexing(self, collection: str) -> str | None:
        """The reindex of the collection that this app started and is still running; None when there is none."""
        job_id = self._reindexing.get(collection)
        if job_id is not None and self.client.get_job_status(job_id).value in FINISHED:
            del self._reindexing[collection]
            return None
        return job_id

    def running_on(self, collection: str) -> list[str]:
        """The jobs of this API writing to the collection now (ingestions, watches, reindexes)."""
        return [job["job_id"] for job in self.recent(100)
                if job.get("collection") == collection and job["status"] not in FINISHED]

    async def start_inline(self, config: RunConfig, route: Route) -> tuple[str, asyncio.Future]:
        """An inline job (`config.progress_id` its id); returns its id and a future that is done once its
        records are stored (its result: None, or the exception that ended the job). The costly enrichments
        asked for (captions) are made after that, and the job ends with them."""
        job_id = config.progress_id or new_job_id()
        await self.board.register.remote(job_id, config.target.collection, route.as_json())
        stored = asyncio.get_running_loop().create_future()
        # A context of its own: the request's would tie the job's calls to the request, and Serve cancels those
        # when the client leaves. The job outlives its client.
        task = asyncio.create_task(self._run_inline(InlineJob(job_id, config), stored), context=contextvars.Context())
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        return job_id, stored

    async def _run_inline(self, job: InlineJob, stored: asyncio.Future) -> None:
        started = time.monotonic()
        status, failure = "FAILED", None
        message: str | None = "error: the job was cancelled (the app stopped?)"
        try:
            done = await self.inline.ingest.remote(job)
            await self._finish(job, done.tally, started)
            if done.queued:
                if await self.board.stop_requested.remote(job.job_id):
                    raise RunStopped()
                _resolve(stored, None)
                enriched = await self.inline.enrich.remote(job, done.queued)
                done.tally.errors += enriched.errors
                await self._finish(job, done.tally, started, enriched.counts)
            status, message = "SUCCEEDED", None
        except Exception as exc:  # the job ends with its reason; the app goes on
            failure, (status, message) = exc, _ending(job.job_id, exc)
        finally:
            try:
                await self.board.settle.remote(job.job_id, status, message)
            finally:  # a request waiting for the job is answered whatever happens
                _resolve(stored, failure)

    async def _finish(self, job: InlineJob, tally, started: float, enriched: dict[str, int] | None = None) -> None:
        """The job's exact counts on the board, replacing the live ones."""
        summary = summary_of(job.config.target.collection, tally, time.monotonic() - started, enriched)
        await self.board.finish.remote(job.job_id, summary, [error.as_json() for error in tally.errors[: progress.MAX_ERRORS]])

    def _info(self, job_id: str):
        try:
            info = self.client.get_job_info(job_id)
        except Exception:  # the SDK raises RuntimeError for an unknown id
            raise UnknownJob(job_id) from None
        if (info.metadata or {}).get("kind") != JOB_KIND:
            raise UnknownJob(job_id)
        return info

    def status(self, job_id: str) -> dict:
        import ray

        run, live = ray.get([self.board.run.remote(job_id), self.board.get.remote(job_id)])
        if run is not None:
            return self._describe_run(job_id, run, live)
        return self._describe(job_id, self._info(job_id), live)

    def logs(self, job_id: str, offset: int) -> dict:
        """A job's log lines from `offset` on, and the offset to ask from next: an app run's lines (kept by the
        board, counted in lines), or a Ray job's own log (counted in characters, whole lines only)."""
        import ray

        lines = ray.get(self.board.lines.remote(job_id, offset))
        if lines is not None:
            return {"job_id": job_id, "lines": lines, "offset": offset + len(lines)}
        text = self.client.get_job_logs(job_id)[offset:]
        whole = text[: text.rfind("\n") + 1]
        return {"job_id": job_id, "lines": whole.splitlines(), "offset": offset + len(whole)}

    def recent(self, limit: int) -> list[dict]:
        """This API's jobs of both kinds, newest first, each as `status` describes it."""
        import ray

        mine = [job for job in self.client.list_jobs() if (job.metadata or {}).get("kind") == JOB_KIND and job.submission_id]
        mine = sorted(mine, key=lambda job: job.start_time or 0, reverse=True)[:limit]
        runs = ray.get(self.board.runs.remote(limit))
        live = ray.get([self.board.get.remote(job_id) for job_id in [job.submission_id for job in mine] + list(runs)])
        described = [self._describe(job.submission_id, job, board) for job, board in zip(mine, live)]
        described += [self._describe_run(job_id, run, board) for (job_id, run), board in zip(runs.items(), live[len(mine):])]
        return sorted(described, key=lambda job: job["start_time"] or 0, reverse=True)[:limit]

    def _describe(self, job_id: str, info, live: dict | None) -> dict:
        if live is None and info.status.value in FINISHED:
            live = self._from_logs(job_id)
        metadata = info.metadata or {}
        status = _status(job_id, info.status.value, metadata.get("collection"), live, _seconds(info.start_time),
                         _seconds(info.end_time), _reason(info.message), json.loads(metadata.get("route") or "null"),
                         metadata.get("command") == "watch")
        if metadata.get("command") == "similar":
            status["similar"] = (live or {}).get("similar")  # the groups, once the job has succeeded
        if metadata.get("command") == "reindex" and info.status.value in FINISHED:
            status["reindex"] = self._from_logs(job_id).get("counts")  # the reindex's summary line
        return status

    @staticmethod
    def _describe_run(job_id: str, run: progress.Run, live: dict | None) -> dict:
        return _status(job_id, run.status, run.collection, live, run.start_time, run.end_time, run.message, run.route)

    def _from_logs(self, job_id: str) -> dict:
        """After a restart of the board, a finished job's counts are still in its final summary line.

        Read once per job (pages poll every few seconds); logs that cannot be read give no counts
        rather than failing the whole listing.
        """
        if job_id not in self._final:
            try:
                logs = self.client.get_job_logs(job_id)
            except Exception:  # the SDK raises RuntimeError and HTTP errors alike
                logger.warning("cannot read the logs of job %s", job_id)
                return {}
            summary, found = summary_in(logs), similar_in(logs)
            self._final[job_id] = {"counts": summary or {}, "errors": [], **({"similar": found} if found else {})}
        return self._final[job_id]

    def stop(self, job_id: str) -> bool:
        import ray

        if ray.get(self.board.run.remote(job_id)) is not None:
            return ray.get(self.board.request_stop.remote(job_id))
        self._info(job_id)
        return bool(self.client.stop_job(job_id))


def _status(job_id: str, status: str, collection: str | None, live: dict | None, start_time: float | None,
            end_time: float | None, message: str | None, route: dict | None, watch: bool = False) -> dict:
    """The status JSON of `GET /ingest/{job_id}`, the same for both kinds of job (`watch`: a job that
    follows its folders until stopped)."""
    live = live or {}
    counts = live.get("counts", {})
    return {
        "job_id": job_id,
        "status": status,
        "collection": collection,
        "watch": watch,
        **{key: int(counts.get(key, 0)) for key in COUNT_KEYS},
        "errors": live.get("errors", []),  # the board keeps at most progress.MAX_ERRORS
        "start_time": start_time,
        "end_time": end_time,
        "message": message,
        "route": route,  # where it ran and why: {"kind", "reason"}
    }


def _resolve(future: asyncio.Future, value) -> None:
    if not future.done():
        future.set_result(value)


def _ending(job_id: str, exc: Exception) -> tuple[str, str | None]:
    """(status, message) of an inline job ended by `exc`: its reason where it is one for users, else
    its kind (the details go to the app's log, not to clients)."""
    if isinstance(exc, RunStopped):
        return "STOPPED", None
    reason = user_facing_reason(exc)
    if reason is None:
        logger.exception("inline job %s failed", job_id)
        reason = f"unexpected {type(exc).__name__}; the app's log says more"
    return "FAILED", f"error: {reason}"


def _seconds(milliseconds: int | None) -> float | None:
    return None if milliseconds is None else milliseconds / 1000


def _reason(message: str | None) -> str | None:
    """Ray's status message, cut to the CLI's own `error: ...` line where it quotes one (a failed job's
    message carries its last logs), else to the exception that ended it where it quotes a traceback."""
    lines = [line for line in (message or "").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    if errors:
        return errors[-1]
    if any(line.startswith("Traceback (most recent call last)") for line in lines):
        raised = [line for line in lines if not line.startswith((" ", "\t", "Traceback", "During handling", "The above"))]
        return f"error: {raised[-1]}" if raised else "error: the job failed (its log says why)"
    return lines[0] if lines else None
