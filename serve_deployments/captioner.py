"""Captioner: a BLIP deployment that batches concurrent requests and scales to zero when idle."""

from __future__ import annotations

import logging

import numpy as np
from ray import serve

from ray_pipeline.model.blip import BlipCaptioner

logger = logging.getLogger("ray.serve")

MAX_BATCH = 8


@serve.deployment(max_ongoing_requests=32)
class Captioner:
    """The BLIP model (`ray_pipeline.blip`), loaded once per replica; concurrent requests are batched."""

    def __init__(self, model: str):
        self.blip = BlipCaptioner(model)
        logger.info("Captioner replica ready: %s on %s", model, self.blip.device)

    @serve.batch(max_batch_size=MAX_BATCH, batch_wait_timeout_s=0.05)
    async def __call__(self, pictures: list[np.ndarray]) -> list[str]:
        """One caption per picture ((H, W, 3) uint8 arrays, at `records.enrichments.CAPTION`'s geometry): the
        costly enrichments' pools call their deployment so."""
        return self.blip.caption(pictures)

