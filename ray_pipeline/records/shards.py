"""Sharded store: one collection spread over several Chroma servers (`--chroma-url a,b,c`), for a library
larger than one server holds (cluster/README.md, "A store that grows", says why this and not Chroma's
distributed deployment).

Each record lives on the shard its id's first 32 bits pick (`shard_of`; the id is a SHA-256 of the
content, so the shards fill evenly, and one content always lands on one shard: a write stays idempotent).
A read by id goes to that shard; a read by path or filter asks every shard at once and merges; a search
asks each shard for its k nearest and keeps the k nearest of all. The remembered failures are routed the
same way, by the id of their path. The shard count is fixed when the collection is created: each server's
collection records `shards` and its own `shard`, and a list of servers of another length or in another
order is refused before anything is written. The faces and people found in the photos live beside the first shard.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

import numpy as np

from ray_pipeline.files.state import FileState
from ray_pipeline.records.chroma import MODEL_KEYS, ChromaStore, check_model, joined, unchanged_among
from ray_pipeline.records.connection import connect
from ray_pipeline.records.errors import MissingCollection, StoreError, WrongServers
from ray_pipeline.records.failures import Failure, failure_id
from ray_pipeline.records.people import PeopleBook, PeopleOfStore
from ray_pipeline.records.target import SHARD_KEY, ShardPlace, StoreTarget

T = TypeVar("T")
R = TypeVar("R")


def shard_of(record_id: str, shards: int) -> int:
    """The shard that decides for a content: by its id's first 32 bits (a SHA-256: evenly spread)."""
    return int(record_id[:8], 16) % shards


def at_once(calls: list[Callable[[], R]]) -> list[R]:
    """The calls' answers, in order, the calls run in threads of their own (each waits on its server), so
    that the time taken is the slowest call's, not the sum."""
    if len(calls) <= 1:
        return [call() for call in calls]
    with ThreadPoolExecutor(len(calls)) as pool:
        futures = [pool.submit(call) for call in calls]
        return [future.result() for future in futures]


def merged(answers: Iterable[dict[str, T]]) -> dict[str, T]:
    """The shards' {key: value} answers as one (no key is on two shards)."""
    return {key: value for answer in answers for key, value in answer.items()}


def _existing(target: StoreTarget, client: Any, place: ShardPlace) -> ChromaStore | None:
    """The shard's collection, its place checked; None when the server has none."""
    try:
        return ChromaStore(target, client=client, place=place)
    except MissingCollection:
        return None


