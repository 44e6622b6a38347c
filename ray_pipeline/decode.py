"""Decoding: file bytes -> an RGB uint8 array at the model's input size, plus the displayed size and EXIF.

Everything here is a plain function of bytes so it is tested without Ray. The work is kept as small as
the model allows: JPEGs are decoded at a reduced DCT scale (Pillow's draft mode), RAW files through
their embedded preview when it is large enough, else LibRaw's half-size demosaic.
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import rawpy
from PIL import Image, UnidentifiedImageError

from ray_pipeline.errors import UserFacingError
from ray_pipeline.metadata import (
    ROTATED_ORIENTATIONS,
    exif_fields,
    jpeg_exif_fields,
    raw_exif_fields,
)

DEFAULT_MAX_PIXELS = 250_000_000
# Resizing the short side of a 1 x 100000 strip to 224 would need gigabytes: such strips are refused.
MAX_ASPECT_RATIO = 50
_ORIENTATION_TAG = 0x0112
# EXIF orientation -> the transpose that shows the picture upright (as ImageOps.exif_transpose).
_EXIF_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# LibRaw's `flip` value -> the transpose that shows the picture upright.
_LIBRAW_FLIP = {
    3: Image.Transpose.ROTATE_180,
    5: Image.Transpose.ROTATE_90,
    6: Image.Transpose.ROTATE_270,
}


class DecodeError(UserFacingError):
    """This file cannot become a picture; the message is the reason users see."""


@dataclass(frozen=True)
class InputGeometry:
    """How the model wants its input: (height, width) and OpenCLIP's resize mode."""

    height: int
    width: int
    resize_mode: str = "shortest"  # "shortest" (resize + centre crop) or "squash"

    def __post_init__(self) -> None:
        if self.resize_mode not in ("shortest", "squash"):
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
        scale = self.height / min(width, height)
        return max(1, math.ceil(width * scale)), max(1, math.ceil(height * scale))


@dataclass
class DecodedPhoto:
    pixels: np.ndarray  # (height, width, 3) uint8 at the model's input size
    width: int  # of the picture as displayed (after orientation), at full resolution
    height: int
    exif: dict[str, Any] = field(default_factory=dict)


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode as 8-bit RGB; 16- and 32-bit greyscale are scaled, not clipped to white."""
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        values = np.asarray(image, dtype=np.uint32) if image.mode == "I" else np.asarray(image)
        image = Image.fromarray((np.clip(values, 0, 65535) >> 8).astype(np.uint8), "L")
    elif image.mode == "F":
        image = Image.fromarray(np.clip(np.asarray(image), 0, 255).astype(np.uint8), "L")
    return image if image.mode == "RGB" else image.convert("RGB")


def fit_to_input(image: Image.Image, geometry: InputGeometry) -> np.ndarray:
    """Resize and centre-crop exactly as OpenCLIP's eval transform (torchvision Resize + CenterCrop)."""
    width, height = image.size
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise DecodeError(f"picture is {width}x{height}: its aspect ratio is over {MAX_ASPECT_RATIO}:1")
    if geometry.resize_mode == "squash":
        resized = image.resize((geometry.width, geometry.height), Image.Resampling.BICUBIC)
        return np.asarray(resized, dtype=np.uint8)
    size = geometry.height
    # torchvision: the short side becomes `size`, the long side int(size * long / short).
    if width <= height:
        new_width, new_height = size, int(size * height / width)
    else:
        new_width, new_height = int(size * width / height), size
    if (new_width, new_height) != image.size:
        image = image.resize((new_width, new_height), Image.Resampling.BICUBIC)
    top = int(round((new_height - size) / 2.0))
    left = int(round((new_width - size) / 2.0))
    return np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.uint8)


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise DecodeError(
            f"image is {width}x{height} ({width * height:,} pixels), over the limit of {max_pixels:,} "
            "pixels (--max-pixels); refused as a possible decompression bomb"
        )


