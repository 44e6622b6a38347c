"""Geometry: the picture a model takes (its height, width and resize mode), which every photo is decoded and
cropped to."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class InputGeometry:
    """How the model wants its input: (height, width) and OpenCLIP's resize mode."""

    height: int
    width: int
    resize_mode: str = "shortest"  # "shortest" (resize + centre crop), "squash", or "fit" (within, whole, never enlarged)

    def __post_init__(self) -> None:
        if self.resize_mode not in ("shortest", "squash", "fit"):
            raise ValueError(f"unsupported OpenCLIP resize_mode {self.resize_mode!r}")
        if self.resize_mode == "shortest" and self.height != self.width:
            raise ValueError("resize_mode 'shortest' is supported for square model inputs only")

    @classmethod
    def from_preprocess(cls, preprocess: dict) -> "InputGeometry":
        """From OpenCLIP's preprocess config (`open_clip.get_model_preprocess_cfg`)."""
        size = preprocess["size"]
        height, width = (size, size) if isinstance(size, int) else size
        return cls(height, width, preprocess.get("resize_mode", "shortest"))

    @property
    def pixel_shape(self) -> tuple[int, int, int]:
        """(height, width, 3): the uint8 array the model stage receives per picture."""
        return (self.height, self.width, 3)

    def reduced_size(self, width: int, height: int) -> tuple[int, int]:
        """The smallest (width, height) a picture of this size may be decoded at and still feed the model."""
        if self.resize_mode == "squash":
            return min(width, self.width), min(height, self.height)
        if self.resize_mode == "fit":
            return self.fitted_size(width, height)
        scale = self.height / min(width, height)
        return max(1, math.ceil(width * scale)), max(1, math.ceil(height * scale))

    def fitted_size(self, width: int, height: int) -> tuple[int, int]:
        """The size of a whole picture fitted within (width, height) of this geometry, never enlarged: what
        `fit` gives a model that reads the whole picture at any aspect ratio (text recognition)."""
        scale = min(1.0, self.width / width, self.height / height)
        return max(1, round(width * scale)), max(1, round(height * scale))
