"""Owner: the one process that opens an embedded Chroma folder (a Ray actor), and the handle Ray workers
hold to reach a collection, through that owner or directly on a server."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar, cast

from ray_pipeline.core.errors import UserFacingError, user_facing_reason
from ray_pipeline.records.chroma import ChromaStore
from ray_pipeline.records.collections import list_collections
from ray_pipeline.records.connection import WriterLock, connect, with_retries
from ray_pipeline.records.errors import StoreError
from ray_pipeline.records.store import RecordStore, open_store
from ray_pipeline.records.target import StoreTarget

T = TypeVar("T")


class EmbeddedOwner:
    """Ray actor: the one process that opens an embedded Chroma folder; every access goes through it.

    It takes the folder's lock, so another process (a second ingestion elsewhere) is refused at once
    instead of hanging or corrupting the index.
    """

    def __init__(self):
        self._lock = None  # opened by `open_folder`, so its errors reach the caller as raised
        self._stores: dict[str, ChromaStore] = {}

    def open_folder(self, path: str) -> None:
        if self._lock is not None:  # a long-lived owner is asked again by each user
            return
        self._lock = WriterLock(path)
        self._target = StoreTarget(collection="", path=path)
        self._client = connect(self._target)

    def open(self, collection: str, model_metadata: dict[str, Any] | None = None) -> dict[str, Any]:
        """Open (with `model_metadata`: create or check) a collection; returns its metadata."""
        target = StoreTarget(collection=collection, path=self._target.path)
        store = ChromaStore(target, model_metadata, client=self._client)
        self._stores[collection] = store
        return store.metadata

    def run(self, collection: str, member: Callable[..., T], *args, **kwargs) -> T:
        """`member` (a ChromaStore method, or a property's getter) on one collection."""
        if collection not in self._stores:
            self.open(collection)
        return member(self._stores[collection], *args, **kwargs)

    def list_collections(self) -> list[dict]:
        return list_collections(self._client)

    def forget(self, collection: str) -> None:
        """A collection deleted: its store, opened here, is no longer."""
        self._stores.pop(collection, None)

    def with_client(self, call: Callable[..., T], *args, forget: tuple[str, ...] = ()) -> T:
        """`call(client, *args)` with the folder's client: for the app's own collections (its keys), and for renames,
        whose names in `forget` the stores opened here let go of in the same call (nothing comes between)."""
        try:
            return call(self._client, *args)
        finally:
            for collection in forget:
                self.forget(collection)


OWNER_NAMESPACE = "ray_pipeline"


def owner_answer(reply):
    """The answer of an `EmbeddedOwner` call (an ObjectRef); an error of this project's raised in the owner (a
    StoreError, a PeopleError) keeps only its reason, without Ray's wrapping."""
    import ray

    try:
        return ray.get(reply)
    except StoreError as exc:  # Ray's wrapping derives from the error's class; its `cause` is the error itself
        original = getattr(exc, "cause", None)
        raise (original if isinstance(original, StoreError) else StoreError(user_facing_reason(exc))) from None
    except UserFacingError as exc:  # a refusal of the store's (an unknown person), as raised
        original = getattr(exc, "cause", None)
        raise (original if isinstance(original, UserFacingError) else exc) from None


def owner_name(chroma_path: str) -> str:
    """The name of a long-lived owner of an embedded Chroma folder (the Serve app and `watch` start one)."""
    return f"chroma-owner:{os.path.realpath(chroma_path)}"


def long_lived_owner(chroma_path: str, detached: bool):
    """The named owner actor of an embedded Chroma folder, started by the first that asks (a Serve app:
    `detached`, for the app's life; a `watch`: for its own) and found by the jobs that need the folder."""
    import ray

    options = {"lifetime": "detached"} if detached else {}
    owner = (
        ray.remote(EmbeddedOwner)
        .options(name=owner_name(chroma_path), namespace=OWNER_NAMESPACE, get_if_exists=True, num_cpus=0, **options)
        .remote()
    )
    owner_answer(owner.open_folder.remote(chroma_path))
    return owner


class _ThroughOwner:
    """A collection of an embedded folder, reached through the folder's owner: every member of the
    `RecordStore` interface runs there, as the ChromaStore function it is (sent by reference, never
    written out by name), so no member is forwarded by hand and a misspelt one fails in the type checker."""

    def __init__(self, owner, target: StoreTarget):
        self.target = target
        self._owner = owner

    def __getattr__(self, name: str) -> Any:
        member = getattr(ChromaStore, name)  # an AttributeError for anything a ChromaStore does not have
        if isinstance(member, property):
            return owner_answer(self._owner.run.remote(self.target.collection, member.fget))
        return lambda *args, **kwargs: owner_answer(self._owner.run.remote(self.target.collection, member, *args, **kwargs))


class StoreHandle:
    """What Ray workers hold to reach a collection: picklable, it opens the collection where it is used.
    Embedded Chroma allows one process only, so there every call goes to the folder's `EmbeddedOwner`
    actor; with a server, each process opens a client of its own."""

    def __init__(self, target: StoreTarget, owner=None):
        self.target = target
        self.owner = owner
        self._store: RecordStore | None = None

    def __getstate__(self):
        return {"target": self.target, "owner": self.owner, "_store": None}

    def open(self, model_metadata: dict[str, Any]) -> RecordStore:
        """The collection opened for writing: created when missing, its model checked (StoreError)."""
        if self.owner is None:
            self._store = with_retries(self.target, open_store, self.target, model_metadata)
        else:
            owner_answer(self.owner.open.remote(self.target.collection, model_metadata))
        return self.store

    @property
    def store(self) -> RecordStore:
        """The collection, as this process reaches it (opened on first use)."""
        if self._store is None:
            self._store = (cast(RecordStore, _ThroughOwner(self.owner, self.target)) if self.owner is not None
                           else with_retries(self.target, open_store, self.target))
        return self._store
