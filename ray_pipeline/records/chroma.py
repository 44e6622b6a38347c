"""Chroma: one collection on one Chroma (an embedded folder or a server): connecting, retrying a server that
does not answer, the embedded folder's lock, and the collection's records."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from ray_pipeline.core import record_keys as keys
from ray_pipeline.core.paths import is_within, path_text, recorded_path
from ray_pipeline.files.state import FileState
from ray_pipeline.records.connection import connect, with_retries
from ray_pipeline.records.enrichments import (
    DOCUMENT_KEYS,
    LAST_INGESTION_KEY,
    LAYOUT_KEY,
    RECORD_LAYOUT,
    derived_keys,
    document_of,
)
from ray_pipeline.records.errors import MissingCollection, StoreError
from ray_pipeline.records.failures import Failure, FailureMemory
from ray_pipeline.records.people import PeopleBook, PeopleOfStore
from ray_pipeline.records.target import ShardPlace, StoreTarget, check_place

logger = logging.getLogger(__name__)
SETTLE_TRIES = 5  # reads of records just enriched, to write again what a writer beside it left stale
# Keys that must agree between a collection and the model writing or searching it.
MODEL_KEYS = ("model", "weights")


def same_model(recorded: dict, wanted: dict) -> bool:
    """Whether two records of a model (a collection's metadata, a model's identity) name the very same model."""
    return all(recorded.get(key) == wanted.get(key) for key in MODEL_KEYS)


def check_model(name: str, recorded: dict, wanted: dict) -> None:
    """Refuse to mix vectors of two models in one collection."""
    if not same_model(recorded, wanted):
        raise StoreError(
            f"collection {name!r} holds vectors from model {recorded.get('model')} "
            f"(weights {recorded.get('weights')}); this run uses {wanted.get('model')} "
            f"(weights {wanted.get('weights')}); use another --collection or the same model"
        )


def unchanged_among(files: list[tuple[str, int, int]], at_paths: dict[str, dict]) -> dict[str, str]:
    """`unchanged` from the records found at the files' paths (`records_at`, of one store or of all shards)."""
    wanted = {path: (size, mtime_ns) for path, size, mtime_ns in files}
    matches: dict[str, list[str]] = {}
    for record_id, metadata in at_paths.items():
        path = recorded_path(metadata) or ""  # records_at finds only records with a path
        if wanted[path] == (metadata.get(keys.FILE_SIZE), metadata.get(keys.MTIME_NS)):
            matches.setdefault(path, []).append(record_id)
    return {path: ids[0] for path, ids in matches.items() if len(ids) == 1}


Vectors = tuple[list[str], np.ndarray, list[dict]]  # ids, their vectors (float32 rows), their metadata


def joined(parts: Iterable[Vectors]) -> Vectors:
    """Parts of `vectors` (pages of a collection, or shards) as one."""
    ids: list[str] = []
    vectors: list[np.ndarray] = []
    metadatas: list[dict] = []
    for part_ids, part_vectors, part_metadatas in parts:
        if part_ids:
            ids += part_ids
            vectors.append(part_vectors)
            metadatas += part_metadatas
    return ids, np.concatenate(vectors) if ids else np.zeros((0, 0), np.float32), metadatas


def _stale(metadata: dict, document: str) -> bool:
    """Whether a record's derived keys or its document are not those its keys make (a writer beside it wrote last)."""
    expected = document_of(metadata)
    return (bool(expected.strip()) and document != expected) or any(
        metadata.get(key) != value for key, value in derived_keys(metadata).items())


