"""Jobs: ingestions run as Ray jobs through the Job Submission API, with the CLI as entrypoint, so they
show on the dashboard's Jobs page with their logs; their live counts come from the progress board."""

from __future__ import annotations

import json
import logging
import os
import shlex
import sys
import uuid

from ray_pipeline import progress
from serve_deployments.settings import Settings

JOB_KIND = "photo-ingest"  # metadata tag: only jobs this API started are reported by it
COUNT_KEYS = ("discovered", "embedded", "skipped_existing", "duplicates", "failed", "captioned")
FINISHED = {"SUCCEEDED", "FAILED", "STOPPED"}

logger = logging.getLogger("ray.serve")


class UnknownJob(LookupError):
    pass


def ingest_entrypoint(settings: Settings, paths: list[str], collection: str, caption: bool, job_id: str) -> str:
    """The CLI command line the job runs; it carries no secret."""
    args = [sys.executable, "-m", "ray_pipeline", "ingest", *paths, "--collection", collection, "--progress-id", job_id]
    for root in settings.ingestion_roots():  # files reached through symlinks must stay inside too
        args += ["--within", root]
    args += ["--chroma-url", settings.chroma_url] if settings.chroma_url else ["--chroma-path", settings.chroma_path]
    args += ["--model", settings.clip_model]
    if settings.clip_checkpoint:
        args += ["--checkpoint", settings.clip_checkpoint]
    elif settings.clip_pretrained:
        args += ["--pretrained", settings.clip_pretrained]
    if settings.allow_random_weights:
        args.append("--allow-random-weights")
    if caption:
        args += ["--caption", "--serve-app", settings.serve_app]
    return shlex.join(args)


class Jobs:
    def __init__(self, settings: Settings):
        import ray
        from ray.job_submission import JobSubmissionClient

        self.settings = settings
        # This cluster's own address, not whichever one auto-detection finds: a machine may run several.
        self.client = JobSubmissionClient(os.environ.get("RAY_JOBS_ADDRESS") or ray.get_runtime_context().gcs_address)
        self.board = progress.board(create=True)
        self._final: dict[str, dict] = {}  # counts read from finished jobs' logs, read once each

    def submit(self, paths: list[str], collection: str, caption: bool) -> str:
        job_id = f"ingest-{uuid.uuid4().hex[:16]}"
        self.client.submit_job(
            entrypoint=ingest_entrypoint(self.settings, paths, collection, caption, job_id),
            submission_id=job_id,
            metadata={"kind": JOB_KIND, "collection": collection},
        )
        return job_id

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

        info = self._info(job_id)
        return self._describe(job_id, info, ray.get(self.board.get.remote(job_id)))

    def recent(self, limit: int) -> list[dict]:
        """This API's jobs, newest first, each as `status` describes it."""
        import ray

        mine = [job for job in self.client.list_jobs() if (job.metadata or {}).get("kind") == JOB_KIND and job.submission_id]
        mine = sorted(mine, key=lambda job: job.start_time or 0, reverse=True)[:limit]
        live = ray.get([self.board.get.remote(job.submission_id) for job in mine])
        return [self._describe(job.submission_id, job, board) for job, board in zip(mine, live)]

    def _describe(self, job_id: str, info, live: dict | None) -> dict:
        if live is None and info.status.value in FINISHED:
            live = self._from_logs(job_id)
        live = live or {}
        counts = live.get("counts", {})
        return {
            "job_id": job_id,
            "status": info.status.value,
            "collection": (info.metadata or {}).get("collection"),
            **{key: int(counts.get(key, 0)) for key in COUNT_KEYS},
            "errors": live.get("errors", []),  # the board keeps at most progress.MAX_ERRORS
            "start_time": _seconds(info.start_time),
            "end_time": _seconds(info.end_time),
            "message": _reason(info.message),
        }

    def _from_logs(self, job_id: str) -> dict:
        """After a restart of the board, a finished job's counts are still in its final summary line.

        Read once per job (pages poll every few seconds); logs that cannot be read give no counts
        rather than failing the whole listing.
        """
        if job_id not in self._final:
            try:
                lines = self.client.get_job_logs(job_id).splitlines()
            except Exception:  # the SDK raises RuntimeError and HTTP errors alike
                logger.warning("cannot read the logs of job %s", job_id)
                return {}
            summaries = [line for line in lines if line.startswith('{"collection"')]
            try:
                self._final[job_id] = {"counts": json.loads(summaries[-1]), "errors": []} if summaries else {}
            except ValueError:
                self._final[job_id] = {}
        return self._final[job_id]

    def stop(self, job_id: str) -> bool:
        self._info(job_id)
        return bool(self.client.stop_job(job_id))


def _seconds(milliseconds: int | None) -> float | None:
    return None if milliseconds is None else milliseconds / 1000


def _reason(message: str | None) -> str | None:
    """Ray's status message, cut to the CLI's own `error: ...` line where it quotes one (a failed job's
    message carries its last logs)."""
    lines = (message or "").splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    return errors[-1] if errors else (lines[0] if lines else None)
