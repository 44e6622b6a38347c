"""Decoding: file bytes -> an RGB uint8 array at the model's input size, plus the displayed size and EXIF.

Everything here is a plain function of bytes so it is tested without Ray. The work is kept as small as
the model allows: JPEGs are decoded at a reduced DCT scale (Pillow's draft mode), HEIF files through
their embedded thumbnail when it is large enough (pillow-heif's draft), RAW files through their
embedded preview when it is large enough, else straight from the Bayer mosaic at reduced size
(LibRaw's half-size demosaic for other sensors). HEIF (HEVC) is read by libheif through pillow-heif,
AVIF by Pillow itself.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import rawpy
from PIL import Image, UnidentifiedImageError, features

from ray_pipeline.core import defaults
from ray_pipeline.core.errors import UserFacingError
from ray_pipeline.core.formats import is_heif, is_raw
from ray_pipeline.core.geometry import InputGeometry
from ray_pipeline.core.reasons import PIXEL_LIMIT, PREVIEW_LIMIT
from ray_pipeline.files.metadata import ROTATED_ORIENTATIONS, exif_fields, jpeg_exif_fields, raw_exif_fields
from ray_pipeline.files.reading import FileBytes

try:
    import pillow_heif
except ImportError:  # said per file, with what to install, when a HEIF picture comes
    pillow_heif = None
else:
    pillow_heif.register_heif_opener()

# Resizing the short side of a 1 x 100000 strip to 224 would need gigabytes: such strips are refused.
MAX_ASPECT_RATIO = 50
_ORIENTATION_TAG = 0x0112
# The formats a HEIF or AVIF name promises (Pillow's format names); other bytes under such a name are refused.
HEIF_FORMATS = ("HEIF", "AVIF")
# ISO BMFF brands (the `ftyp` box) that say which codec a HEIF container holds.
_HEVC_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1"})
_AV1_BRANDS = frozenset({b"avif", b"avis"})
_EXTENSION_OF = {"MPO": "jpg", "JPEG": "jpg"}  # Pillow's format -> the extension to suggest (a phone's JPEG can be MPO)
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
# LibRaw's defaults, which a binned Bayer mosaic follows: sRGB primaries (linear sRGB -> XYZ, D65),
# the BT.709 tone curve, and a brightness that lets the brightest 1% of pixels clip.
_XYZ_FROM_SRGB = np.array([[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169],
                           [0.019334, 0.119193, 0.950227]])
_AUTO_BRIGHT_CLIPPED = 0.01


class DecodeError(UserFacingError):
    """This file cannot become a picture; the message is the reason users see."""


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
    """Resize and centre-crop exactly as OpenCLIP's eval transform (torchvision Resize + CenterCrop); or, for
    `fit`, the whole picture within the geometry's box."""
    width, height = image.size
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise DecodeError(f"picture is {width}x{height}: its aspect ratio is over {MAX_ASPECT_RATIO}:1")
    if geometry.resize_mode == "fit":
        fitted = geometry.fitted_size(width, height)
        return np.asarray(image if fitted == image.size else image.resize(fitted, Image.Resampling.BICUBIC), dtype=np.uint8)
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
            f"pixels {PIXEL_LIMIT}; refused as a possible decompression bomb"
        )


def _open_image(data: bytes, max_pixels: int) -> Image.Image:
    """Open (headers only) and refuse oversized pictures before any pixel is decoded.

    Pillow's own guard stays on too (it raises past twice its limit). Its limit is one setting for the
    whole process, so it is only ever raised, to the largest limit asked for: a small limit of one call
    never reaches another's pictures; each call's own limit is checked here, after the headers."""
    if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < max_pixels:
        Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # checked below, with a clear reason
            image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise DecodeError(_unidentified(data)) from None
    except Image.DecompressionBombError as exc:
        raise DecodeError(
            f"over the limit of {max_pixels:,} pixels {PIXEL_LIMIT}; refused as a possible decompression bomb ({exc})"
        ) from None
    width, height = image.size
    _check_pixels(width, height, max_pixels)
    return image


def container_of(data: bytes) -> str | None:
    """'HEIF' (HEVC) or 'AVIF' (AV1) by the file's `ftyp` box, else None."""
    if data[4:8] != b"ftyp":
        return None
    end = min(int.from_bytes(data[:4], "big"), len(data), 256)
    brands = {data[8:12], *(data[i : i + 4] for i in range(16, end - 3, 4))}
    if brands & _AV1_BRANDS and not brands & (_HEVC_BRANDS - {b"mif1", b"msf1"}):
        return "AVIF"
    return "HEIF" if brands & _HEVC_BRANDS else None


def _missing_decoder(container: str) -> str | None:
    """Why this installation cannot read a container at all, with what to install."""
    if container == "HEIF" and pillow_heif is None:
        return "a HEIF picture, but the pillow-heif package that reads HEIF is not installed (pip install pillow-heif)"
    if container == "AVIF" and not features.check("avif"):
        return "an AVIF picture, but this Pillow was built without AVIF support (Pillow 11.3 or newer from PyPI reads it)"
    return None


