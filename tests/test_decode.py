"""Decoding and metadata as plain functions of bytes: formats, modes, orientation, RAW, and clear
reasons for what cannot be decoded."""

from __future__ import annotations

import io
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from ray_pipeline.core.geometry import InputGeometry
from ray_pipeline.files.decode import DecodeError, decode_image, decode_raw, fit_to_input, to_rgb
from samples.sample_photos import STORED_AS, real_photos, write_dng, write_jpeg

pytestmark = pytest.mark.unit

GEOMETRY = InputGeometry(224, 224)


@pytest.fixture(scope="module")
def photos():
    return real_photos()


def encoded(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def openclip_pixels(image: Image.Image) -> np.ndarray:
    """What OpenCLIP's eval transform (Resize + CenterCrop) makes of an image, as uint8."""
    from torchvision import transforms

    pipeline = transforms.Compose([transforms.Resize(224, interpolation=transforms.InterpolationMode.BICUBIC), transforms.CenterCrop(224)])
    return np.asarray(pipeline(image.convert("RGB")))


def test_resize_and_crop_equal_openclip_exactly(photos):
    image = Image.fromarray(photos["chelsea"])
    assert np.array_equal(fit_to_input(image, GEOMETRY), openclip_pixels(image))


def test_exif_orientation_is_applied(photos, tmp_path):
    for orientation in (3, 6, 8):
        write_jpeg(str(tmp_path / "o.jpg"), photos["coffee"], orientation=orientation, quality=95)
        photo = decode_image((tmp_path / "o.jpg").read_bytes(), GEOMETRY)
        assert (photo.width, photo.height) == (600, 400)
        assert mean_abs_diff(photo.pixels, openclip_pixels(Image.fromarray(photos["coffee"]))) < 6, orientation


def test_large_jpeg_is_decoded_at_reduced_scale_with_the_same_picture(photos):
    big = Image.fromarray(photos["china"]).resize((3200, 2136), Image.Resampling.BICUBIC)
    data = encoded(big, "JPEG", quality=90)
    assert GEOMETRY.reduced_size(3200, 2136) == (336, 224)  # draft then picks 1/8: 400 x 267
    photo = decode_image(data, GEOMETRY)
    assert (photo.width, photo.height) == (3200, 2136)
    assert mean_abs_diff(photo.pixels, openclip_pixels(Image.open(io.BytesIO(data)))) < 4


@pytest.mark.parametrize("mode", ["P", "RGBA", "LA", "L", "1", "CMYK", "I", "F"])
def test_every_mode_becomes_rgb(photos, mode):
    source = Image.fromarray(photos["rocket"]).convert(mode)
    assert to_rgb(source).mode == "RGB"
    fmt = "TIFF" if mode in ("I", "F", "CMYK", "LA") else "PNG"
    assert decode_image(encoded(source, fmt), GEOMETRY).pixels.shape == (224, 224, 3)


def test_16_bit_greyscale_is_scaled_not_clipped(photos):
    grey = np.asarray(Image.fromarray(photos["astronaut"]).convert("L"))
    sixteen = Image.fromarray(grey.astype(np.uint16) * 257)
    assert sixteen.mode.startswith("I;16")
    photo = decode_image(encoded(sixteen, "PNG"), GEOMETRY)
    assert mean_abs_diff(photo.pixels, openclip_pixels(Image.fromarray(grey))) < 1


def test_exif_camera_fields(photos, tmp_path):
    write_jpeg(str(tmp_path / "c.jpg"), photos["astronaut"], gps=(-33.8568, 151.2153))
    exif = decode_image((tmp_path / "c.jpg").read_bytes(), GEOMETRY).exif
    assert exif["camera_make"] == "Sampleco" and exif["lens"] == "Sampleco 35mm F2"
    assert exif["datetime_original"] == "2024-05-01T10:20:30"
    assert exif["iso"] == 400 and exif["f_number"] == pytest.approx(2.8)
    assert exif["exposure_time"] == pytest.approx(1 / 250)
    assert exif["gps_lat"] == pytest.approx(-33.8568, abs=1e-4)  # south is negative
    assert exif["gps_lon"] == pytest.approx(151.2153, abs=1e-4)


def test_dng_decodes(photos, tmp_path):
    write_dng(str(tmp_path / "f.dng"), photos["flower"])
    photo = decode_raw((tmp_path / "f.dng").read_bytes(), GEOMETRY)
    assert (photo.width, photo.height) == (640, 426)
    assert photo.exif["camera_model"] == "Field One"
    # The picture from the sensor's mosaic shows the same scene: compare with the source photo's colours broadly.
    reference = openclip_pixels(Image.fromarray(photos["flower"][:426]))
    assert np.corrcoef(photo.pixels.ravel(), reference.ravel())[0, 1] > 0.8


@pytest.mark.parametrize("black_level, neutral, mosaic", [
    (0, (1000, 1000, 1000), True),
    (256, (500, 1000, 800), True),  # a black level and a camera white balance to undo
    (256, (500, 1000, 800), False),  # a linear DNG: no mosaic to bin, LibRaw decodes it
])
def test_raw_without_preview_looks_as_libraw_shows_it(photos, tmp_path, black_level, neutral, mosaic):
    """A Bayer mosaic is binned straight to the model's size, other sensors go through LibRaw's half-size
    demosaic; either way the picture is the one LibRaw's demosaic shows."""
    import rawpy

    from ray_pipeline.files.decode import _binned_mosaic, fit_to_input

    path = tmp_path / "f.dng"
    write_dng(str(path), photos["flower"], black_level, neutral, mosaic)
    photo = decode_raw(path.read_bytes(), GEOMETRY)
    with rawpy.imread(str(path)) as raw:
        assert (_binned_mosaic(raw, (224, 224)) is not None) == mosaic
        demosaiced = Image.fromarray(raw.postprocess(half_size=True, use_camera_wb=True, output_bps=8))
    reference = fit_to_input(demosaiced, GEOMETRY)
    assert np.corrcoef(photo.pixels.ravel().astype(float), reference.ravel().astype(float))[0, 1] > 0.99
    assert mean_abs_diff(photo.pixels, reference) < 6


@pytest.mark.parametrize(
    "data, decoder, reason",
    [
        (b"", decode_image, "empty file"),
        (b"plain text, not a photo\n", decode_image, "not a recognised image format"),
        (b"\xff\xd8\xff\xe0" + bytes(200), decode_image, "not a recognised image format"),
        (bytes(range(256)) * 100, decode_raw, "LibRaw cannot decode this RAW file"),
        (b"", decode_raw, "empty file"),
    ],
)
def test_undecodable_bytes_give_a_reason(data, decoder, reason):
    with pytest.raises(DecodeError, match=reason):
        decoder(data, GEOMETRY)


def test_truncated_jpeg_gives_a_reason(photos):
    data = encoded(Image.fromarray(photos["coffee"]), "JPEG")
    with pytest.raises(DecodeError, match="cannot decode image"):
        decode_image(data[: len(data) // 3], GEOMETRY)


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares a huge picture: a decompression bomb."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_decompression_bomb_is_refused_at_once():
    started = time.monotonic()
    with pytest.raises(DecodeError, match="decompression bomb"):
        decode_image(png_claiming(60_000, 60_000), GEOMETRY)
    assert time.monotonic() - started < 1  # refused from the header, nothing allocated


def test_pixel_limit_is_configurable(photos):
    data = encoded(Image.fromarray(photos["coffee"]), "PNG")
    with pytest.raises(DecodeError, match="over the limit of 100,000 pixels .*decompression bomb"):
        decode_image(data, GEOMETRY, max_pixels=100_000)
    with pytest.raises(DecodeError, match=r"600x400 \(240,000 pixels\), over the limit of 200,000 pixels"):
        decode_image(data, GEOMETRY, max_pixels=200_000)
    assert decode_image(data, GEOMETRY, max_pixels=240_000).pixels.shape == (224, 224, 3)


def test_hostile_exif_and_strips_are_per_file_errors(photos, tmp_path):
    from ray_pipeline.files.decode import decode_file
    from ray_pipeline.files.reading import FileBytes

    # An EXIF block whose ExifOffset is negative: Pillow raises ValueError deep inside.
    ifd = struct.pack("<2sH I H HHIi I", b"II", 42, 8, 1, 0x8769, 9, 1, -5, 0)
    hostile = encoded(Image.fromarray(photos["coffee"]), "JPEG", exif=b"Exif\x00\x00" + ifd)
    strip = encoded(Image.new("RGB", (20_000, 2)), "PNG")
    for name, data in (("hostile.jpg", hostile), ("strip.png", strip)):
        with pytest.raises(DecodeError):
            decode_file(FileBytes(name, data, len(data), 0.0), GEOMETRY, 250_000_000)


@pytest.mark.parametrize("mode, compression", [
    ("RGB", "raw"), ("RGB", "tiff_lzw"), ("RGB", "tiff_adobe_deflate"), ("RGB", "packbits"), ("RGB", "jpeg"),
    ("L", "tiff_deflate"), ("1", "group4"), ("1", "tiff_lzw"),
])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_tiff_orientation_as_exif_transpose_shows_it(photos, mode, compression, orientation):
    """A TIFF's Orientation tag is applied once, as ImageOps.exif_transpose applies it, whatever the compression
    (recent Pillow turns TIFFs upright itself while loading them)."""
    from PIL import ImageOps

    upright = Image.fromarray(photos["coffee"]).resize((150, 100), Image.Resampling.BICUBIC).convert(mode)
    stored = upright if orientation == 1 else upright.transpose(STORED_AS[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encoded(stored, "TIFF", compression=compression, exif=exif)
    assert Image.open(io.BytesIO(data)).tag_v2[0x0112] == orientation  # carried as real files carry it

    reference = to_rgb(ImageOps.exif_transpose(Image.open(io.BytesIO(data))))
    assert reference.size == (150, 100)  # the reference itself is upright: turned back, sides swapped for 5-8
    tolerance = 5 if compression == "jpeg" else 0  # a wrong turn differs by about 45
    assert mean_abs_diff(np.asarray(reference), np.asarray(to_rgb(upright))) <= tolerance

    photo = decode_image(data, GEOMETRY)
    assert (photo.width, photo.height) == (150, 100)
    assert np.array_equal(photo.pixels, fit_to_input(reference, GEOMETRY))
