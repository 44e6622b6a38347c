"""TextReader: PP-OCR (`ray_pipeline.model.text_reader`) as a deployment that scales to zero when idle, as the
Captioner does; a bulk job and a command read text with pools of their own (`steps.enrich`)."""

from __future__ import annotations

import asyncio
import logging

import numpy as np
from ray import serve

from ray_pipeline.steps.enrich import reads_text

logger = logging.getLogger("ray.serve")

MAX_ONGOING = 4  # about a second of a core each: more wait here than in Serve's queue


@serve.deployment(max_ongoing_requests=MAX_ONGOING)
class TextReader:
    """The OCR models, loaded once per replica (about 0.3 s)."""

    def __init__(self):
        self.read = reads_text(threads=1)
        logger.info("TextReader replica ready")

    async def __call__(self, picture: np.ndarray) -> str:
        """The record's `text` of one picture ((H, W, 3) uint8, upright, at `records.enrichments.TEXT`'s
        geometry): the costly enrichments' pools call their deployment so."""
        return await asyncio.to_thread(self.read, picture)
