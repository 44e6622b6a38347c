"""Collections: the user's collections of a store, listed with their counts and models (a collection's
companions left out), created with a model and the enrichments on by default, shown with what they hold,
renamed when a reindex swaps them, and deleted with their companions."""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass

from ray_pipeline.core import record_keys as keys
from ray_pipeline.core.errors import UserFacingError
from ray_pipeline.records.companions import (
    FACES_SUFFIX,
    FAILURES_SUFFIX,
    PEOPLE_SUFFIX,
    companion_name,
    is_companion,
)
from ray_pipeline.records.connection import connect
from ray_pipeline.records.enrichments import ENRICHMENTS_ON_KEY, LAST_INGESTION_KEY, CostlyEnrichment, enrichments_on
from ray_pipeline.records.errors import MissingCollection
from ray_pipeline.records.target import StoreTarget, collection_name_problem

COMPANIONS = (FAILURES_SUFFIX, FACES_SUFFIX, PEOPLE_SUFFIX)


def list_collections(client) -> list[dict]:
    """Each collection's name, record count and model, for listings."""
    listed = []
    for collection in sorted(client.list_collections(), key=lambda c: c.name):
        if is_companion(collection.name):
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


class CollectionRefused(UserFacingError):
    """A collection that cannot be shown or deleted as asked, with the field it came in."""


def _existing(client, name: str):
    try:
        return client.get_collection(name, embedding_function=None)
    except Exception:
        raise MissingCollection(f"no collection {name!r}") from None


def _count_or_none(client, name: str) -> int | None:
    try:
        return client.get_collection(name, embedding_function=None).count()
    except Exception:
        return None


def show_collection(client, name: str, failures: int = 0) -> dict:
    """What a collection holds: records, photos (a RAW+JPEG pair one), its model, how many records have each costly
    enrichment, its people and faces, and its remembered failures (the first `failures` of them listed)."""
    collection = _existing(client, name)
    metadata = collection.metadata or {}
    records = collection.count()
    raws_in_pairs = len(collection.get(where={keys.PAIR_ROLE: "raw"}, include=[])["ids"])
    shown = {"name": name, "records": records, "photos": records - raws_in_pairs, "model": metadata.get("model"),
             "weights": metadata.get("weights"), "random_weights": metadata.get("random_weights"),
             "record_layout": metadata.get("record_layout"),
             "enrichments_on": [enrichment.key for enrichment in enrichments_on(metadata)],
             "last_ingestion": json.loads(metadata[LAST_INGESTION_KEY]) if metadata.get(LAST_INGESTION_KEY) else None,
             **disk_use(client, [name, *(companion_name(name, suffix) for suffix in COMPANIONS)]),
             "enrichments": {"captioned": len(collection.get(where={keys.HAS_CAPTION: True}, include=[])["ids"]),
                             "text_read": len(collection.get(where_document={"$contains": " t:"}, include=[])["ids"]),
                             "looked_for_faces": len(collection.get(where={keys.FACES: {"$gte": 0}}, include=[])["ids"])},
             "faces": _count_or_none(client, companion_name(name, FACES_SUFFIX)) or 0,
             "people": _count_or_none(client, companion_name(name, PEOPLE_SUFFIX)) or 0,
             "failed_files": _count_or_none(client, companion_name(name, FAILURES_SUFFIX)) or 0}
    if failures:
        try:
            remembered = client.get_collection(companion_name(name, FAILURES_SUFFIX), embedding_function=None)
            found = remembered.get(include=["metadatas"], limit=failures)
            shown["failures"] = [{"path": (m or {}).get("path"), "reason": (m or {}).get("reason")} for m in found["metadatas"]]
        except Exception:
            shown["failures"] = []
    return shown


@dataclass(frozen=True)
class Removed:
    """What deleting a collection removed: each collection's name (the user's, then its companions) and records."""

    collections: list[tuple[str, int]]

    def as_json(self) -> dict:
        return {"removed": [{"name": name, "records": count} for name, count in self.collections]}


def delete_collection(client, name: str, confirm: str) -> Removed:
    """The collection and its companions (failures, faces, people), gone; only where `confirm` is its very name."""
    if confirm != name:
        raise CollectionRefused(f"confirm: type the collection's name, {name!r}, to delete it")
    if is_companion(name):
        raise CollectionRefused(f"collection: {name!r} is a collection's companion: delete that collection")
    removed = [(name, _existing(client, name).count())]
    for suffix in COMPANIONS:
        companion = companion_name(name, suffix)
        count = _count_or_none(client, companion)
        if count is not None:
            removed.append((companion, count))
    for gone, _ in removed:
        client.delete_collection(gone)
    return Removed(removed)


def check_new_collection(client, name: str) -> None:
    """Refused (CollectionRefused) where `name` is taken, or not one a collection may have."""
    problem = collection_name_problem(name)
    if problem:
        raise CollectionRefused(f"name: {problem}")
    if _count_or_none(client, name) is not None:
        raise CollectionRefused(f"name: collection {name!r} exists already")


def creation_metadata(model_metadata: dict, enrichments: tuple[CostlyEnrichment, ...]) -> dict:
    """What a collection created by hand records: its model, and the enrichments every ingestion into it makes."""
    on = ",".join(enrichment.key for enrichment in enrichments)
    return {**model_metadata, **({ENRICHMENTS_ON_KEY: on} if on else {})}


def rename_collection(client, name: str, new_name: str) -> None:
    """The collection `name` answers to `new_name` from now on (its records untouched)."""
    _existing(client, name).modify(name=new_name)


def disk_use(client, names: list[str]) -> dict:
    """`disk_bytes`: what these collections' vector indexes take on disk, and `store_disk_bytes`: the whole Chroma
    folder, whose one SQLite file holds every collection's metadata and documents. Embedded Chroma only: a server's
    API does not say (both None)."""
    settings = client.get_settings()
    folder: str = settings.persist_directory if settings.is_persistent else ""
    database = os.path.join(folder, "chroma.sqlite3")
    if not folder or not os.path.isfile(database):
        return {"disk_bytes": None, "store_disk_bytes": None}
    ids = [collection.id for collection in client.list_collections() if collection.name in names]
    with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as db:
        segments = [row[0] for row in db.execute(
            f"SELECT id FROM segments WHERE scope = 'VECTOR' AND collection IN ({','.join('?' * len(ids))})",
            [str(i) for i in ids])] if ids else []
    return {"disk_bytes": sum(_folder_bytes(os.path.join(folder, segment)) for segment in segments),
            "store_disk_bytes": _folder_bytes(folder)}


def _folder_bytes(folder: str) -> int:
    return sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(folder) for name in names)
