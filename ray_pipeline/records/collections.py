"""Collections: the user's collections of a store, listed with their counts and models (a collection's
companions left out)."""

from __future__ import annotations

from ray_pipeline.records.connection import connect
from ray_pipeline.records.companions import is_companion
from ray_pipeline.records.target import StoreTarget


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
