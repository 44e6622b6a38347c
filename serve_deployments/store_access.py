"""Store access: how the app's deployments reach a collection. An embedded Chroma folder is held by one
long-lived owner actor that the ingestion jobs use too; a Chroma server is reached directly."""

from __future__ import annotations

from ray_pipeline import store
from ray_pipeline.store import StoreHandle
from serve_deployments.settings import Settings


def long_lived_owner(settings: Settings):
    """The owner actor of the app's embedded Chroma folder (started by the first deployment that asks,
    and kept for the app's life); None with a Chroma server."""
    return store.long_lived_owner(settings.store.folder, detached=True) if settings.store.embedded else None


def store_handle(settings: Settings, collection: str, owner) -> StoreHandle:
    return StoreHandle(settings.target(collection), owner)
