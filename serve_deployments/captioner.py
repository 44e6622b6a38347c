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


def captioner_options(max_replicas: int, idle_seconds: float, gpu_fraction: float) -> dict:
    """Scale to zero: no replica (and no BLIP in memory) while idle; the first request starts one."""
    return {
        "autoscaling_config": {
            "min_replicas": 0,
            "initial_replicas": 0,
            "max_replicas": max_replicas,
            "target_ongoing_requests": MAX_BATCH,
            "upscale_delay_s": 0,
            "downscale_delay_s": idle_seconds,
            "downscale_to_zero_delay_s": idle_seconds,
            "look_back_period_s": max(1.0, min(30.0, idle_seconds)),
        },
        "ray_actor_options": {"num_gpus": gpu_fraction, "num_cpus": 1},
    }
