"""Store access: how the app's deployments reach a collection. An embedded Chroma folder is held by one
long-lived owner actor that the ingestion jobs use too; a Chroma server is reached directly."""

from __future__ import annotations

from ray_pipeline import store
from ray_pipeline.store import StoreHandle, StoreTarget
from serve_deployments.settings import Settings


def long_lived_owner(settings: Settings):
    """The owner actor of the app's embedded Chroma folder (started by the first deployment that asks,
    and kept for the app's life); None with a Chroma server."""
    return None if settings.chroma_url is not None else store.long_lived_owner(settings.chroma_path, detached=True)


def store_handle(settings: Settings, collection: str, owner) -> StoreHandle:
    target = StoreTarget(collection=collection, path=settings.chroma_path, url=settings.chroma_url)
    return StoreHandle(target, owner)
