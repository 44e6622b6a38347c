"""Store access: how the app's deployments reach a collection. An embedded Chroma folder is held by one
long-lived owner actor that the ingestion jobs use too; a Chroma server is reached directly."""

from __future__ import annotations

from ray_pipeline.records import owner
from ray_pipeline.records.owner import StoreHandle
from serve_deployments.settings import Settings


def long_lived_owner(settings: Settings):
    """The owner actor of the app's embedded Chroma folder (started by the first deployment that asks,
    and kept for the app's life); None with a Chroma server."""
    return owner.long_lived_owner(settings.store.folder, detached=True) if settings.store.embedded else None


def store_handle(settings: Settings, collection: str, folder_owner) -> StoreHandle:
    return StoreHandle(settings.target(collection), folder_owner)
