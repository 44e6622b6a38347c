"""Store: the Chroma collection that holds one record per distinct photo, embedded or on a server."""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from typing import Any, Protocol, TypeVar
from urllib.parse import urlparse

import numpy as np

from ray_pipeline import record_keys as keys
from ray_pipeline.discover import is_within
from ray_pipeline.errors import UserFacingError, user_facing_reason
from ray_pipeline.failures import Failure, FileState, failure_id, failures_collection, is_failures_collection
from ray_pipeline.file_names import path_fields, path_text, recorded_path
from ray_pipeline.filters import LAYOUT_KEY, RECORD_LAYOUT, caption_document, filter_keys

logger = logging.getLogger(__name__)
LOCK_FILE = "ray_pipeline.lock"
# Chroma's rule for collection names, checked where a name comes in (the CLI, the HTTP API).
COLLECTION_NAME = r"[a-zA-Z0-9][a-zA-Z0-9._-]{1,510}[a-zA-Z0-9]"
# A Chroma server that stops answering is retried with backoff (0.5 s, 1 s, 2 s, ... 15.5 s in all), then
# the job stops with a clear error; what was written stays written, and a re-run stores the rest.
SERVER_ATTEMPTS = 6
FIRST_BACKOFF_S = 0.5
# Keys that must agree between a collection and the model writing or searching it.
MODEL_KEYS = ("model", "weights")
# Keys of a sharded collection's metadata on each server: how many shards, and which one this is.
SHARDS_KEY, SHARD_KEY = "shards", "shard"


class StoreError(UserFacingError):
    """The collection cannot be used as asked; the message says why."""


class MissingCollection(StoreError):
    """The store answered and has no such collection: an answer, never retried."""


class WrongServers(StoreError):
    """The servers given are not a list of servers, or not the shards the collection was created on: an
    answer, never retried (a wrong list must never route a record to another shard)."""


class Unreachable(StoreError):
    """A Chroma server did not answer: worth trying again."""


class FolderInUse(StoreError):
    """Another process holds the embedded Chroma folder (a Serve app's owner, or another job)."""


@dataclass(frozen=True)
class StoreTarget:
    """Where the collection lives: a local folder (embedded Chroma) or a Chroma server URL."""

    collection: str
    path: str | None = None
    url: str | None = None

    @property
    def embedded(self) -> bool:
        return self.url is None

    @property
    def urls(self) -> tuple[str, ...]:
        """The servers, in the order that routes records: several (`a,b,c`) hold a sharded collection."""
        if self.url is None:
            return ()
        urls = tuple(part.strip() for part in self.url.split(","))
        if "" in urls:
            raise WrongServers(f"Chroma server list {self.url!r}: an empty URL in it (a stray comma?)")
        if len(urls) > 1 and len({server_address(url) for url in urls}) < len(urls):  # `a:8000` is `http://a:8000/`
            raise WrongServers(f"Chroma server list {self.url!r}: a server named twice (each shard needs its own server)")
        return urls

    @property
    def sharded(self) -> bool:
        return len(self.urls) > 1

    def shards(self) -> list[StoreTarget]:
        """One target per server of a sharded collection, in routing order."""
        return [replace(self, url=url) for url in self.urls]

    @property
    def folder(self) -> str:
        """The embedded Chroma folder."""
        if self.path is None:
            raise StoreError(f"{self.describe()} has no folder")
        return self.path

    def describe(self) -> str:
        if self.sharded:
            return f"the {len(self.urls)} Chroma servers {self.url}"
        return f"Chroma server {self.url}" if self.url else f"embedded Chroma at {self.path}"

    def cli_args(self) -> list[str]:
        """The CLI's options that name this collection and where it lives, for a command line another
        process runs (the Serve app's ingestion jobs)."""
        where = ["--chroma-url", self.url] if self.url else ["--chroma-path", self.folder]
        return ["--collection", self.collection, *where]


