"""Metadata: camera, exposure and GPS fields read from a photo's EXIF, as Chroma-ready values."""

from __future__ import annotations

import io
import math
from typing import Any

from PIL import ExifTags, Image

_IFD = ExifTags.IFD
_TAG = ExifTags.Base
_GPS = ExifTags.GPS

# EXIF orientations 5-8 are rotated by 90 degrees: the displayed width is the stored height.
ROTATED_ORIENTATIONS = frozenset({5, 6, 7, 8})


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    value = value.replace("\x00", "").strip()
    return value or None


def _number(value: Any) -> float | None:
    """An EXIF rational, int or 1-tuple as a finite float."""
    if isinstance(value, tuple) and len(value) == 1:
        value = value[0]
    try:
        number = float(value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return number if math.isfinite(number) else None


def _iso_datetime(value: Any, offset: Any) -> str | None:
    """'2024:05:01 10:20:30' (+ '+02:00') -> '2024-05-01T10:20:30+02:00'."""
    text = _text(value)
    if not text or len(text) < 19 or text[4] != ":" or text[7] != ":":
        return None
    iso = f"{text[0:4]}-{text[5:7]}-{text[8:10]}T{text[11:19]}"
    zone = _text(offset)
    return iso + zone if zone else iso


def _degrees(dms: Any, ref: Any) -> float | None:
    """GPS degrees/minutes/seconds rationals and an N/S/E/W reference -> signed decimal degrees."""
    if not isinstance(dms, tuple) or len(dms) != 3:
        return None
    parts = [_number(p) for p in dms]
    if parts[0] is None or parts[1] is None or parts[2] is None:
        return None
    degrees = parts[0] + parts[1] / 60 + parts[2] / 3600
    return -degrees if _text(ref) in ("S", "W") else degrees


def exif_fields(exif: Image.Exif) -> dict[str, Any]:
    """The record's optional camera keys that this EXIF block holds (absent keys are left out)."""
    sub = exif.get_ifd(_IFD.Exif)
    gps = exif.get_ifd(_IFD.GPSInfo)
    fields: dict[str, Any] = {
        "camera_make": _text(exif.get(_TAG.Make)),
        "camera_model": _text(exif.get(_TAG.Model)),
        "lens": _text(sub.get(_TAG.LensModel)),
        "datetime_original": _iso_datetime(
            sub.get(_TAG.DateTimeOriginal) or exif.get(_TAG.DateTime), sub.get(_TAG.OffsetTimeOriginal)
        ),
        "iso": _number(sub.get(_TAG.ISOSpeedRatings)),
        "exposure_time": _number(sub.get(_TAG.ExposureTime)),
        "f_number": _number(sub.get(_TAG.FNumber)),
        "focal_length": _number(sub.get(_TAG.FocalLength)),
        "gps_lat": _degrees(gps.get(_GPS.GPSLatitude), gps.get(_GPS.GPSLatitudeRef)),
        "gps_lon": _degrees(gps.get(_GPS.GPSLongitude), gps.get(_GPS.GPSLongitudeRef)),
    }
    if fields["iso"] is not None:
        fields["iso"] = int(fields["iso"])
    return {key: value for key, value in fields.items() if value is not None}


def raw_exif_fields(data: bytes) -> dict[str, Any]:
    """EXIF fields of a TIFF-based RAW file (DNG, CR2, NEF, ARW, PEF, ...); {} for other layouts."""
    if data[:4] not in (b"II*\x00", b"MM\x00*"):
        return {}
    exif = Image.Exif()
    try:
        exif.load(data)
        return exif_fields(exif)
    except Exception:  # a malformed IFD costs the optional fields, never the photo
        return {}


def jpeg_exif_fields(jpeg: bytes) -> dict[str, Any]:
    """EXIF fields of an embedded JPEG preview (some RAW formats keep their EXIF only there)."""
    try:
        with Image.open(io.BytesIO(jpeg)) as preview:
            return exif_fields(preview.getexif())
    except Exception:
        return {}
