"""Search: embed a text (or an example photo) with the collection's own model and return the top k."""

from __future__ import annotations

import logging

import numpy as np

from ray_pipeline import model as clip_model
from ray_pipeline.decode import DEFAULT_MAX_PIXELS
from ray_pipeline.embed import ClipEncoder
from ray_pipeline.file_names import exact_name, recorded_path
from ray_pipeline.journey import decode_file, read_file
from ray_pipeline.store import ChromaStore, StoreTarget

logger = logging.getLogger(__name__)


def encoder_for(store: ChromaStore, override: clip_model.ModelSpec | None = None) -> ClipEncoder:
    """The model the collection records (or `override`), checked against it."""
    encoder = ClipEncoder(clip_model.spec_from_collection(store.metadata, override))
    encoder.check(store.target.collection, store.metadata)
    if store.metadata.get("random_weights"):
        logger.warning("collection %r holds vectors from random weights: the ranking means nothing", store.target.collection)
    return encoder


def top_k(store, vector: np.ndarray, k: int) -> list[dict]:
    """Best first: id, path, score (cosine similarity), caption where stored, and all metadata."""
    found = store.query(vector, k)
    results = []
    for record_id, metadata, distance in zip(found["ids"][0], found["metadatas"][0], found["distances"][0]):
        metadata = dict(metadata or {})
        result = {"id": record_id, "path": metadata.get("path"), **exact_name(recorded_path(metadata) or ""),
                  "score": round(1.0 - float(distance), 6)}
        if "caption" in metadata:
            result["caption"] = metadata["caption"]
        result["metadata"] = metadata
        results.append(result)
    return results


def search_text(target: StoreTarget, text: str, k: int, override: clip_model.ModelSpec | None = None) -> list[dict]:
    store = ChromaStore(target)
    return top_k(store, encoder_for(store, override).texts([text])[0], k)


def search_image(target: StoreTarget, image_path: str, k: int, override: clip_model.ModelSpec | None = None) -> list[dict]:
    """Photos most like the one at `image_path` (a JPEG, PNG, RAW, ... decoded as ingestion does)."""
    store = ChromaStore(target)
    encoder = encoder_for(store, override)
    photo = decode_file(read_file(image_path), encoder.resolved.geometry, DEFAULT_MAX_PIXELS)
    return top_k(store, encoder.images.encode(photo.pixels[None])[0], k)