class ChromaStore(PeopleOfStore):
    """One open collection. With `model_metadata` it is opened for writing (created if missing).

    `client` shares an already open client (the embedded owner's); otherwise one is opened here. `place`:
    which shard of a sharded collection this server holds (checked against what the collection records).
    """

    def __init__(self, target: StoreTarget, model_metadata: dict[str, Any] | None = None, client=None,
                 place: ShardPlace = ShardPlace()):
        self.target = target
        self.client = client or connect(target)
        self._people_book: PeopleBook | None = None
        if model_metadata is None:
            self.collection = self._existing_collection()
        else:
            self.collection = self.client.get_or_create_collection(
                target.collection,
                metadata={**model_metadata, LAYOUT_KEY: RECORD_LAYOUT, **place.metadata()},
                configuration={"hnsw": {"space": "cosine"}},
                embedding_function=None,
            )
        check_place(target, self.collection.metadata or {}, place)
        if model_metadata is not None:
            check_model(target.collection, self.collection.metadata or {}, model_metadata)
        self.max_batch = self.client.get_max_batch_size()
        if model_metadata is not None and self.outdated:
            self._bring_up_to_date()

    @property
    def outdated(self) -> bool:
        """Whether the records were written before the keys filters need (an older layout)."""
        return self.metadata.get(LAYOUT_KEY, 1) < RECORD_LAYOUT

    def _bring_up_to_date(self) -> None:
        """Give every record the keys derived from the keys it holds (`enrichments.derived_keys`; nothing
        is embedded again, no file read), then record the layout: a collection written before them works with
        them after one ingestion."""
        logger.info("collection %r: giving its %d records the keys of layout %d (once)", self.target.collection,
                    self.count(), RECORD_LAYOUT)
        for batch in self._pages(include=("metadatas", "embeddings")):
            metadatas = [dict(m or {}) for m in batch["metadatas"]]
            self._rewrite(batch["ids"], batch["embeddings"], metadatas, [{} for _ in metadatas])
        with_retries(self.target, self.collection.modify, metadata={**self.metadata, LAYOUT_KEY: RECORD_LAYOUT})

    def _rewrite(self, ids: list[str], embeddings, metadatas: list[dict], changes: list[dict]) -> None:
        """Write these records' `changes`, the keys derived from their metadata (`metadatas`, the changes in it), and
        the document of those whose enrichments hold words. Only those keys are written: Chroma merges them into
        what the record holds, so a key another writer set meanwhile is kept. Chroma embeds a document written
        without its vector, so the vector goes along."""
        documents = [document_of(m) for m in metadatas]
        metadatas = [{**change, **derived_keys(m)} for m, change in zip(metadatas, changes)]
        worded = [row for row, document in enumerate(documents) if document.strip()]
        plain = [row for row, document in enumerate(documents) if not document.strip()]
        if worded:
            with_retries(self.target, self.collection.update, ids=[ids[row] for row in worded],
                         embeddings=[embeddings[row] for row in worded], metadatas=[metadatas[row] for row in worded],
                         documents=[documents[row] for row in worded])
        if plain:
            with_retries(self.target, self.collection.update, ids=[ids[row] for row in plain],
                         metadatas=[metadatas[row] for row in plain])

    def _existing_collection(self):
        try:
            return self.client.get_collection(self.target.collection, embedding_function=None)
        except Exception:
            names = sorted(c.name for c in self.client.list_collections())
            raise MissingCollection(
                f"no collection {self.target.collection!r} in {self.target.describe()} (collections: {names})"
            ) from None

    @property
    def metadata(self) -> dict[str, Any]:
        return dict(self.collection.metadata or {})

    def records(self, ids: list[str]) -> dict[str, dict]:
        """{id: metadata} of those of these ids that are stored."""
        found: dict[str, dict] = {}
        for start in range(0, len(ids), self.max_batch):
            batch = with_retries(self.target, self.collection.get, ids=ids[start : start + self.max_batch], include=["metadatas"])
            found.update((i, dict(metadata or {})) for i, metadata in zip(batch["ids"], batch["metadatas"]))
        return found

    def unchanged(self, files: list[tuple[str, int, int]]) -> dict[str, str]:
        """{path: id} for the (path, size, mtime_ns) whose stored record has that very path, size and mtime.

        A path that two records match (a file edited in place with its mtime put back, then re-hashed)
        is left out: only reading it tells which record is its content.
        """
        return unchanged_among(files, self.records_at([path for path, _, _ in files]))

    def upsert(self, ids: list[str], embeddings: np.ndarray, metadatas: list[dict]) -> None:
        """Write records by id, with their documents (`enrichments.document_of`), in batches Chroma accepts;
        writing a record twice leaves one."""
        for start in range(0, len(ids), self.max_batch):
            end = start + self.max_batch
            with_retries(self.target, self.collection.upsert, ids=ids[start:end], embeddings=embeddings[start:end],
                         metadatas=metadatas[start:end], documents=[document_of(m) for m in metadatas[start:end]])

    def count(self) -> int:
        """How many records the collection holds."""
        return with_retries(self.target, self.collection.count)

    def query(self, embedding: np.ndarray, k: int, where: dict | None = None, where_document: dict | None = None) -> dict:
        """The k records nearest the embedding among those the filters (`where`, `where_document`) let through."""
        return with_retries(self.target, self.collection.query, query_embeddings=[embedding], n_results=k, where=where,
                            where_document=where_document, include=["metadatas", "distances"])

    def vectors(self) -> tuple[list[str], np.ndarray, list[dict]]:
        """Every record's id, unit vector (float32 rows) and metadata."""
        return joined((batch["ids"], np.asarray(batch["embeddings"], np.float32).reshape(len(batch["ids"]), -1),
                       [dict(m or {}) for m in batch["metadatas"]])
                      for batch in self._pages(include=("metadatas", "embeddings")) if batch["ids"])

    def vectors_of(self, ids: list[str]) -> tuple[list[str], np.ndarray, list[dict]]:
        """These stored records' ids, unit vectors and metadata."""
        return joined((batch["ids"], np.asarray(batch["embeddings"], np.float32).reshape(len(batch["ids"]), -1),
                       [dict(m or {}) for m in batch["metadatas"]])
                      for batch in (with_retries(self.target, self.collection.get, ids=ids[start : start + self.max_batch],
                                                 include=["metadatas", "embeddings"])
                                    for start in range(0, len(ids), self.max_batch)) if batch["ids"])

    def _pages(self, where: dict | None = None, where_document: dict | None = None,
               include: tuple[str, ...] = ("metadatas",)) -> Iterator[dict]:
        """Every record the filters let through (all of them with none), with its metadata: Chroma's `get`
        answers, a page it accepts at a time."""
        offset = 0
        while True:
            batch = with_retries(self.target, self.collection.get, where=where, where_document=where_document,
                                 include=list(include), limit=self.max_batch, offset=offset)
            yield batch
            if len(batch["ids"]) < self.max_batch:
                return
            offset += self.max_batch

    def matching(self, where: dict | None, where_document: dict | None, limit: int | None = None) -> dict[str, dict]:
        """{id: metadata} of every record the filters let through (at most `limit`, in one call)."""
        if limit is not None:
            found = with_retries(self.target, self.collection.get, where=where, where_document=where_document,
                                 include=["metadatas"], limit=limit)
            return {i: dict(m or {}) for i, m in zip(found["ids"], found["metadatas"])}
        return {i: dict(m or {}) for batch in self._pages(where, where_document) for i, m in zip(batch["ids"], batch["metadatas"])}

    def matching_ids(self, where: dict | None, where_document: dict | None, limit: int | None = None) -> list[str]:
        """The ids of the records the filters let through (at most `limit`): no metadata read, so Chroma answers
        several times faster than `matching` (a listing's probe for a month that holds photos)."""
        if limit is not None:
            return with_retries(self.target, self.collection.get, where=where, where_document=where_document,
                                include=[], limit=limit)["ids"]
        return [i for batch in self._pages(where, where_document, include=()) for i in batch["ids"]]

    def lacking(self, key: str, ids: list[str]) -> list[str]:
        """Which of these stored records have no `key` yet (a costly enrichment not made for them; "", a text
        read and found empty, is made)."""
        return [i for i, metadata in self.records(ids).items() if metadata.get(key) is None]

    def merge_metadata(self, changes: dict[str, dict]) -> None:
        """Set these keys in these stored records' metadata, keeping everything else they hold (a change to a
        key the document is made of, a moved file's name, writes the document again)."""
        if any(DOCUMENT_KEYS & set(change) for change in changes.values()):
            self.enrich(changes)
            return
        found = self.records(list(changes))
        if found:  # these keys alone: Chroma merges them, so what another writer set meanwhile stays
            with_retries(self.target, self.collection.update, ids=list(found), metadatas=[changes[i] for i in found])

    def add_paths(self, copies: dict[str, list[str]]) -> None:
        """Each record learns these paths of files that hold its bytes (`paths`); one it knows is not
        written again."""
        changes = {}
        for record_id, metadata in self.records(list(copies)).items():
            known = keys.paths_of(metadata)
            paths = sorted({*known, *(path_text(path) for path in copies[record_id])})
            if paths != sorted(known):
                changes[record_id] = {keys.PATHS: paths}
        if changes:
            self.merge_metadata(changes)

    def enrich(self, values: dict[str, dict]) -> None:
        """Each record's enrichments ({id: {key: value}}) into its metadata, with the keys derived from them,
        and its document made again from their words."""
        ids = list(values)
        for start in range(0, len(ids), self.max_batch):
            found = with_retries(self.target, self.collection.get, ids=ids[start : start + self.max_batch],
                                 include=["metadatas", "embeddings"])
            if found["ids"]:
                self._rewrite(found["ids"], found["embeddings"],
                              [{**(m or {}), **values[i]} for i, m in zip(found["ids"], found["metadatas"])],
                              [values[i] for i in found["ids"]])
            self._settle(ids[start : start + self.max_batch])

    def _settle(self, ids: list[str]) -> None:
        """Two writers enriching one record at once (a caption, a text) each keep their keys, but each wrote the
        derived keys and the document from what it read: read again, and write them from what is stored where
        they differ, until none does (the last writer to read sees every key)."""
        for _ in range(SETTLE_TRIES):
            found = with_retries(self.target, self.collection.get, ids=ids, include=["metadatas", "embeddings", "documents"])
            stale = [row for row, (m, document) in enumerate(zip(found["metadatas"], found["documents"]))
                     if _stale(m or {}, document or "")]
            if not stale:
                return
            metadatas = [dict(found["metadatas"][row] or {}) for row in stale]
            self._rewrite([found["ids"][row] for row in stale], [found["embeddings"][row] for row in stale], metadatas,
                          [{} for _ in stale])

    def note_ingestion(self, outcome: dict[str, Any]) -> None:
        """The collection keeps what its last ingestion did (`collections show` reports it)."""
        with_retries(self.target, self.collection.modify,
                     metadata={**self.metadata, LAST_INGESTION_KEY: json.dumps(outcome, sort_keys=True)})

    def records_at(self, paths: list[str]) -> dict[str, dict]:
        """{id: metadata} of the records whose file is at one of these paths."""
        wanted, found = set(paths), dict[str, dict]()
        texts = sorted({path_text(path) for path in paths})
        for start in range(0, len(texts), self.max_batch):
            batch = with_retries(self.target, self.collection.get, where={"path": {"$in": texts[start : start + self.max_batch]}},
                                 include=["metadatas"])
            found.update((i, dict(m or {})) for i, m in zip(batch["ids"], batch["metadatas"]) if recorded_path(m or {}) in wanted)
        return found

    def records_under(self, folders: list[str]) -> dict[str, dict]:
        """{id: metadata} of the records whose file lies in one of these folders: a scan of the collection."""
        roots = tuple(folders)
        return {i: metadata for i, metadata in self.matching(None, None).items()
                if is_within(recorded_path(metadata) or "", roots)}

    def delete(self, ids: list[str]) -> None:
        """These records go, and the faces found in their photos."""
        for start in range(0, len(ids), self.max_batch):
            with_retries(self.target, self.collection.delete, ids=ids[start : start + self.max_batch])
        self.forget_faces(ids)

    def _book(self, create: bool) -> PeopleBook | None:
        """The collection's faces and people (None when it has none yet and `create` is false), kept once found:
        opening its two collections took a `person` filter 10 to 20 ms a search."""
        if self._people_book is None:
            self._people_book = PeopleBook.of(self.client, self.target, self.max_batch, create)
        return self._people_book

    def _failures(self, create: bool) -> FailureMemory | None:
        """The collection's remembered failures (None when there are none and `create` is false)."""
        return FailureMemory.of(self.client, self.target, self.max_batch, create)

    def failed_before(self, states: dict[str, FileState]) -> dict[str, str | None]:
        """{path: reason} of those of these files that failed before in this very state, and {path: None}
        of those that failed before in another state (changed since)."""
        memory = self._failures(create=False) if states else None
        return memory.failed_before(states) if memory is not None else {}

    def remember_failures(self, failed: list[Failure], cleared: list[str]) -> None:
        """Remember these failures, and forget what was remembered of the `cleared` paths (read fine now,
        or gone)."""
        memory = self._failures(create=bool(failed)) if failed or cleared else None
        if memory is not None:
            memory.remember(failed, cleared)
