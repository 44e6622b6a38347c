"""Runtime: join the Ray cluster the command runs in, or start a local one."""

from __future__ import annotations

import logging
import os
import socket

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


def init_ray() -> str:
    """Connect to Ray: the running cluster (`running_cluster`), or a new local Ray.

    Returns a description of where the job runs, for the log.
    """
    import ray

    if ray.is_initialized():
        return "the Ray instance this process already joined"
    address = running_cluster()
    if address:
        context = ray.init(address=address, logging_level=logging.WARNING)
        where = f"the Ray cluster at {address}"
    else:
        context = ray.init(address="local", logging_level=logging.WARNING)
        where = "a new local Ray instance (stops when the command ends)"
    dashboard = getattr(context, "dashboard_url", None)
    return f"{where}; dashboard: http://{dashboard}" if dashboard else where
