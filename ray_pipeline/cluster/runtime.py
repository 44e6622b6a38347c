"""Runtime: join the Ray cluster the command runs in, or start a local one."""

from __future__ import annotations

import logging
import os
import re
import secrets
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from ray_pipeline.core.errors import UserFacingError, user_facing_reason

logger = logging.getLogger(__name__)


def reachable(host: str | None, port: int | str, timeout: float = 1.0) -> bool:
    """Whether something accepts TCP connections there (a quick probe before a slow client tries)."""
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return True
    except (OSError, ValueError, TypeError):
        return False


def _running_local_cluster() -> str | None:
    """The address of a `ray start` head on this machine that answers, else None.

    A head that was killed leaves its address file behind; plain `ray.init()` would then wait on
    the dead cluster, so the address is only used when something listens there.
    """
    from ray._common.utils import get_ray_address_file

    try:
        with open(get_ray_address_file(None)) as f:
            address = f.read().strip()
    except OSError:
        return None
    host, _, port = address.rpartition(":")
    return address if address and reachable(host, port) else None


def running_cluster() -> str | None:
    """The Ray cluster this command belongs to: RAY_ADDRESS (set inside `ray job submit`), else a
    running local head; None when there is none."""
    return os.environ.get("RAY_ADDRESS") or _running_local_cluster()


# Ray starts every worker at nice 15 (`RAY_worker_niceness`), the Serve app's replicas as well as a job's actors.
BATCH_NICENESS = 19  # the least favoured a process can make itself: a job's actors, against the app's 15


def as_batch_work() -> None:
    """This process gives way on its node's CPUs to interactive work (the Serve app's searches): a job's actors
    go from Ray's nice 15 to 19, which Linux weighs about six times below 15, so that a search is not queued
    behind a batch of photos while a job ingests (benchmarks/RESULTS.md, issue 29). Idle cores still go to the
    job. Only a Ray actor gives way: the same stages built in a driver or a test process keep their priority."""
    import ray

    if not (ray.is_initialized() and ray.get_runtime_context().get_actor_id()):
        return
    try:
        current = os.nice(0)
        if current < BATCH_NICENESS:
            os.nice(BATCH_NICENESS - current)
    except OSError:  # not allowed here: the job runs at the priority it has
        pass


def init_ray() -> str:
    """Connect to Ray: the running cluster (`running_cluster`), or a new local Ray.

    Returns a description of where the job runs, for the log.
    """
    import ray

    if ray.is_initialized():
        return "the Ray instance this process already joined"
    address = running_cluster()
    if address:
        _check_token(address)
        context = ray.init(address=address, logging_level=logging.WARNING)
        where = f"the Ray cluster at {address}"
    else:
        context = ray.init(address="local", logging_level=logging.WARNING)
        where = "a new local Ray instance (stops when the command ends)"
    dashboard = getattr(context, "dashboard_url", None)
    return f"{where}; dashboard: http://{dashboard}" if dashboard else where


def token_found() -> bool:
    """Whether this machine has a Ray token where Ray looks for one: RAY_AUTH_TOKEN, the file named by
    RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token. A new machine has none."""
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return True
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or os.path.join(os.path.expanduser("~"), ".ray", "auth_token")
    try:
        with open(path, encoding="utf-8") as f:
            return bool(f.read().strip())
    except OSError:
        return False


def token_for_new_head(folder: str) -> dict[str, str]:
    """The environment a new `ray start --head` and its clients need where this machine has no Ray token
    (`token_found`): a token made in `folder`, named by RAY_AUTH_TOKEN_PATH, never printed; {} where one
    exists already (the tests and benchmarks start heads of their own)."""
    if token_found():
        return {}
    path = os.path.join(folder, "auth_token")
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as f:
        f.write(secrets.token_hex(32))  # as `ray get-auth-token --generate` makes one
    return {"RAY_AUTH_TOKEN_PATH": path}


