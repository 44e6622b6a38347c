"""Store: the one interface to a collection (`RecordStore`), and opening it in this process: one Chroma, or a
collection sharded over several servers."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any, Protocol

import numpy as np

from ray_pipeline.files.state import FileState
from ray_pipeline.records.chroma import ChromaStore
from ray_pipeline.records.connection import WriterLock, connect
from ray_pipeline.records.errors import MissingCollection
from ray_pipeline.model.faces import FacesFound
from ray_pipeline.records.failures import Failure
from ray_pipeline.records.people import AllFaces, FaceRecord, Person
from ray_pipeline.records.shards import ShardedStore
from ray_pipeline.records.target import StoreTarget


class RecordStore(Protocol):
    """The one interface to a collection: a ChromaStore, opened in this process, a ShardedStore (one
    ChromaStore per server), and a StoreHandle, which reaches either from any Ray worker, all satisfy it (a
    type checker holds them to it)."""

    target: StoreTarget

    @property
    def metadata(self) -> dict[str, Any]: ...

    @property
    def outdated(self) -> bool: ...

    def records(self, ids: list[str]) -> dict[str, dict]: ...

    def records_at(self, paths: list[str]) -> dict[str, dict]: ...

    def records_under(self, folders: list[str]) -> dict[str, dict]: ...

    def unchanged(self, files: list[tuple[str, int, int]]) -> dict[str, str]: ...

    def matching(self, where: dict | None, where_document: dict | None, limit: int | None = None) -> dict[str, dict]: ...

    def matching_ids(self, where: dict | None, where_document: dict | None, limit: int | None = None) -> list[str]: ...

    def count(self) -> int: ...

    def vectors(self) -> tuple[list[str], np.ndarray, list[dict]]: ...

    def vectors_of(self, ids: list[str]) -> tuple[list[str], np.ndarray, list[dict]]: ...

    def query(self, embedding: np.ndarray, k: int, where: dict | None = None,
              where_document: dict | None = None) -> dict: ...

    def lacking(self, key: str, ids: list[str]) -> list[str]: ...

    def upsert(self, ids: list[str], embeddings: np.ndarray, metadatas: list[dict]) -> None: ...

    def merge_metadata(self, changes: dict[str, dict]) -> None: ...

    def add_paths(self, copies: dict[str, list[str]]) -> None: ...

    def enrich(self, values: dict[str, dict]) -> None: ...

    def delete(self, ids: list[str]) -> None: ...

    def failed_before(self, states: dict[str, FileState]) -> dict[str, str | None]: ...

    def remember_failures(self, failed: list[Failure], cleared: list[str]) -> None: ...

    def note_ingestion(self, outcome: dict[str, Any]) -> None: ...

    # The faces in the photos and the people they make (`records.people.PeopleOfStore`).

    def store_faces(self, found: dict[str, FacesFound]) -> None: ...

    def people(self) -> list[Person]: ...

    def person(self, person: str) -> Person: ...

    def name_person(self, person: str, name: str) -> Person: ...

    def merge_people(self, into: str, other: str) -> None: ...

    def move_face(self, face: str, person: str | None) -> None: ...

    def resolve_people(self, given: list[str]) -> list[str]: ...

    def faces_like(self, descriptor: np.ndarray, k: int) -> list[tuple[Person, float]]: ...

    def face(self, face: str) -> FaceRecord: ...

    def faces_of(self, person: str) -> list[FaceRecord]: ...

    def photos_of(self, persons: list[str], most: int) -> list[str] | None: ...

    def all_faces(self) -> AllFaces: ...

    def apply_groups(self, groups: dict[str, int]) -> None: ...


def open_store(target: StoreTarget, model_metadata: dict[str, Any] | None = None, client=None) -> RecordStore:
    """The collection the target names, opened (with `model_metadata`: for writing) in this process: a
    ChromaStore, or a ShardedStore over several servers. `client`: an open client (a list of them, one per
    server, for a sharded target)."""
    if target.sharded:

        return ShardedStore(target, model_metadata, client)
    return ChromaStore(target, model_metadata, client=client)


@contextmanager
def opened_here(target: StoreTarget) -> Iterator[RecordStore | None]:
    """The existing collection, opened by this process for a while; None when there is none yet.

    An embedded folder is opened under its lock and closed again on leaving, so that another process
    (a job's owner actor) can take it next; FolderInUse when another process holds it.
    """
    if target.embedded and not os.path.isdir(target.folder):
        yield None
        return
    with opened_client(target) as client:
        try:
            store = open_store(target, client=client)
        except MissingCollection:
            store = None
        yield store


@contextmanager
def opened_for_writing(target: StoreTarget, model_metadata: dict[str, Any]) -> Iterator[RecordStore]:
    """The collection opened by this process for writing (created when missing, its model checked), as
    `opened_here` opens it."""
    with opened_client(target) as client:
        yield open_store(target, model_metadata, client=client)


@contextmanager
def opened_client(target: StoreTarget) -> Iterator[Any]:
    """A client of this process, under the embedded folder's lock; one per server of a sharded target. (Also for
    the collections that are no user's: the app's keys.)"""
    with ExitStack() as stack:
        if target.sharded:
            yield [stack.enter_context(connect(shard)) for shard in target.shards()]
            return
        if target.embedded:
            stack.enter_context(WriterLock(target.folder))
        yield stack.enter_context(connect(target))
