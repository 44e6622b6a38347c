"""Formats: the file extensions the pipeline reads, and what an extension says of a file."""

from __future__ import annotations

import os

# HEIF (HEVC in a HEIF container, as phones write it) and AVIF (AV1 in the same container).
HEIF_EXTENSIONS = frozenset({"heic", "heif", "hif", "avif"})
PHOTO_EXTENSIONS = frozenset({"jpg", "jpeg", "png", "tif", "tiff", "webp", "bmp", "gif"}) | HEIF_EXTENSIONS
RAW_EXTENSIONS = frozenset({"dng", "cr2", "cr3", "nef", "arw", "rw2", "orf", "raf", "pef", "srw"})
SUPPORTED_EXTENSIONS = PHOTO_EXTENSIONS | RAW_EXTENSIONS


def extension_of(path: str) -> str:
    """Lower-case extension without the dot ('' when there is none)."""
    return os.path.splitext(path)[1][1:].lower()


def is_raw(path: str) -> bool:
    return extension_of(path) in RAW_EXTENSIONS


def is_heif(path: str) -> bool:
    """Named as a HEIF or AVIF file: its bytes must be one (a JPEG under that name is refused)."""
    return extension_of(path) in HEIF_EXTENSIONS