def _check_token(address: str) -> None:
    """A cluster with token authentication refuses a client that runs without RAY_AUTH_MODE=token or
    without the cluster's token, and `ray.init` would retry for 20 s, then only say it cannot connect (or
    raise a traceback): ask once, and say why in one line."""
    if "://" in address:
        return
    mode = os.environ.get("RAY_AUTH_MODE", "").lower() == "token"
    found = token_found()
    if mode and found:
        return
    if not mode:
        from ray._raylet import GcsClient  # type: ignore[attr-defined]
        from ray.exceptions import AuthenticationError

        try:
            GcsClient(address=address)
            return
        except AuthenticationError:
            pass
        except Exception:  # anything else is for ray.init to report
            return
    needs = ([] if mode else ["set RAY_AUTH_MODE=token"]) + ([] if found else [
        "give it the cluster's token in ~/.ray/auth_token, RAY_AUTH_TOKEN_PATH or RAY_AUTH_TOKEN (a new machine has "
        "none: `ray get-auth-token` prints the head's; `ray get-auth-token --generate` makes one before `ray start --head`)"])
    raise ClusterRefused(
        f"the Ray cluster at {address} uses token authentication (Ray 2.60 turns it on for `ray start --head`), "
        f"and this shell does not: {'; and '.join(needs)}"
    )


class ClusterRefused(UserFacingError):
    """The running Ray cluster will not take this process as a client."""


# Ray 2.60's core worker logs this at ERROR for every actor pool Ray Data starts (Ray Data passes its
# own objects to the actors it can restart, ray issue 53727): a warning about Ray Data's design that
# asks nothing of the user, in every job.
RAY_DATA_ACTOR_NOISE = re.compile(rb"core_worker\.cc:\d+: Actor with class name: 'MapWorker\(.*has constructor arguments "
                                  rb"in the object store and max_restarts > 0")


@contextmanager
def quiet_ray_data() -> Iterator[None]:
    """While inside, Ray Data says less: the process's stderr (fd 2, where Ray's C++ core writes) passes through
    a filter that drops its one line of noise per actor pool (forwarding every other byte as it comes: a
    progress bar redraws its line after a carriage return, not a newline), and its loggers leave out the
    traceback of an error this project reports itself, in one line (a Chroma server gone, say)."""
    read_end, write_end = os.pipe()
    out = os.dup(2)  # the forwarder's own copy of the real stderr, closed by the forwarder alone
    saved = os.dup(2)
    os.dup2(write_end, 2)
    os.close(write_end)
    forwarder = threading.Thread(target=_forward, args=(read_end, out), name="stderr-filter", daemon=True)
    forwarder.start()
    handlers = logging.getLogger("ray.data").handlers + logging.getLogger("ray").handlers
    for handler in handlers:
        handler.addFilter(_not_reported_by_us)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(_not_reported_by_us)
        sys.stderr.flush()
        os.dup2(saved, 2)  # the pipe's last writer closes: the forwarder drains it, then ends
        os.close(saved)
        forwarder.join(timeout=5)


def _not_reported_by_us(record: logging.LogRecord) -> bool:
    """A log record to keep: any but one carrying an error whose one line the command prints itself."""
    error = record.exc_info[1] if record.exc_info else None
    return error is None or user_facing_reason(error) is None


def _forward(read_end: int, out: int) -> None:
    pending = b""
    with os.fdopen(read_end, "rb", buffering=0) as source:
        while chunk := source.read(65536):
            pieces = re.split(rb"(?<=[\r\n])", pending + chunk)
            pending = pieces.pop()  # an unfinished line waits for its end
            _write(out, b"".join(piece for piece in pieces if not RAY_DATA_ACTOR_NOISE.search(piece)))
    _write(out, pending)
    os.close(out)


def _write(out: int, data: bytes) -> None:
    """Everything, or nothing where stderr has gone away: the job itself goes on."""
    try:
        while data:
            data = data[os.write(out, data) :]
    except OSError:
        return