def _unidentified(data: bytes) -> str:
    """The reason for bytes no Pillow plugin would open: a HEIF or AVIF container gets its decoder's own."""
    container = container_of(data)
    if container is None:
        return "not a recognised image format"
    missing = _missing_decoder(container)
    if missing:
        return missing
    try:
        Image.OPEN[container][0](io.BytesIO(data))  # the plugin itself, which says what is wrong
    except Exception as exc:
        return _decoder_failure(container, exc)
    return f"broken {container} file"


def _decoder_failure(container: str | None, exc: BaseException) -> str:
    """The reason for a picture its decoder gave up on. A HEIF or AVIF file is "broken or truncated" by
    what the file is (its container) and that its decoder raised, whatever words libheif or libavif use
    (they change between releases); the decoder's own words follow, for people."""
    words = str(exc).strip() or type(exc).__name__
    return (f"broken or truncated {container} file: {words}" if container else f"cannot decode image: {words}")[:500]


def decode_image(data: bytes, geometry: InputGeometry, max_pixels: int = defaults.MAX_PIXELS,
                 formats: tuple[str, ...] = (), max_decoded: int | None = None) -> DecodedPhoto:
    """Decode a JPEG, PNG, TIFF, WEBP, BMP, GIF (first frame), HEIF or AVIF (primary picture) at the
    smallest useful scale. `formats`: those the file's name promises (HEIF_FORMATS), () for any.
    `max_decoded`: the most pixels to decode, at that scale (a preview's bound on memory)."""
    if not data:
        raise DecodeError("empty file")
    image = _open_image(data, max_pixels)
    if formats and image.format not in formats:
        raise DecodeError(f"holds a {image.format} picture, not the {' or '.join(formats)} its name says: "
                          f"rename it to .{_EXTENSION_OF.get(image.format, (image.format or 'bin').lower())}")
    try:
        width, height = image.size
        if image.format in ("JPEG", "HEIF"):  # a reduced DCT scale; HEIF: an embedded thumbnail big enough
            image.draft("RGB", geometry.reduced_size(*image.size))
        if max_decoded is not None and image.size[0] * image.size[1] > max_decoded:  # before a PNG's EXIF loads it all
            raise DecodeError(f"picture is {width}x{height}: a preview of it would decode {image.size[0] * image.size[1]:,} "
                              f"pixels, over the limit of {max_decoded:,} {PREVIEW_LIMIT}")
        exif = image.getexif()
        image.load()
        # Recent Pillow turns a TIFF upright itself: its size is the upright one from the start, and
        # loading transposes it and drops its Orientation tag. Only an orientation left after loading
        # is still to be applied; read before, a TIFF would be turned twice.
        orientation = image.getexif().get(_ORIENTATION_TAG, 1)
        if orientation in ROTATED_ORIENTATIONS:
            width, height = height, width
        image = to_rgb(image)
        if orientation in _EXIF_TRANSPOSE:
            image = image.transpose(_EXIF_TRANSPOSE[orientation])
        pixels = fit_to_input(image, geometry)
    except DecodeError:
        raise
    except (OSError, ValueError, SyntaxError, EOFError, RuntimeError) as exc:
        raise DecodeError(_decoder_failure(container_of(data), exc)) from None
    return DecodedPhoto(pixels=pixels, width=width, height=height, exif=exif_fields(exif))


def decode_raw(data: bytes, geometry: InputGeometry, max_pixels: int = defaults.MAX_PIXELS) -> DecodedPhoto:
    """Decode a camera RAW file: its embedded preview when large enough, else its binned mosaic."""
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
            else:
                preview = _binned_mosaic(raw, geometry.reduced_size(width, height))
                if preview is None:  # not a plain Bayer sensor: LibRaw demosaics, and turns the picture itself
                    preview = Image.fromarray(raw.postprocess(half_size=True, use_camera_wb=True, output_bps=8))
                elif sizes.flip in _LIBRAW_FLIP:
                    preview = preview.transpose(_LIBRAW_FLIP[sizes.flip])
    except DecodeError:
        raise
    except rawpy.LibRawError as exc:
        raise DecodeError(f"LibRaw cannot decode this RAW file: {type(exc).__name__}: {exc}") from None
    except (OSError, ValueError, MemoryError) as exc:
        raise DecodeError(f"cannot decode RAW file: {exc}") from None
    return DecodedPhoto(pixels=fit_to_input(to_rgb(preview), geometry), width=width, height=height, exif=exif)


