"""Prepare (the bulk path's CPU stage): each file's journey (`journey`) inside a Ray Data actor.

Rows leave this stage with a `status`: "new" rows carry model-sized pixels and their metadata;
"existing", "duplicate" and "failed" rows carry only what the summary and the errors file need.
"""

from __future__ import annotations

import json
import os

import numpy as np

from ray_pipeline.claims import ShardedClaims
from ray_pipeline.decode import InputGeometry
from ray_pipeline.journey import Journey, PhotoFile
from ray_pipeline.metrics import observe_files
from ray_pipeline.outcome import Outcome
from ray_pipeline.store import StoreHandle


class PrepareImages:
    """Ray Data class UDF for the CPU stage; one instance per CPU actor."""

    def __init__(self, store: StoreHandle, claims: ShardedClaims, geometry: InputGeometry, max_pixels: int,
                 within: tuple[str, ...] = ()):
        """`store`: a StoreHandle; `claims`: the job's duplicate registry, in shards."""
        self.journey = Journey(store, claims.claim, geometry, max_pixels, within)
        self.collection = store.target.collection

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        files = self.journey.run([os.fsdecode(path) for path in batch["path"]])
        observe_files(self.collection, files)
        return rows_of(files)


def rows_of(files: list[PhotoFile]) -> dict[str, np.ndarray]:
    """The stage's output columns, one row per file."""

    def column(values) -> np.ndarray:
        return np.array(list(values), dtype=object)

    return {
        "path": column(os.fsencode(photo.path) for photo in files),  # bytes: a name need not be UTF-8
        "id": column(photo.id for photo in files),
        "status": column(photo.status.value for photo in files),
        "reason": column(photo.reason for photo in files),
        "pixels": column(photo.picture.pixels.tobytes() if photo.status == Outcome.NEW else b"" for photo in files),
        "metadata": column(json.dumps(photo.metadata) if photo.status == Outcome.NEW else "" for photo in files),
        "read_seconds": np.array([photo.read_seconds for photo in files]),
        "decode_seconds": np.array([photo.decode_seconds for photo in files]),
    }