class ShardedStore(PeopleOfStore):
    """One collection over several servers, a RecordStore: one ChromaStore per server, records routed by id.

    With `model_metadata` it is opened for writing: a shard missing on its server is created there, but
    only while no shard holds a record yet (a collection created halfway); one holding records beside a
    missing one means a server that is not one of its shards, refused. `clients`: one open client per server.
    """

    def __init__(self, target: StoreTarget, model_metadata: dict[str, Any] | None = None, clients: list | None = None):
        self.target = target
        targets = target.shards()
        places = [ShardPlace(index, len(targets)) for index in range(len(targets))]
        clients = clients or at_once([partial(connect, shard) for shard in targets])
        opened = at_once([partial(_existing, *shard) for shard in zip(targets, clients, places)])
        existing = [store for store in opened if store is not None]
        missing = [shard.url for shard, store in zip(targets, opened) if store is None]
        self._check(existing, missing, model_metadata)
        if model_metadata is None:
            self.shards = existing
        else:  # created where missing, brought up to date where older
            self.shards = at_once([partial(ChromaStore, shard, model_metadata, client, place)
                                   for shard, client, place in zip(targets, clients, places)])

    def _check(self, existing: list[ChromaStore], missing: list[str | None], model_metadata: dict[str, Any] | None) -> None:
        """Before anything is written: every shard there, or none holding records yet; one model on all."""
        name = self.target.collection
        if missing and any(store.count() for store in existing):
            raise WrongServers(
                f"collection {name!r} holds records on {', '.join(str(s.target.url) for s in existing)} but is missing "
                f"on {', '.join(map(str, missing))}: give --chroma-url (CHROMA_URL) the servers it was created with, "
                "in the same order")
        if missing and model_metadata is None:
            raise MissingCollection(f"no collection {name!r} on {', '.join(map(str, missing))} (of {self.target.describe()})")
        models = {tuple(store.metadata.get(key) for key in MODEL_KEYS) for store in existing}
        if len(models) > 1:
            raise StoreError(f"the shards of collection {name!r} hold vectors of different models: "
                             f"{', '.join(sorted(map(str, models)))}")
        if existing and model_metadata is not None:
            check_model(name, existing[0].metadata, model_metadata)

    def _split(self, items: Iterable[T], key: Callable[[T], str]) -> list[list[T]]:
        """The items, a list per shard: each on the shard its id (`key`) routes it to."""
        parts: list[list[T]] = [[] for _ in self.shards]
        for item in items:
            parts[shard_of(key(item), len(self.shards))].append(item)
        return parts

    def _each(self, call: Callable[..., R], *parts: list[list]) -> list[R]:
        """`call(shard, its part of each of the parts)` on every shard that has something, all at once."""
        return at_once([partial(call, store, *own) for store, *own in zip(self.shards, *parts) if any(own)])

    def _everywhere(self, call: Callable[..., R], *args) -> list[R]:
        """`call(shard, *args)` on every shard, all at once."""
        return at_once([partial(call, store, *args) for store in self.shards])

    @property
    def metadata(self) -> dict[str, Any]:
        """The collection's metadata (the first shard's, less its own index: the model is every shard's)."""
        metadata = self.shards[0].metadata
        metadata.pop(SHARD_KEY, None)
        return metadata

    @property
    def outdated(self) -> bool:
        return any(store.outdated for store in self.shards)

    def records(self, ids: list[str]) -> dict[str, dict]:
        return merged(self._each(ChromaStore.records, self._split(ids, str)))

    def records_at(self, paths: list[str]) -> dict[str, dict]:
        return merged(self._everywhere(ChromaStore.records_at, paths))

    def records_under(self, folders: list[str]) -> dict[str, dict]:
        return merged(self._everywhere(ChromaStore.records_under, folders))

    def unchanged(self, files: list[tuple[str, int, int]]) -> dict[str, str]:
        """As ChromaStore's, over all shards at once: two records of one path may lie on two shards."""
        return unchanged_among(files, self.records_at([path for path, _, _ in files]))

    def matching(self, where: dict | None, where_document: dict | None, limit: int | None = None) -> dict[str, dict]:
        found = merged(self._everywhere(ChromaStore.matching, where, where_document, limit))
        return dict(list(found.items())[:limit]) if limit is not None else found

    def matching_ids(self, where: dict | None, where_document: dict | None, limit: int | None = None) -> list[str]:
        found = [i for ids in self._everywhere(ChromaStore.matching_ids, where, where_document, limit) for i in ids]
        return found[:limit] if limit is not None else found

    def count(self) -> int:
        return sum(self._everywhere(ChromaStore.count))

    def vectors(self) -> tuple[list[str], np.ndarray, list[dict]]:
        return joined(self._everywhere(ChromaStore.vectors))

    def vectors_of(self, ids: list[str]) -> tuple[list[str], np.ndarray, list[dict]]:
        return joined(self._each(ChromaStore.vectors_of, self._split(ids, str)))

    def query(self, embedding: np.ndarray, k: int, where: dict | None = None, where_document: dict | None = None) -> dict:
        """The k nearest of all: each shard's k nearest, merged by distance, in the shape Chroma answers."""
        hits = sorted(((distance, record_id, metadata)
                       for found in self._everywhere(ChromaStore.query, embedding, k, where, where_document)
                       for record_id, metadata, distance in zip(found["ids"][0], found["metadatas"][0], found["distances"][0])),
                      key=lambda hit: (hit[0], hit[1]))[:k]
        return {"ids": [[hit[1] for hit in hits]], "distances": [[hit[0] for hit in hits]],
                "metadatas": [[hit[2] for hit in hits]]}

    def lacking(self, key: str, ids: list[str]) -> list[str]:
        return [i for found in self._each(lambda store, part: store.lacking(key, part), self._split(ids, str)) for i in found]

    def upsert(self, ids: list[str], embeddings: np.ndarray, metadatas: list[dict]) -> None:
        def write(store: ChromaStore, rows: list[int]) -> None:
            store.upsert([ids[row] for row in rows], embeddings[rows], [metadatas[row] for row in rows])

        self._each(write, self._split(range(len(ids)), ids.__getitem__))

    def merge_metadata(self, changes: dict[str, dict]) -> None:
        self._each(lambda store, part: store.merge_metadata(dict(part)), self._split(changes.items(), _first))

    def add_paths(self, copies: dict[str, list[str]]) -> None:
        self._each(lambda store, part: store.add_paths(dict(part)), self._split(copies.items(), _first))

    def enrich(self, values: dict[str, dict]) -> None:
        self._each(lambda store, part: store.enrich(dict(part)), self._split(values.items(), _first))

    def delete(self, ids: list[str]) -> None:
        self._each(ChromaStore.delete, self._split(ids, str))
        self.forget_faces(ids)

    def _book(self, create: bool) -> PeopleBook | None:
        """The faces and people of the whole collection live beside its first shard."""
        return self.shards[0]._book(create)

    def failed_before(self, states: dict[str, FileState]) -> dict[str, str | None]:
        return merged(self._each(lambda store, part: store.failed_before(dict(part)),
                                 self._split(states.items(), lambda item: failure_id(item[0]))))

    def note_ingestion(self, outcome: dict[str, Any]) -> None:
        self.shards[0].note_ingestion(outcome)  # where `collections show` reads the collection's metadata

    def remember_failures(self, failed: list[Failure], cleared: list[str]) -> None:
        self._each(ChromaStore.remember_failures, self._split(failed, lambda failure: failure_id(failure.path)),
                   self._split(cleared, failure_id))


def _first(pair: tuple[str, Any]) -> str:
    return pair[0]
