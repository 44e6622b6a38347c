"""The small enrichment models as deployments that scale to zero when idle, as the Captioner does: `TextReader`
(PP-OCR) and `FaceFinder` (dlib). A bulk job and a command run the same models in pools of their own
(`steps.enrich.OWN_MODELS`); here each replica holds one, on one core."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

import numpy as np
from ray import serve

from ray_pipeline.records.enrichments import FACES, TEXT
from ray_pipeline.steps.enrich import OWN_MODELS

logger = logging.getLogger("ray.serve")

MAX_ONGOING = 4  # about a second of a core each: more wait here than in Serve's queue


class PictureModel:
    """One small enrichment's model, loaded once per replica (under a second)."""

    def __init__(self, enrichment_key: str):
        self.model = OWN_MODELS[enrichment_key](1)
        # One picture at a time: a replica has one core, and dlib's models are not safe to call from two threads
        # (two at once crashed the replica's process).
        self.one_at_a_time = threading.Lock()
        logger.info("%s replica ready", enrichment_key)

    def _answer(self, picture: np.ndarray) -> Any:
        with self.one_at_a_time:
            return self.model(picture)

    async def __call__(self, picture: np.ndarray) -> Any:
        """The enrichment's answer for one picture ((H, W, 3) uint8, upright, at the enrichment's geometry): the
        costly enrichments' pools call their deployment so."""
        return await asyncio.to_thread(self._answer, picture)


TextReader = serve.deployment(PictureModel, name=TEXT.deployment, max_ongoing_requests=MAX_ONGOING)
FaceFinder = serve.deployment(PictureModel, name=FACES.deployment, max_ongoing_requests=MAX_ONGOING)
