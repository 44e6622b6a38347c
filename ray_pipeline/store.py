"""Store: the Chroma collection that holds one record per distinct photo, embedded or on a server."""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import numpy as np

from ray_pipeline.errors import UserFacingError

LOCK_FILE = "ray_pipeline.lock"
# Keys that must agree between a collection and the model writing or searching it.
MODEL_KEYS = ("model", "weights")


class StoreError(UserFacingError):
    """The collection cannot be used as asked; the message says why."""


@dataclass(frozen=True)
class StoreTarget:
    """Where the collection lives: a local folder (embedded Chroma) or a Chroma server URL."""

    collection: str
    path: str | None = None
    url: str | None = None

    @property
    def embedded(self) -> bool:
        return self.url is None

    def describe(self) -> str:
        return f"Chroma server {self.url}" if self.url else f"embedded Chroma at {self.path}"


def connect(target: StoreTarget):
    """A Chroma client for the target; a server that does not answer is a StoreError at once."""
    import chromadb
    from chromadb.config import Settings

    settings = Settings(anonymized_telemetry=False)
    if target.embedded:
        os.makedirs(target.path, exist_ok=True)
        return chromadb.PersistentClient(path=target.path, settings=settings)
    url = urlparse(target.url if "://" in target.url else f"http://{target.url}")
    if not url.hostname:
        raise StoreError(f"not a Chroma server URL: {target.url}")
    try:
        client = chromadb.HttpClient(
            host=url.hostname,
            port=url.port or (443 if url.scheme == "https" else 8000),
            ssl=url.scheme == "https",
            settings=settings,
        )
        client.heartbeat()
    except Exception as exc:
        raise StoreError(f"Chroma server {target.url} is unreachable: {type(exc).__name__}") from None
    return client


class _WriterLock:
    """An exclusive lock on an embedded Chroma folder: Chroma is not safe with two writing processes."""

    def __init__(self, folder: str):
        os.makedirs(folder, exist_ok=True)
        self._file = open(os.path.join(folder, LOCK_FILE), "a+")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.close()
            raise StoreError(
                f"embedded Chroma at {folder} is in use by another ingestion; wait for it to finish, "
                "or run a Chroma server (--chroma-url) for concurrent writers"
            ) from None


def _model_mismatch(collection, recorded: dict, wanted: dict) -> str:
    return (
        f"collection {collection!r} holds vectors from model {recorded.get('model')} "
        f"(weights {recorded.get('weights')}); this run uses {wanted.get('model')} "
        f"(weights {wanted.get('weights')}); use another --collection or the same model"
    )


def check_model(name: str, recorded: dict, wanted: dict) -> None:
    """Refuse to mix vectors of two models in one collection."""
    if any(recorded.get(key) != wanted.get(key) for key in MODEL_KEYS):
        raise StoreError(_model_mismatch(name, recorded, wanted))


class ChromaStore:
    """One open collection. With `model_metadata` it is opened for writing (created if missing)."""

    def __init__(self, target: StoreTarget, model_metadata: dict[str, Any] | None = None):
        self.target = target
        self._lock = _WriterLock(target.path) if target.embedded and model_metadata else None
        self.client = connect(target)
        if model_metadata is None:
            self.collection = self._existing_collection()
        else:
            self.collection = self.client.get_or_create_collection(
                target.collection,
                metadata=model_metadata,
                configuration={"hnsw": {"space": "cosine"}},
                embedding_function=None,
            )
            check_model(target.collection, self.collection.metadata or {}, model_metadata)
        self.max_batch = self.client.get_max_batch_size()

    def _existing_collection(self):
        try:
            return self.client.get_collection(self.target.collection, embedding_function=None)
        except Exception:
            names = sorted(c.name for c in self.client.list_collections())
            raise StoreError(
                f"no collection {self.target.collection!r} in {self.target.describe()} (collections: {names})"
            ) from None

    @property
    def metadata(self) -> dict[str, Any]:
        return dict(self.collection.metadata or {})

    def count(self) -> int:
        return self.collection.count()

    def existing_ids(self, ids: list[str]) -> list[str]:
        """Which of these ids are stored already."""
        found: list[str] = []
        for start in range(0, len(ids), self.max_batch):
            found += self.collection.get(ids=ids[start : start + self.max_batch], include=[])["ids"]
        return found

    def upsert(self, ids: list[str], embeddings: np.ndarray, metadatas: list[dict]) -> None:
        """Write records by id, in batches Chroma accepts; writing a record twice leaves one."""
        for start in range(0, len(ids), self.max_batch):
            end = start + self.max_batch
            self.collection.upsert(ids=ids[start:end], embeddings=embeddings[start:end], metadatas=metadatas[start:end])

    def query(self, embedding: np.ndarray, k: int) -> dict:
        return self.collection.query(
            query_embeddings=[embedding], n_results=k, include=["metadatas", "distances"]
        )


class StoreHandle:
    """What Ray workers hold to reach the collection, picklable.

    Embedded Chroma allows one process only, so there all calls go to the single actor that owns the
    client; with a server, every worker opens its own client.
    """

    def __init__(self, target: StoreTarget, actor=None):
        self.target = target
        self.actor = actor
        self._store: ChromaStore | None = None

    def __getstate__(self):
        return {"target": self.target, "actor": self.actor, "_store": None}

    def _direct(self) -> ChromaStore:
        if self._store is None:
            self._store = ChromaStore(self.target)
        return self._store

    def existing_ids(self, ids: list[str]) -> list[str]:
        if self.actor is not None:
            import ray

            return ray.get(self.actor.existing_ids.remote(ids))
        return self._direct().existing_ids(ids)

    def upsert(self, ids: list[str], embeddings: np.ndarray, metadatas: list[dict]) -> None:
        if self.actor is not None:
            import ray

            return ray.get(self.actor.upsert.remote(ids, embeddings, metadatas))
        return self._direct().upsert(ids, embeddings, metadatas)
