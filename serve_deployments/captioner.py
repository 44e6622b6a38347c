"""Captioner: a BLIP deployment that batches concurrent requests and scales to zero when idle."""

from __future__ import annotations

import logging

import numpy as np
from ray import serve

logger = logging.getLogger("ray.serve")

MAX_BATCH = 8
MAX_NEW_TOKENS = 30


@serve.deployment(max_ongoing_requests=32)
class Captioner:
    """transformers' BlipForConditionalGeneration with its BlipProcessor, loaded once per replica."""

    def __init__(self, model: str):
        import torch
        from transformers import BlipForConditionalGeneration, BlipProcessor

        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.float16 if self.device == "cuda" else torch.float32
        self.processor = BlipProcessor.from_pretrained(model)
        self.model = BlipForConditionalGeneration.from_pretrained(model, dtype=dtype).to(self.device).eval()
        self.dtype = dtype
        logger.info("Captioner replica ready: %s on %s", model, self.device)

    @serve.batch(max_batch_size=MAX_BATCH, batch_wait_timeout_s=0.05)
    async def caption(self, pictures: list[np.ndarray]) -> list[str]:
        """One caption per picture ((H, W, 3) uint8 arrays)."""
        import torch
        from PIL import Image

        inputs = self.processor(images=[Image.fromarray(p) for p in pictures], return_tensors="pt")
        inputs = {k: v.to(self.device, self.dtype if v.is_floating_point() else None) for k, v in inputs.items()}
        with torch.inference_mode():
            tokens = self.model.generate(**inputs, max_new_tokens=MAX_NEW_TOKENS)
        return [text.strip() for text in self.processor.batch_decode(tokens, skip_special_tokens=True)]


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