def _binned_mosaic(raw: rawpy.RawPy, upright_size: tuple[int, int]) -> Image.Image | None:
    """The picture straight from a Bayer mosaic, each pixel the mean of a block of 2k x 2k sensor cells,
    as small as `upright_size` allows, in LibRaw's colours: camera white balance, the camera's colour
    matrix to sRGB, auto-brightness, BT.709 curve. Several times cheaper than demosaicing 24 MP for a
    model that sees 224 x 224. None for other sensors (X-Trans, four colours, non-square pixels)."""
    pattern, colours = raw.raw_pattern, raw.color_desc.decode("ascii", "replace")
    if (raw.raw_type != rawpy.RawType.Flat or pattern is None or pattern.shape != (2, 2) or colours[:3] != "RGB"
            or sorted(colours[i] for i in pattern.ravel()) != ["B", "G", "G", "R"] or raw.sizes.pixel_aspect != 1):
        return None
    srgb_from_cam = _srgb_from_camera(raw)
    if srgb_from_cam is None:
        return None

    mosaic = raw.raw_image_visible
    height, width = mosaic.shape
    wanted_width, wanted_height = upright_size[::-1] if raw.sizes.flip in (5, 6) else upright_size
    k = max(1, min(height // (2 * wanted_height), width // (2 * wanted_width)))
    block = 2 * k
    rows, cols = height // block, width // block
    black = np.asarray(raw.black_level_per_channel, np.float64)
    if not rows or not cols or raw.white_level <= black.max():
        return None  # nothing to bin, or no range between black and white: LibRaw judges
    cells = _block_means(mosaic[: rows * block, : cols * block], k)
    balance = np.asarray(raw.camera_whitebalance, np.float64)
    if not (balance[:3] > 0).all():
        balance = np.asarray(raw.daylight_whitebalance, np.float64)
        if not (balance[:3] > 0).all():
            return None
    balance[3] = balance[3] or balance[1]
    balance /= balance[:3].min()
    camera = np.zeros((rows, cols, 3))
    for dy in range(2):
        for dx in range(2):
            index = pattern[dy, dx]
            channel = index if index < 3 else 1
            scale = balance[index] / (raw.white_level - black[index])
            weight = 0.5 if colours[index] == "G" else 1.0  # two green cells per block
            camera[..., channel] += weight * np.clip((cells[:, dy, :, dx] - black[index]) * scale, 0, 1)
    linear = np.clip(camera @ srgb_from_cam.T, 0, 1)
    white = max(float(np.quantile(linear[..., c], 1 - _AUTO_BRIGHT_CLIPPED)) for c in range(3))
    linear = np.clip(linear / max(white, 1e-6), 0, 1)
    curved = np.where(linear < 0.018, 4.5 * linear, 1.099 * np.power(linear, 0.45) - 0.099)
    return Image.fromarray(np.round(curved * 255).astype(np.uint8))


def _block_means(mosaic: np.ndarray, k: int) -> np.ndarray:
    """(rows, 2, cols, 2): the mean of each of the four CFA positions over each block of 2k x 2k cells.
    Summing k rows at a time first keeps it one pass over the 24 MP, in tens of milliseconds."""
    rows, cols = mosaic.shape[0] // (2 * k), mosaic.shape[1] // (2 * k)
    summed = mosaic.reshape(rows, k, 2 * mosaic.shape[1]).sum(axis=1, dtype=np.uint32)
    return summed.reshape(rows, 2, cols, k, 2).sum(axis=3) / (k * k)


def _srgb_from_camera(raw: rawpy.RawPy) -> np.ndarray | None:
    """The 3 x 3 matrix LibRaw converts camera colours to sRGB with (with camera white balance on): the
    file's own matrix (always present in a DNG), else one from LibRaw's table of cameras."""
    embedded = np.asarray(raw.color_matrix, np.float64)
    if embedded[0, 0] > 0.125 and not embedded[:, 3].any():
        return embedded[:, :3]
    cam_xyz = np.asarray(raw.rgb_xyz_matrix, np.float64)
    if not cam_xyz[:3].any() or cam_xyz[3].any():
        return None
    cam_rgb = cam_xyz[:3] @ _XYZ_FROM_SRGB
    cam_rgb /= cam_rgb.sum(axis=1, keepdims=True)  # as LibRaw: white stays white
    return np.linalg.inv(cam_rgb)


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


def decode_file(file: FileBytes, geometry: InputGeometry, max_pixels: int, max_decoded: int | None = None) -> DecodedPhoto:
    """Decode by extension; whatever a decoder raises on hostile bytes becomes this file's DecodeError.
    `max_decoded`: the most pixels a picture may need decoded (a RAW file's preview or binned mosaic is
    always small), for the app's previews; ingestion bounds a picture by `max_pixels` alone."""
    try:
        if is_raw(file.path):
            return decode_raw(file.data, geometry, max_pixels)
        return decode_image(file.data, geometry, max_pixels, HEIF_FORMATS if is_heif(file.path) else (), max_decoded)
    except DecodeError:
        raise
    except Exception as exc:  # one bad file must never fail the batch it is in
        raise DecodeError(f"cannot decode: {type(exc).__name__}: {exc}"[:500]) from None
