"""Connection: a Chroma client for a target (an embedded folder under its lock, or a server), and calls to
a server retried while it does not answer."""

from __future__ import annotations

import fcntl
import os
import time

from ray_pipeline.records.errors import FolderInUse, StoreError, Unreachable
from ray_pipeline.records.target import StoreTarget, server_address

LOCK_FILE = "ray_pipeline.lock"
# A Chroma server that stops answering is retried with backoff (0.5 s, 1 s, 2 s, ... 15.5 s in all), then
# the job stops with a clear error; what was written stays written, and a re-run stores the rest.
SERVER_ATTEMPTS = 6
FIRST_BACKOFF_S = 0.5


def connect(target: StoreTarget):
    """A Chroma client for the target; a server that does not answer is a StoreError at once."""
    import chromadb
    from chromadb.config import Settings

    settings = Settings(anonymized_telemetry=False)
    if target.url is None:
        os.makedirs(target.folder, exist_ok=True)
        return chromadb.PersistentClient(path=target.folder, settings=settings)
    if target.sharded:
        raise StoreError(f"{target.describe()}: a sharded collection has one client per server (open_store)")
    scheme, host, port = server_address(target.url)
    try:
        client = chromadb.HttpClient(host=host, port=port, ssl=scheme == "https", settings=settings)
        client.heartbeat()
    except Exception as exc:
        raise Unreachable(f"Chroma server {target.url} is unreachable: {type(exc).__name__}") from None
    return client


class WriterLock:
    """An exclusive lock on an embedded Chroma folder: Chroma is not safe with two processes on it."""

    def __init__(self, folder: str):
        os.makedirs(folder, exist_ok=True)
        self._file = open(os.path.join(folder, LOCK_FILE), "a+")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.close()
            raise FolderInUse(
                f"embedded Chroma at {folder} is in use by another process; wait for it to finish, "
                "or run a Chroma server (--chroma-url) for concurrent writers"
            ) from None

    def __enter__(self) -> "WriterLock":
        return self

    def __exit__(self, *exc) -> None:  # closing the file releases the lock
        self._file.close()


def with_retries(target: StoreTarget, operation, *args, **kwargs):
    """Run a Chroma call; against a server, connection failures are retried with exponential backoff.
    An answer (another model, no such collection, wrong servers, or retries given up inside) is not."""
    from chromadb.errors import ChromaError

    delay = FIRST_BACKOFF_S
    for attempt in range(1, SERVER_ATTEMPTS + 1):
        try:
            return operation(*args, **kwargs)
        except (ChromaError, StoreError) as exc:
            if not isinstance(exc, Unreachable) or target.embedded:
                raise
            lost: Exception = exc
        except Exception as exc:
            if target.embedded:
                raise
            lost = exc
        if attempt == SERVER_ATTEMPTS:
            # of a sharded store, the server that failed names itself in its own error
            who, why = ((f"one of the Chroma servers {target.url}", str(lost)) if target.sharded and isinstance(lost, StoreError)
                        else (f"Chroma server {target.url}", type(lost).__name__))
            raise StoreError(
                f"{who} is unreachable: gave up after {SERVER_ATTEMPTS} attempts "
                f"({why}); records written so far are kept, run again to store the rest"
            ) from None
        time.sleep(delay)
        delay *= 2
