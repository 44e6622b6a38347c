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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from ray_pipeline.cluster.runtime import init_ray
from ray_pipeline.core import record_keys as keys
from ray_pipeline.core.errors import UserFacingError
from ray_pipeline.core.paths import FileFailure, recorded_path
from ray_pipeline.model.clip import recorded_identity
from ray_pipeline.records.chroma import MODEL_KEYS
from ray_pipeline.records.collections import rename_collection
from ray_pipeline.records.companions import FAILURES_SUFFIX, companion_name
from ray_pipeline.records.enrichments import ENRICHMENTS_ON_KEY
from ray_pipeline.records.errors import FolderInUse
from ray_pipeline.records.owner import long_lived_owner, owner_answer
from ray_pipeline.records.store import opened_client
from ray_pipeline.records.target import StoreTarget
from ray_pipeline.runs.config import RunConfig
from ray_pipeline.runs.ingest import run_ingest

logger = logging.getLogger(__name__)

T = TypeVar("T")
PAGE = 1000  # records read, and carried over, at a time


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


def reindex(config: RunConfig) -> Reindexed:
    """`config.target`'s collection embedded again by `config.model`, as described above."""
    started = time.monotonic()
    target, name = config.target, config.target.collection
    if target.sharded:
        raise ReindexRefused("reindex: a collection sharded over several servers cannot be reindexed yet")
    metadata, old = _on_client(target, _old_records, name)
    if not old:
        raise ReindexRefused(f"collection: {name!r} holds no records: delete it, and create it with the new model")
    identity = recorded_identity(config.model)
    if identity is not None and all(metadata.get(key) == identity[key] for key in MODEL_KEYS):
        raise ReindexRefused(f"model: collection {name!r} holds vectors of that very model already")
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    new, previous = f"{name}.reindex-{stamp}", f"{name}.before-{stamp}"
    readable, left_out = _readable(old, config.machine)
    logger.info("reindexing %d records of %r with %s: %d files to read, %d left out", len(old), name,
                config.model.label, len(readable), len(left_out))
    run = run_ingest(replace(config, target=replace(target, collection=new), paths=tuple(readable), manifest=None,
                             caption=False, read_text=False, find_faces=False, prune=False, dry_run=False,
                             uploads=None))
    failed = {error.path: error.reason for error in run.errors}
    carried = _on_client(target, _carry, name, new, [record.id for record in old], metadata.get(ENRICHMENTS_ON_KEY))
    for record in old:
        if record.id not in carried and record.path in readable:
            reason = failed.get(record.path, "holds other bytes now: ingest it again to store them")
            left_out.append(FileFailure(record.path, reason))
    _on_client(target, _swap, name, new, previous, forget=(name, new, previous))
    logger.info("%r answers from %s now; its old records are %r until deleted", name, config.model.label, previous)
    summary = {"collection": name, "reindexed": len(carried), "left_out": len(left_out),
               "new_contents": run.summary.get("embedded", 0) - len(carried), "previous": previous,
               "model": config.model.label, "seconds": round(time.monotonic() - started, 2), "route": run.summary.get("route")}
    return Reindexed(summary, left_out, run.random_weights)


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
    embedded folder (a Serve app's owner), through that owner, which then forgets the collections it had open
    under the names in `forget` (renamed)."""
    try:
        with opened_client(target) as client:
            return call(client, *args)
    except FolderInUse:
        init_ray()
        owner = long_lived_owner(target.folder, detached=False)
        answer = owner_answer(owner.with_client.remote(call, *args))
        for name in forget:
            owner_answer(owner.forget.remote(name))
        return answer


def _old_records(client, name: str) -> tuple[dict[str, Any], list[OldRecord]]:
    try:
        collection = client.get_collection(name, embedding_function=None)
    except Exception:
        raise ReindexRefused(f"collection: no collection {name!r}") from None
    found = [OldRecord(i, recorded_path(m or {}), (m or {}).get(keys.MACHINE))
             for page in _pages(collection, ["metadatas"]) for i, m in zip(page["ids"], page["metadatas"])]
    return dict(collection.metadata or {}), found


def _pages(collection, include: list[str], ids: list[str] | None = None) -> Iterator[dict]:
    if ids is not None:
        for start in range(0, len(ids), PAGE):
            yield collection.get(ids=ids[start : start + PAGE], include=include)
        return
    offset = 0
    while True:
        page = collection.get(include=include, limit=PAGE, offset=offset)
        yield page
        if len(page["ids"]) < PAGE:
            return
        offset += PAGE


def _carry(client, name: str, new: str, ids: list[str], enrichments_on: str | None) -> set[str]:
    """Each old record found again in the new collection (the same bytes: the same id) takes its metadata and
    document, beside the new vector; the ids carried over. The new collection takes the enrichments on by default."""
    old_collection = client.get_collection(name, embedding_function=None)
    try:
        new_collection = client.get_collection(new, embedding_function=None)
    except Exception:  # nothing was read: nothing was written
        return set()
    carried: set[str] = set()
    for page in _pages(new_collection, ["embeddings"], ids):
        if not page["ids"]:
            continue
        vectors = dict(zip(page["ids"], page["embeddings"]))
        old = old_collection.get(ids=page["ids"], include=["metadatas", "documents"])
        new_collection.upsert(ids=old["ids"], embeddings=[vectors[i] for i in old["ids"]],
                              metadatas=[dict(m or {}) for m in old["metadatas"]],
                              documents=[d or "" for d in old["documents"]])
        carried.update(old["ids"])
    if enrichments_on:
        new_collection.modify(metadata={**(new_collection.metadata or {}), ENRICHMENTS_ON_KEY: enrichments_on})
    return carried


def _swap(client, name: str, new: str, previous: str) -> None:
    """`name` answers from the new collection, the old one is `previous`; the new run's own failures go (the
    summary reports them). Where a new collection was never made (no file could be read), nothing is swapped."""
    try:
        client.get_collection(new, embedding_function=None)
    except Exception:
        raise ReindexRefused(f"reindex: no file of {name!r} could be read again: {name!r} is left as it was") from None
    rename_collection(client, name, previous)
    try:
        rename_collection(client, new, name)
    except Exception:
        rename_collection(client, previous, name)  # as it was: the new collection stays under its own name
        raise
    try:
        client.delete_collection(companion_name(new, FAILURES_SUFFIX))
    except Exception:  # it failed nothing: it has none
        pass
