"""Search: embed a text (or an example photo) with the collection's own model and return the top k."""

from __future__ import annotations

import logging

import numpy as np

from ray_pipeline import model as clip_model
from ray_pipeline.decode import DEFAULT_MAX_PIXELS, InputGeometry
from ray_pipeline.embed import ImageEncoder
from ray_pipeline.store import ChromaStore, StoreTarget, check_model

logger = logging.getLogger(__name__)


class QueryEncoder:
    """A CLIP model, loaded once, turning queries into unit vectors for the collections it wrote."""

    def __init__(self, spec: clip_model.ModelSpec):
        self.resolved, self.model = clip_model.resolve(spec)
        self._images: ImageEncoder | None = None

    @classmethod
    def for_collection(cls, store, override: clip_model.ModelSpec | None = None) -> "QueryEncoder":
        """The model the collection records (or `override`), checked against it."""
        encoder = cls(clip_model.spec_from_collection(store.metadata, override))
        encoder.check(store.target.collection, store.metadata)
        if store.metadata.get("random_weights"):
            logger.warning("collection %r holds vectors from random weights: the ranking means nothing", store.target.collection)
        return encoder

    def check(self, collection: str, metadata: dict) -> None:
        """StoreError when the collection's vectors come from another model."""
        check_model(collection, metadata, self.resolved.collection_metadata())

    def text(self, text: str) -> np.ndarray:
        import open_clip
        import torch

        tokens = open_clip.get_tokenizer(self.resolved.architecture)([text])
        with torch.inference_mode():
            vector = self.model.encode_text(tokens, normalize=True)
        return vector[0].float().numpy()

    def image(self, pixels: np.ndarray) -> np.ndarray:
        """`pixels`: one picture at the model's input size, (H, W, 3) uint8, as the CPU stage makes it."""
        if self._images is None:
            self._images = ImageEncoder(self.resolved, network=self.model)
        return self._images.encode(pixels[None])[0]


def top_k(store: ChromaStore, vector: np.ndarray, k: int) -> list[dict]:
    """Best first: id, path, score (cosine similarity), caption where stored, and all metadata."""
    found = store.query(vector, k)
    results = []
    for record_id, metadata, distance in zip(found["ids"][0], found["metadatas"][0], found["distances"][0]):
        metadata = dict(metadata or {})
        result = {"id": record_id, "path": metadata.get("path"), "score": round(1.0 - float(distance), 6)}
        if "caption" in metadata:
            result["caption"] = metadata["caption"]
        result["metadata"] = metadata
        results.append(result)
    return results


def search_text(target: StoreTarget, text: str, k: int, override: clip_model.ModelSpec | None = None) -> list[dict]:
    store = ChromaStore(target)
    return top_k(store, QueryEncoder.for_collection(store, override).text(text), k)


def search_image(target: StoreTarget, image_path: str, k: int, override: clip_model.ModelSpec | None = None) -> list[dict]:
    """Photos most like the one at `image_path` (a JPEG, PNG, RAW, ... decoded as ingestion does)."""
    from ray_pipeline.journey import decode_file, read_file

    store = ChromaStore(target)
    encoder = QueryEncoder.for_collection(store, override)
    photo = decode_file(read_file(image_path), InputGeometry.from_preprocess(encoder.resolved.preprocess), DEFAULT_MAX_PIXELS)
    return top_k(store, encoder.image(photo.pixels), k)
