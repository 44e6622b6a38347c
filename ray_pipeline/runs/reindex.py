"""Reindex: a collection embedded again by another model, its records kept.

Its records' files are ingested into a new collection by the new model (`run_ingest`: the one route decision,
this process or a Ray Data job), each record then takes the old one's metadata and document (paths, captions,
text, places, people, upload names), and the names are swapped at once: the collection answers from the new
model, and the old one stays, renamed `<name>.before-<time>`, until deleted. Its companions (failures, faces,
people) stay with the name: faces are not CLIP's. A record whose file is gone, holds other bytes now, fails, or
is another machine's is reported, and stays in the old collection only.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from ray_pipeline.cluster.runtime import init_ray
from ray_pipeline.core import record_keys as keys
from ray_pipeline.core.errors import UserFacingError
from ray_pipeline.core.paths import FileFailure, path_text, recorded_path
from ray_pipeline.model.clip import recorded_identity
from ray_pipeline.records.chroma import ChromaStore, same_model
from ray_pipeline.records.collections import rename_collection
from ray_pipeline.records.companions import FAILURES_SUFFIX, companion_name
from ray_pipeline.records.enrichments import ENRICHMENTS_ON_KEY
from ray_pipeline.records.errors import FolderInUse, MissingCollection
from ray_pipeline.records.owner import long_lived_owner, owner_answer
from ray_pipeline.records.store import opened_client
from ray_pipeline.records.target import StoreTarget, collection_name_problem
from ray_pipeline.runs.config import RunConfig
from ray_pipeline.runs.ingest import run_ingest

logger = logging.getLogger(__name__)

T = TypeVar("T")
PAGE = 1000  # records carried over at a time


class ReindexRefused(UserFacingError):
    """A reindex that cannot start as asked; nothing was changed."""


@dataclass(frozen=True)
class OldRecord:
    id: str
    path: str | None
    machine: str | None


@dataclass
class Reindexed:
    summary: dict  # the line the command prints last
    left_out: list[FileFailure]  # the records that stay in the old collection only, and why
    random_weights: bool


def reindex(config: RunConfig, allow_left_out: bool = False) -> Reindexed:
    """`config.target`'s collection embedded again by `config.model`, as described above. A record that cannot be
    read again stops the reindex, nothing changed (the new collection dropped), unless `allow_left_out`: an
    unmounted disk would otherwise empty the collection its name answers from."""
    started = time.monotonic()
    target, name = config.target, config.target.collection
    if target.sharded:
        raise ReindexRefused("collection: a collection sharded over several servers cannot be reindexed yet")
    metadata, old = _on_client(target, _old_records, target, set())
    if not old:
        raise ReindexRefused(f"collection: {name!r} holds no records: delete it, and create it with the new model")
    identity = recorded_identity(config.model)
    if identity is not None and same_model(metadata, identity):
        raise ReindexRefused(f"model: collection {name!r} holds vectors of that very model already")
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    new, previous = f"{name}.reindex-{stamp}", f"{name}.before-{stamp}"
    if collection_name_problem(previous):
        raise ReindexRefused(f"collection: {name!r} is too long a name to keep its old records beside it as {previous!r}")
    readable, left_out = _readable(old, config.machine)
    _stop_if_left_out(left_out, len(old), allow_left_out, "")
    logger.info("reindexing %d records of %r with %s: %d files to read", len(old), name, config.model.label, len(readable))
    try:
        done = _embed_and_carry(config, new, old, readable, allow_left_out)
        left_out += done.left_out
        _on_client(target, _swap, name, new, previous, metadata.get(ENRICHMENTS_ON_KEY), forget=(name, new, previous))
    except BaseException:
        _on_client(target, _drop, new, forget=(new,))  # nothing half-made is left behind
        raise
    logger.info("%r answers from %s now; its old records are %r until deleted", name, config.model.label, previous)
    summary = {"collection": name, "reindexed": len(done.carried), "left_out": len(left_out),
               "new_contents": done.embedded - len(done.carried), "previous": previous, "model": config.model.label,
               "seconds": round(time.monotonic() - started, 2), "route": done.route}
    return Reindexed(summary, left_out, done.random_weights)


@dataclass
class _Carried:
    carried: set[str] = field(default_factory=set)  # the old records' ids in the new collection, their keys carried over
    left_out: list[FileFailure] = field(default_factory=list)
    embedded: int = 0
    random_weights: bool = False
    route: dict | None = None


CATCH_UP_ROUNDS = 3  # times the records written to the old collection meanwhile are looked for, and embedded too


def _embed_and_carry(config: RunConfig, new: str, old: list[OldRecord], readable: list[str],
                     allow_left_out: bool) -> _Carried:
    """The old records' files ingested into `new` by the new model, and their keys carried over; then those of the
    records written to the old collection meanwhile (an ingestion beside the reindex), a few rounds."""
    target, name = config.target, config.target.collection
    done, seen = _Carried(), {record.id for record in old}
    for _ in range(CATCH_UP_ROUNDS):
        run = run_ingest(replace(config, target=replace(target, collection=new), paths=tuple(readable), manifest=None,
                                 caption=False, read_text=False, find_faces=False, prune=False, dry_run=False,
                                 uploads=None))
        done.embedded += run.summary.get("embedded", 0)
        done.random_weights, done.route = run.random_weights, run.summary.get("route")
        failed = {error.path: error.reason for error in run.errors}
        ids = [record.id for record in old]
        for start in range(0, len(ids), PAGE):
            done.carried.update(_on_client(target, _carry, name, new, ids[start : start + PAGE]))
        listed = set(readable)
        left_out = [FileFailure(record.path, failed.get(record.path, "holds other bytes now: ingest it again to store them"))
                    for record in old if record.id not in done.carried and record.path in listed]
        _stop_if_left_out(left_out, len(seen), allow_left_out, " after reading them again")
        done.left_out += left_out
        _, old = _on_client(target, _old_records, target, seen)
        if not old:
            return done
        logger.info("%d records were written to %r meanwhile: embedding them too", len(old), name)
        seen.update(record.id for record in old)
        readable, more = _readable(old, config.machine)
        _stop_if_left_out(more, len(seen), allow_left_out, "")
        done.left_out += more
    logger.warning("records are still being written to %r: those written from now on stay in its old records; "
                   "ingest them again once the reindex is done", name)
    return done


def _stop_if_left_out(left_out: list[FileFailure], records: int, allowed: bool, when: str) -> None:
    if left_out and not allowed:
        shown = "; ".join(f"{path_text(left.path)}: {left.reason}" for left in left_out[:3])
        raise ReindexRefused(f"reindex: {len(left_out)} of {records} records cannot be read here{when} ({shown}"
                             f"{'; ...' if len(left_out) > 3 else ''}): nothing was changed; reindex where they can be "
                             "read, or allow them to be left out (--allow-left-out; they stay in the old records)")


def _readable(old: list[OldRecord], machine: str) -> tuple[list[str], list[FileFailure]]:
    """The files of the old records this machine can read, and the records left out, with why."""
    readable, left_out = [], []
    for record in old:
        if record.path is None:
            left_out.append(FileFailure(f"record {record.id}", "has no path"))
        elif record.machine not in (None, machine):
            left_out.append(FileFailure(record.path, f"is machine {record.machine!r}'s: reindex it there"))
        elif not os.path.isfile(record.path):
            left_out.append(FileFailure(record.path, "is gone since it was stored"))
        else:
            readable.append(record.path)
    return sorted(set(readable)), left_out


def _on_client(target: StoreTarget, call: Callable[..., T], *args, forget: tuple[str, ...] = ()) -> T:
    """`call(client, *args)` with a client of the store: this process's own, or, where another process holds the
    embedded folder (a Serve app's owner), through that owner, which in the same call forgets the collections it
    had open under the names in `forget` (renamed: nothing reaches them between the two)."""
    try:
        with opened_client(target) as client:
            return call(client, *args)
    except FolderInUse:
        init_ray()
        owner = long_lived_owner(target.folder, detached=False)
        return owner_answer(owner.with_client.remote(call, *args, forget=forget))


def _old_records(client, target: StoreTarget, known: set[str]) -> tuple[dict[str, Any], list[OldRecord]]:
    """The collection's metadata, and its records but those of the `known` ids (their ids alone are read)."""
    try:
        store = ChromaStore(target, client=client)
    except MissingCollection:
        raise ReindexRefused(f"collection: no collection {target.collection!r}") from None
    ids = [i for i in store.matching_ids(None, None) if i not in known]
    found = [OldRecord(i, recorded_path(m), m.get(keys.MACHINE)) for i, m in store.records(ids).items()]
    return store.metadata, found


def _carry(client, name: str, new: str, ids: list[str]) -> list[str]:
    """Each of these old records found again in the new collection (the same bytes: the same id) takes its metadata
    and document, beside the new vector; the ids carried over."""
    try:
        new_collection = client.get_collection(new, embedding_function=None)
    except Exception:  # nothing was read: nothing was written
        return []
    found = new_collection.get(ids=ids, include=["embeddings"])
    if not found["ids"]:
        return []
    vectors = dict(zip(found["ids"], found["embeddings"]))
    old = client.get_collection(name, embedding_function=None).get(ids=found["ids"], include=["metadatas", "documents"])
    new_collection.upsert(ids=old["ids"], embeddings=[vectors[i] for i in old["ids"]],
                          metadatas=[dict(m or {}) for m in old["metadatas"]], documents=[d or "" for d in old["documents"]])
    return list(old["ids"])


def _swap(client, name: str, new: str, previous: str, enrichments_on: str | None) -> None:
    """`name` answers from the new collection (with the enrichments on by default), the old one is `previous`; the
    new run's own failures go (the summary reports them). Where a new collection was never made (no file could be
    read), nothing is swapped."""
    try:
        made = client.get_collection(new, embedding_function=None)
    except Exception:
        raise ReindexRefused(f"reindex: no file of {name!r} could be read again: {name!r} is left as it was") from None
    if enrichments_on:
        made.modify(metadata={**(made.metadata or {}), ENRICHMENTS_ON_KEY: enrichments_on})
    rename_collection(client, name, previous)
    try:
        rename_collection(client, new, name)
    except Exception:
        rename_collection(client, previous, name)  # as it was: the new collection is dropped by the caller
        raise
    _drop_if_there(client, companion_name(new, FAILURES_SUFFIX))


def _drop(client, new: str) -> None:
    """A reindex that did not finish: its new collection, and the failures it remembered, gone."""
    for collection in (new, companion_name(new, FAILURES_SUFFIX)):
        _drop_if_there(client, collection)


def _drop_if_there(client, collection: str) -> None:
    try:
        client.delete_collection(collection)
    except Exception:  # never made: nothing to drop
        pass
