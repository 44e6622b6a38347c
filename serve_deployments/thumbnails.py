"""Thumbnails: a recorded photo's file, checked against its record, made into a small JPEG.

A record's id is the SHA-256 of the file's bytes, so a thumbnail is made only while the file at the
recorded path still holds exactly those bytes; what it shows then never changes and may be cached.
"""

from __future__ import annotations

import hashlib
import io

from PIL import Image

from ray_pipeline.core import defaults
from ray_pipeline.core.geometry import InputGeometry
from ray_pipeline.core.paths import path_text
from ray_pipeline.files.decode import decode_file
from ray_pipeline.files.reading import FileBytes, TooLarge, read_file

MIN_SIZE, MAX_SIZE, DEFAULT_SIZE = 32, 1024, 256
JPEG_QUALITY = 85


class FileChanged(Exception):
    """The recorded file is gone, unreadable, or holds other bytes now; the message says which."""


def recorded_file(path: str, record_id: str, file_size: int) -> FileBytes:
    """The bytes at `path`, only while they still hash to `record_id`: read as ingestion reads (without
    blocking, a regular file only, never more than the recorded size). Messages name the file as text,
    since its name need not be UTF-8, and say nothing of what lies there now."""
    try:
        file = read_file(path, max_bytes=file_size)
    except FileNotFoundError:
        raise FileChanged(f"the recorded file is gone: {path_text(path)} (if it moved, ingesting its new folder updates "
                          "the record)") from None
    except TooLarge:
        raise FileChanged(f"the file at {path_text(path)} has changed since it was ingested; ingest it again") from None
    except OSError as exc:
        raise FileChanged(f"cannot read the recorded file {path_text(path)}: {exc.strerror or exc}") from None
    if file.size != file_size or hashlib.sha256(file.data).hexdigest() != record_id:
        raise FileChanged(f"the file at {path_text(path)} has changed since it was ingested; ingest it again")
    return file


def thumbnail_jpeg(file: FileBytes, size: int, max_decoded: int) -> bytes:
    """A `size` x `size` upright centre crop, decoded as ingestion decodes (JPEG at a reduced DCT scale,
    RAW through its embedded preview or a half-size demosaic), no more than `max_decoded` pixels of it; a
    DecodeError says why it cannot be."""
    pixels = decode_file(file, InputGeometry(size, size), defaults.MAX_PIXELS, max_decoded).pixels
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=JPEG_QUALITY)
    return out.getvalue()


FACE_MARGIN = 0.3  # of the face's box, around it on each side: the hair and the chin


def face_jpeg(file: FileBytes, box: tuple[float, float, float, float], size: int, max_decoded: int) -> bytes:
    """A `size` x `size` JPEG of one face: its box (fractions of the photo as shown) with a margin, squared, cut
    from the photo decoded upright at 1,024 pixels on its long side."""
    pixels = decode_file(file, InputGeometry(1024, 1024, "fit"), defaults.MAX_PIXELS, max_decoded).pixels
    height, width = pixels.shape[:2]
    left, top, right, bottom = box[0] * width, box[1] * height, box[2] * width, box[3] * height
    side = max(right - left, bottom - top) * (1 + 2 * FACE_MARGIN)
    middle_x, middle_y = (left + right) / 2, (top + bottom) / 2
    crop = Image.fromarray(pixels).crop((round(middle_x - side / 2), round(middle_y - side / 2),
                                         round(middle_x + side / 2), round(middle_y + side / 2)))
    out = io.BytesIO()
    crop.resize((size, size), Image.Resampling.LANCZOS).save(out, "JPEG", quality=JPEG_QUALITY)
    return out.getvalue()


def etag_matches(if_none_match: str, etag: str) -> bool:
    """Does an If-None-Match header (a list of tags, weak or strong, or `*`) name this ETag?"""
    tags = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
    return "*" in tags or etag in tags