def server_address(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of a Chroma server URL (`http://` and port 8000 when left out)."""
    parsed = urlparse(url if "://" in url else f"http://{url}")
    if not parsed.hostname:
        raise StoreError(f"not a Chroma server URL: {url}")
    return parsed.scheme, parsed.hostname.lower(), parsed.port or (443 if parsed.scheme == "https" else 8000)


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


class _WriterLock:
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

    def __enter__(self) -> "_WriterLock":
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


@dataclass(frozen=True)
class ShardPlace:
    """Which shard of how many a collection on one server is; an unsharded collection is shard 0 of 1."""

    index: int = 0
    count: int = 1

    @classmethod
    def recorded(cls, metadata: dict) -> ShardPlace:
        return cls(metadata.get(SHARD_KEY, 0), metadata.get(SHARDS_KEY, 1))

    def metadata(self) -> dict[str, int]:
        """What a new collection records of its place (nothing when unsharded, as before shards existed)."""
        return {SHARDS_KEY: self.count, SHARD_KEY: self.index} if self.count > 1 else {}

    def describe(self) -> str:
        return f"shard {self.index} of {self.count} (counting from 0)" if self.count > 1 else "not sharded (one server)"


def check_place(target: StoreTarget, recorded: dict, wanted: ShardPlace) -> None:
    """Refuse a collection whose recorded shard is not the one this list of servers makes it: a reordered,
    shortened or lengthened list would route records to the wrong server."""
    found = ShardPlace.recorded(recorded)
    if found != wanted:
        raise WrongServers(
            f"collection {target.collection!r} on {target.describe()} is {found.describe()}, but the servers given "
            f"make it {wanted.describe()}: give --chroma-url (CHROMA_URL) the servers it was created with, in the "
            "same order, or use another --collection")


def check_model(name: str, recorded: dict, wanted: dict) -> None:
    """Refuse to mix vectors of two models in one collection."""
    if any(recorded.get(key) != wanted.get(key) for key in MODEL_KEYS):
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


class ChromaStore:
    """One open collection. With `model_metadata` it is opened for writing (created if missing).

    `client` shares an already open client (the embedded owner's); otherwise one is opened here. `place`:
    which shard of a sharded collection this server holds (checked against what the collection records).
    """

    def __init__(self, target: StoreTarget, model_metadata: dict[str, Any] | None = None, client=None,
                 place: ShardPlace = ShardPlace()):
        self.target = target
        self.client = client or connect(target)
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
        """Give every record the keys filters need, from the keys it holds (nothing is embedded again),
        then record the layout: a collection written before filters works with them after one ingestion."""
        logger.info("collection %r: giving its %d records the keys search filters need (once)", self.target.collection,
                    self.count())
        for batch in self._pages():
            metadatas = [dict(m or {}) for m in batch["metadatas"]]
            with_retries(self.target, self.collection.update, ids=batch["ids"],
                         metadatas=[{**m, **filter_keys(m)} for m in metadatas])
            self._write_captions({i: m[keys.CAPTION] for i, m in zip(batch["ids"], metadatas) if m.get(keys.CAPTION)})
        with_retries(self.target, self.collection.modify, metadata={**self.metadata, LAYOUT_KEY: RECORD_LAYOUT})

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
        """Write records by id, in batches Chroma accepts; writing a record twice leaves one."""
        for start in range(0, len(ids), self.max_batch):
            end = start + self.max_batch
            with_retries(self.target, self.collection.upsert, ids=ids[start:end], embeddings=embeddings[start:end],
                         metadatas=metadatas[start:end])

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

    def matching(self, where: dict | None, where_document: dict | None) -> dict[str, dict]:
        """{id: metadata} of every record the filters let through."""
        return {i: dict(m or {}) for batch in self._pages(where, where_document) for i, m in zip(batch["ids"], batch["metadatas"])}

    def uncaptioned(self, ids: list[str]) -> list[str]:
        """Which of these stored records have no caption yet."""
        return [i for i, metadata in self.records(ids).items() if not metadata.get(keys.CAPTION)]

    def merge_metadata(self, changes: dict[str, dict]) -> None:
        """Set these keys in these stored records' metadata, keeping everything else they hold."""
        found = self.records(list(changes))
        if found:
            with_retries(self.target, self.collection.update, ids=list(found),
                         metadatas=[{**metadata, **changes[i]} for i, metadata in found.items()])

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

    def set_captions(self, ids: list[str], captions: list[str]) -> None:
        self._write_captions(dict(zip(ids, captions)))

    def _write_captions(self, captions: dict[str, str]) -> None:
        """Each caption into its stored record: the metadata's `caption` as written, and the document as its
        words (for filters). Chroma embeds a document written without its vector, so the vector goes along."""
        ids = list(captions)
        for start in range(0, len(ids), self.max_batch):
            found = with_retries(self.target, self.collection.get, ids=ids[start : start + self.max_batch],
                                 include=["metadatas", "embeddings"])
            if found["ids"]:
                with_retries(self.target, self.collection.update, ids=found["ids"], embeddings=found["embeddings"],
                             metadatas=[{**(m or {}), keys.CAPTION: captions[i], keys.HAS_CAPTION: True}
                                        for i, m in zip(found["ids"], found["metadatas"])],
                             documents=[caption_document(captions[i]) for i in found["ids"]])

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
        for start in range(0, len(ids), self.max_batch):
            with_retries(self.target, self.collection.delete, ids=ids[start : start + self.max_batch])

    def _failures(self, create: bool):
        """The companion collection of failed files (None when there is none and `create` is false)."""
        name = failures_collection(self.target.collection)
        if create:
            return with_retries(self.target, self.client.get_or_create_collection, name, embedding_function=None,
                                metadata={"failures_of": self.target.collection})
        try:
            return self.client.get_collection(name, embedding_function=None)
        except Exception:  # none yet
            return None

    def failed_before(self, states: dict[str, FileState]) -> dict[str, str | None]:
        """{path: reason} of those of these files that failed before in this very state, and {path: None}
        of those that failed before in another state (changed since)."""
        failures = self._failures(create=False) if states else None
        if failures is None:
            return {}
        paths = {failure_id(path): path for path in states}
        ids, found = list(paths), {}
        for start in range(0, len(ids), self.max_batch):
            batch = with_retries(self.target, failures.get, ids=ids[start : start + self.max_batch], include=["metadatas"])
            for failure, metadata in zip(batch["ids"], batch["metadatas"]):
                state = states[paths[failure]]
                same = (metadata.get("file_size"), metadata.get("mtime_ns"), metadata.get("ctime_ns")) == (
                    state.size, state.mtime_ns, state.ctime_ns)
                found[paths[failure]] = metadata.get("reason", "") if same else None
        return found

    def remember_failures(self, failed: list[Failure], cleared: list[str]) -> None:
        """Remember these failures, and forget what was remembered of the `cleared` paths (read fine now,
        or gone)."""
        failures = self._failures(create=bool(failed)) if failed or cleared else None
        if failures is None:
            return
        forget = [failure_id(path) for path in cleared]
        for start in range(0, len(forget), self.max_batch):
            with_retries(self.target, failures.delete, ids=forget[start : start + self.max_batch])
        for start in range(0, len(failed), self.max_batch):
            batch = failed[start : start + self.max_batch]
            with_retries(self.target, failures.upsert, ids=[failure_id(f.path) for f in batch], embeddings=[[1.0]] * len(batch),
                         metadatas=[{**path_fields(f.path), "reason": f.reason, "file_size": f.state.size,
                                     "mtime_ns": f.state.mtime_ns, "ctime_ns": f.state.ctime_ns} for f in batch])


def open_store(target: StoreTarget, model_metadata: dict[str, Any] | None = None, client=None) -> RecordStore:
    """The collection the target names, opened (with `model_metadata`: for writing) in this process: a
    ChromaStore, or a ShardedStore over several servers. `client`: an open client (a list of them, one per
    server, for a sharded target)."""
    if target.sharded:
        from ray_pipeline.sharded_store import ShardedStore

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
    with _client_here(target) as client:
        try:
            store = open_store(target, client=client)
        except MissingCollection:
            store = None
        yield store


@contextmanager
def opened_for_writing(target: StoreTarget, model_metadata: dict[str, Any]) -> Iterator[RecordStore]:
    """The collection opened by this process for writing (created when missing, its model checked), as
    `opened_here` opens it."""
    with _client_here(target) as client:
        yield open_store(target, model_metadata, client=client)


@contextmanager
def _client_here(target: StoreTarget) -> Iterator[Any]:
    """A client of this process, under the embedded folder's lock; one per server of a sharded target."""
    with ExitStack() as stack:
        if target.sharded:
            yield [stack.enter_context(connect(shard)) for shard in target.shards()]
            return
        if target.embedded:
            stack.enter_context(_WriterLock(target.folder))
        yield stack.enter_context(connect(target))


def list_collections(client) -> list[dict]:
    """Each collection's name, record count and model, for listings."""
    listed = []
    for collection in sorted(client.list_collections(), key=lambda c: c.name):
        if is_failures_collection(collection.name):
            continue  # a collection's companion, not one of the user's
        metadata = collection.metadata or {}
        listed.append({"name": collection.name, "count": collection.count(), "model": metadata.get("model"),
                       "weights": metadata.get("weights"), "random_weights": metadata.get("random_weights")})
    return listed


def collections_at(target: StoreTarget) -> list[dict]:
    """`list_collections` of the target's server; of a sharded target's servers, each collection's count
    summed over them."""
    listed: dict[str, dict] = {}
    for shard in target.shards() or [target]:
        with connect(shard) as client:
            for entry in list_collections(client):
                if entry["name"] in listed:
                    listed[entry["name"]]["count"] += entry["count"]
                else:
                    listed[entry["name"]] = entry
    return sorted(listed.values(), key=lambda entry: entry["name"])


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
        self._lock = _WriterLock(path)
        self._target = StoreTarget(collection="", path=path)
        self._client = connect(self._target)

    def open(self, collection: str, model_metadata: dict[str, Any] | None = None) -> dict[str, Any]:
        """Open (with `model_metadata`: create or check) a collection; returns its metadata."""
        target = StoreTarget(collection=collection, path=self._target.path)
        store = ChromaStore(target, model_metadata, client=self._client)
        self._stores[collection] = store
        return store.metadata

    def call(self, collection: str, method: str, *args):
        """A ChromaStore method (or property) of one collection."""
        if collection not in self._stores:
            self.open(collection)
        value = getattr(self._stores[collection], method)
        return value(*args) if callable(value) else value

    def list_collections(self) -> list[dict]:
        return list_collections(self._client)


OWNER_NAMESPACE = "ray_pipeline"


def owner_answer(reply):
    """The answer of an `EmbeddedOwner` call (an ObjectRef); a StoreError raised in the owner keeps
    only its reason, without Ray's wrapping."""
    import ray

    try:
        return ray.get(reply)
    except StoreError as exc:
        raise StoreError(user_facing_reason(exc)) from None


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

    def matching(self, where: dict | None, where_document: dict | None) -> dict[str, dict]: ...

    def count(self) -> int: ...

    def vectors(self) -> tuple[list[str], np.ndarray, list[dict]]: ...

    def query(self, embedding: np.ndarray, k: int, where: dict | None = None,
              where_document: dict | None = None) -> dict: ...

    def uncaptioned(self, ids: list[str]) -> list[str]: ...

    def upsert(self, ids: list[str], embeddings: np.ndarray, metadatas: list[dict]) -> None: ...

    def merge_metadata(self, changes: dict[str, dict]) -> None: ...

    def add_paths(self, copies: dict[str, list[str]]) -> None: ...

    def set_captions(self, ids: list[str], captions: list[str]) -> None: ...

    def delete(self, ids: list[str]) -> None: ...

    def failed_before(self, states: dict[str, FileState]) -> dict[str, str | None]: ...

    def remember_failures(self, failed: list[Failure], cleared: list[str]) -> None: ...


T = TypeVar("T")


def _name(member: Callable[..., Any] | property) -> str:
    """The name of a ChromaStore method or property, taken from the member itself, so that a misspelt
    one fails here (and in the type checker), not in a remote actor."""
    function = member.fget if isinstance(member, property) else member
    return function.__name__  # type: ignore[union-attr]


class StoreHandle:
    """What Ray workers hold to reach the collection, picklable; a RecordStore.

    Embedded Chroma allows one process only, so there all calls go to the `EmbeddedOwner` actor; with
    a server, every worker opens its own client.
    """

    def __init__(self, target: StoreTarget, owner=None):
        self.target = target
        self.owner = owner
        self._store: RecordStore | None = None

    def __getstate__(self):
        return {"target": self.target, "owner": self.owner, "_store": None}

    def open(self, model_metadata: dict[str, Any]) -> None:
        """Open the collection for writing: created when missing, its model checked (StoreError)."""
        if self.owner is None:
            self._store = with_retries(self.target, open_store, self.target, model_metadata)
            return
        owner_answer(self.owner.open.remote(self.target.collection, model_metadata))

    def _call(self, member: Callable[..., T] | property, *args) -> T:
        """A ChromaStore method (or property) of the collection, in the owner or in this process."""
        name = _name(member)
        if self.owner is not None:
            import ray

            return ray.get(self.owner.call.remote(self.target.collection, name, *args))
        if self._store is None:
            self._store = with_retries(self.target, open_store, self.target)
        value = getattr(self._store, name)
        return value(*args) if callable(value) else value

    @property
    def metadata(self) -> dict[str, Any]:
        return self._call(ChromaStore.metadata)

    @property
    def outdated(self) -> bool:
        return self._call(ChromaStore.outdated)

    def records(self, ids: list[str]) -> dict[str, dict]:
        return self._call(ChromaStore.records, ids)

    def records_at(self, paths: list[str]) -> dict[str, dict]:
        return self._call(ChromaStore.records_at, paths)

    def records_under(self, folders: list[str]) -> dict[str, dict]:
        return self._call(ChromaStore.records_under, folders)

    def unchanged(self, files: list[tuple[str, int, int]]) -> dict[str, str]:
        return self._call(ChromaStore.unchanged, files)

    def matching(self, where: dict | None, where_document: dict | None) -> dict[str, dict]:
        return self._call(ChromaStore.matching, where, where_document)

    def count(self) -> int:
        return self._call(ChromaStore.count)

    def vectors(self) -> tuple[list[str], np.ndarray, list[dict]]:
        return self._call(ChromaStore.vectors)

    def query(self, embedding: np.ndarray, k: int, where: dict | None = None, where_document: dict | None = None) -> dict:
        return self._call(ChromaStore.query, embedding, k, where, where_document)

    def uncaptioned(self, ids: list[str]) -> list[str]:
        return self._call(ChromaStore.uncaptioned, ids)

    def upsert(self, ids: list[str], embeddings: np.ndarray, metadatas: list[dict]) -> None:
        self._call(ChromaStore.upsert, ids, embeddings, metadatas)

    def merge_metadata(self, changes: dict[str, dict]) -> None:
        self._call(ChromaStore.merge_metadata, changes)

    def add_paths(self, copies: dict[str, list[str]]) -> None:
        self._call(ChromaStore.add_paths, copies)

    def set_captions(self, ids: list[str], captions: list[str]) -> None:
        self._call(ChromaStore.set_captions, ids, captions)

    def delete(self, ids: list[str]) -> None:
        self._call(ChromaStore.delete, ids)

    def failed_before(self, states: dict[str, FileState]) -> dict[str, str | None]:
        return self._call(ChromaStore.failed_before, states)

    def remember_failures(self, failed: list[Failure], cleared: list[str]) -> None:
        self._call(ChromaStore.remember_failures, failed, cleared)
