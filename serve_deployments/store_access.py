"""Store access: how the app's deployments reach a collection. An embedded Chroma folder is held by one
long-lived owner actor that the ingestion jobs use too; a Chroma server is reached directly."""

from __future__ import annotations

import ray

from ray_pipeline.store import OWNER_NAMESPACE, EmbeddedOwner, StoreHandle, StoreTarget, owner_name
from serve_deployments.settings import Settings


def long_lived_owner(settings: Settings):
    """The owner actor of the app's embedded Chroma folder (started by the first deployment that asks,
    and kept for the app's life); None with a Chroma server."""
    if settings.chroma_url is not None:
        return None
    owner = (
        ray.remote(EmbeddedOwner)
        .options(name=owner_name(settings.chroma_path), namespace=OWNER_NAMESPACE, lifetime="detached",
                 get_if_exists=True, num_cpus=0)
        .remote()
    )
    ray.get(owner.open_folder.remote(settings.chroma_path))
    return owner


def store_handle(settings: Settings, collection: str, owner) -> StoreHandle:
    target = StoreTarget(collection=collection, path=settings.chroma_path, url=settings.chroma_url)
    return StoreHandle(target, owner)