def _open_image(data: bytes, max_pixels: int) -> Image.Image:
    """Open (headers only) and refuse oversized pictures before any pixel is decoded."""
    Image.MAX_IMAGE_PIXELS = max_pixels  # Pillow's own guard stays on too (it raises past twice this)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # checked below, with a clear reason
            image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise DecodeError("not a recognised image format") from None
    except Image.DecompressionBombError as exc:
        raise DecodeError(
            f"over the limit of {max_pixels:,} pixels (--max-pixels); refused as a possible decompression bomb ({exc})"
        ) from None
    _check_pixels(*image.size, max_pixels)
    return image


def decode_image(data: bytes, geometry: InputGeometry, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedPhoto:
    """Decode a JPEG, PNG, TIFF, WEBP, BMP or GIF (first frame) at the smallest useful scale."""
    if not data:
        raise DecodeError("empty file")
    image = _open_image(data, max_pixels)
    try:
        exif = image.getexif()
        orientation = exif.get(_ORIENTATION_TAG, 1)
        width, height = image.size
        if orientation in ROTATED_ORIENTATIONS:
            width, height = height, width
        if image.format == "JPEG":
            image.draft("RGB", geometry.reduced_size(*image.size))
        image = to_rgb(image)
        if orientation in _EXIF_TRANSPOSE:
            image = image.transpose(_EXIF_TRANSPOSE[orientation])
        pixels = fit_to_input(image, geometry)
    except DecodeError:
        raise
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise DecodeError(f"cannot decode image: {exc}") from None
    return DecodedPhoto(pixels=pixels, width=width, height=height, exif=exif_fields(exif))


def decode_raw(data: bytes, geometry: InputGeometry, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedPhoto:
    """Decode a camera RAW file: its embedded preview when large enough, else a half-size demosaic."""
    if not data:
        raise DecodeError("empty file")
    try:
        with rawpy.imread(io.BytesIO(data)) as raw:
            sizes = raw.sizes
            _check_pixels(sizes.width, sizes.height, max_pixels)
            rotated = sizes.flip in (5, 6)
            width, height = (sizes.height, sizes.width) if rotated else (sizes.width, sizes.height)
            exif = raw_exif_fields(data)
            picture = _raw_preview(raw, geometry, max_pixels)
            if picture is not None:
                preview, preview_exif = picture
                exif = exif or preview_exif
                if sizes.flip in _LIBRAW_FLIP:
                    preview = preview.transpose(_LIBRAW_FLIP[sizes.flip])
            else:  # LibRaw applies the orientation itself when it demosaics
                preview = Image.fromarray(raw.postprocess(half_size=True, use_camera_wb=True, output_bps=8))
    except DecodeError:
        raise
    except rawpy.LibRawError as exc:
        raise DecodeError(f"LibRaw cannot decode this RAW file: {type(exc).__name__}: {exc}") from None
    except (OSError, ValueError, MemoryError) as exc:
        raise DecodeError(f"cannot decode RAW file: {exc}") from None
    return DecodedPhoto(pixels=fit_to_input(to_rgb(preview), geometry), width=width, height=height, exif=exif)


def _raw_preview(raw: rawpy.RawPy, geometry: InputGeometry, max_pixels: int) -> tuple[Image.Image, dict] | None:
    """The embedded preview as an image, when it is at least the model's input size; else None."""
    try:
        thumb = raw.extract_thumb()
    except (rawpy.LibRawNoThumbnailError, rawpy.LibRawUnsupportedThumbnailError):
        return None
    if thumb.format == rawpy.ThumbFormat.JPEG:
        try:
            preview = _open_image(thumb.data, max_pixels)
        except DecodeError:
            return None  # a broken preview is no reason to fail: demosaic instead
        if min(preview.size) < min(geometry.height, geometry.width):
            return None
        preview.draft("RGB", geometry.reduced_size(*preview.size))
        return preview, jpeg_exif_fields(thumb.data)
    preview = Image.fromarray(thumb.data)
    if min(preview.size) < min(geometry.height, geometry.width):
        return None
    return preview, {}
