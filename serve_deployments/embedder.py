"""Embedder: the app's CLIP model, shared by searches and small ingestions. It batches concurrent
requests (`@serve.batch`) and autoscales; on a GPU it runs in fp16 under `torch.compile`, as the bulk
path's embedding actors do."""

from __future__ import annotations

import asyncio
import logging
import os

import numpy as np
from ray import serve

from ray_pipeline.core import defaults
from ray_pipeline.files.decode import decode_file
from ray_pipeline.files.reading import FileBytes
from ray_pipeline.model.clip import ModelSpec
from ray_pipeline.model.embedders import LocalEmbedder, ModelFacts
from ray_pipeline.runs.warm import EMBEDDER

logger = logging.getLogger("ray.serve")

MAX_BATCH = 16  # requests grouped into one model call (each may carry several pictures)
BATCH_WAIT_S = 0.002  # how long a lone request waits for company: requests that come while the model runs queue up and make the next batch anyway
GPU_BATCH = 64  # pictures per compiled model call on a GPU (one shape: short batches are padded)
PHOTO_DECODES = 2  # photos searched by, decoded at once by a replica: N such searches cost at most this many decodes


def embedder_name(number: int) -> str:
    """The deployment of the app's `number`th model (`Settings.models`): the default's is `Embedder`."""
    return EMBEDDER if number == 0 else f"{EMBEDDER}-{number}"


@serve.deployment(max_ongoing_requests=64)
class Embedder:
    def __init__(self, spec: ModelSpec, preview_max_pixels: int = defaults.PREVIEW_MAX_PIXELS, precision: str = "auto"):
        import torch

        # Ray gives an actor one thread (OMP_NUM_THREADS=1): a request on the CPU then takes several times
        # longer than it must. Requests come in bursts, so each may use the node's cores while it runs.
        torch.set_num_threads(len(os.sched_getaffinity(0)))
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.embedder = LocalEmbedder(spec, device, compile="auto", batch_size=GPU_BATCH, texts=True, precision=precision)
        self.preview_max_pixels = preview_max_pixels
        self.decodes = asyncio.Semaphore(PHOTO_DECODES)
        logger.info("Embedder replica ready: %s (%s) on %s in %s", self.embedder.resolved.architecture,
                    self.embedder.resolved.weights, device, self.embedder.precision)

    def model(self) -> ModelFacts:
        return self.embedder.facts()

    @serve.batch(max_batch_size=MAX_BATCH, batch_wait_timeout_s=BATCH_WAIT_S)
    async def embed_images(self, requests: list[np.ndarray]) -> list[np.ndarray]:
        """Each request: (N, H, W, 3) uint8 pictures at the model's input size -> (N, D) unit vectors."""
        vectors = await asyncio.to_thread(self.embedder.embed, np.concatenate(requests))
        return np.split(vectors, np.cumsum([len(pictures) for pictures in requests])[:-1])

    @serve.batch(max_batch_size=MAX_BATCH, batch_wait_timeout_s=BATCH_WAIT_S)
    async def embed_texts(self, texts: list[str]) -> list[np.ndarray]:
        """Each request: one text -> its unit vector."""
        return list(await asyncio.to_thread(self.embedder.embed_texts, texts))

    async def embed_photo(self, file: FileBytes) -> np.ndarray:
        """A photo's bytes (any format ingestion reads), decoded as ingestion does (PHOTO_DECODES at once, each
        at most PREVIEW_MAX_PIXELS decoded), -> its unit vector; a DecodeError says why it cannot be."""
        async with self.decodes:
            photo = await asyncio.to_thread(decode_file, file, self.embedder.resolved.geometry, defaults.MAX_PIXELS,
                                            self.preview_max_pixels)
        return (await self.embed_images(photo.pixels[None]))[0]
