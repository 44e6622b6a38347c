"""HEIC/HEIF and AVIF as phones write them, as plain functions of bytes: every orientation upright, the
primary picture of a multi-picture file, the embedded thumbnail when it is big enough for the model,
the metadata keys of a JPEG, and a reason for each file that cannot be read."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pillow_heif
import pytest
from PIL import Image

from ray_pipeline.core import defaults
from ray_pipeline.core.geometry import InputGeometry
from ray_pipeline.files.decode import DecodeError, decode_file, fit_to_input
from ray_pipeline.files.reading import FileBytes, read_file
from samples.sample_photos import real_photos, write_heif, write_jpeg

pytestmark = pytest.mark.unit

GEOMETRY = InputGeometry(224, 224)
FORMATS = [("phone.heic", "HEIF"), ("phone.avif", "AVIF")]


@pytest.fixture(scope="module")
def photos():
    return real_photos()


def decoded(path, geometry=GEOMETRY):
    return decode_file(read_file(str(path)), geometry, defaults.MAX_PIXELS)


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def model_input(upright: np.ndarray, geometry=GEOMETRY) -> np.ndarray:
    return fit_to_input(Image.fromarray(upright), geometry)


@pytest.mark.parametrize("name, fmt", FORMATS)
@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_orientation_is_shown_upright(photos, tmp_path, name, fmt, orientation):
    upright = np.asarray(Image.fromarray(photos["coffee"]).resize((300, 200), Image.Resampling.BICUBIC))
    write_heif(str(tmp_path / name), upright, orientation=orientation, quality=95, fmt=fmt)
    photo = decoded(tmp_path / name)
    assert (photo.width, photo.height) == (300, 200)
    assert mean_abs_diff(photo.pixels, model_input(upright)) < 6
    if orientation != 1:  # the check can tell: the picture as stored, not turned, is far off
        stored = np.asarray(Image.fromarray(upright).transpose(Image.Transpose.ROTATE_180))
        assert mean_abs_diff(model_input(stored), model_input(upright)) > 20


@pytest.mark.parametrize("name, fmt", FORMATS)
def test_metadata_keys_are_those_of_the_same_jpeg(photos, tmp_path, name, fmt):
    write_jpeg(str(tmp_path / "phone.jpg"), photos["astronaut"], orientation=6, gps=(-33.8568, 151.2153))
    write_heif(str(tmp_path / name), photos["astronaut"], orientation=6, gps=(-33.8568, 151.2153), fmt=fmt)
    jpeg, phone = decoded(tmp_path / "phone.jpg"), decoded(tmp_path / name)
    assert set(phone.exif) == {"camera_make", "camera_model", "lens", "datetime_original", "iso", "exposure_time",
                               "f_number", "focal_length", "gps_lat", "gps_lon"}
    assert phone.exif == jpeg.exif
    assert phone.exif["gps_lat"] == pytest.approx(-33.8568, abs=1e-4)
    assert (phone.width, phone.height) == (jpeg.width, jpeg.height)


def test_the_primary_picture_of_a_multi_picture_file(photos, tmp_path):
    """A burst or an edited HEIC holds several pictures; the one marked primary is the photo."""
    pillow_heif.register_heif_opener()
    coffee, rocket = Image.fromarray(photos["coffee"]), Image.fromarray(photos["rocket"])
    coffee.save(tmp_path / "burst.heic", save_all=True, append_images=[rocket], primary_index=1, quality=95)
    assert len(pillow_heif.open_heif(tmp_path / "burst.heic")) == 2
    photo = decoded(tmp_path / "burst.heic")
    assert (photo.width, photo.height) == rocket.size
    assert mean_abs_diff(photo.pixels, model_input(photos["rocket"])) < 6
    # An AVIF sequence (frames of one size): its first frame.
    coffee.save(tmp_path / "sequence.avif", save_all=True, append_images=[rocket.resize(coffee.size)], quality=95)
    first = decoded(tmp_path / "sequence.avif")
    assert mean_abs_diff(first.pixels, model_input(photos["coffee"])) < 6


def test_an_embedded_thumbnail_big_enough_for_the_model_is_decoded_instead(photos, tmp_path):
    big = np.asarray(Image.fromarray(photos["china"]).resize((1600, 1068), Image.Resampling.BICUBIC))
    write_heif(str(tmp_path / "big.heic"), big, thumbnail=400)
    heif = pillow_heif.open_heif(tmp_path / "big.heic")
    thumbnail = heif[0].get_thumbnail(0).to_pillow()
    assert thumbnail.size == (400, 266)
    full = heif[0].to_pillow()

    assert GEOMETRY.reduced_size(1600, 1068) == (336, 224)  # the thumbnail is big enough
    photo = decoded(tmp_path / "big.heic")
    assert (photo.width, photo.height) == (1600, 1068)  # the photo's own size, not the thumbnail's
    assert np.array_equal(photo.pixels, fit_to_input(thumbnail, GEOMETRY))
    assert not np.array_equal(photo.pixels, fit_to_input(full, GEOMETRY))
    # The same picture: libheif's thumbnails (encoded small, at 4:2:0) differ on fine detail only.
    assert mean_abs_diff(photo.pixels, fit_to_input(full, GEOMETRY)) < 12
    assert mean_abs_diff(photo.pixels, model_input(photos["coffee"])) > 40

    larger = InputGeometry(448, 448)  # needs 671 x 448: the thumbnail is too small, the picture is decoded
    assert np.array_equal(decoded(tmp_path / "big.heic", larger).pixels, fit_to_input(full, larger))


def test_broken_truncated_and_mislabelled_files_get_a_reason(photos, tmp_path):
    for name, fmt in FORMATS:
        write_heif(str(tmp_path / name), photos["coffee"], fmt=fmt)
    write_jpeg(str(tmp_path / "camera.jpg"), photos["coffee"])
    heic, avif = (tmp_path / "phone.heic").read_bytes(), (tmp_path / "phone.avif").read_bytes()
    jpeg = (tmp_path / "camera.jpg").read_bytes()
    cases = [
        ("cut.heic", heic[: len(heic) // 2], "broken or truncated HEIF file: .*end of file"),
        ("cut.avif", avif[: len(avif) // 2], "broken or truncated AVIF file: .*"),
        ("header-only.HEIC", heic[:200], "broken or truncated HEIF file"),
        ("camera.heic", jpeg, "holds a JPEG picture, not the HEIF or AVIF its name says"),
        ("camera.avif", jpeg, "holds a JPEG picture"),
        ("noise.hif", np.random.default_rng(0).bytes(5000), "not a recognised image format"),
        ("empty.heif", b"", "empty file"),
    ]
    for name, data, reason in cases:
        with pytest.raises(DecodeError, match=reason):
            decode_file(FileBytes(name, data, len(data), 0.0), GEOMETRY, defaults.MAX_PIXELS)
    with pytest.raises(DecodeError, match=r"600x400 \(240,000 pixels\), over the limit of 200,000"):
        decode_file(FileBytes("phone.heic", heic, len(heic), 0.0), GEOMETRY, 200_000)
    # Bytes say what a file is: a HEIC under another name is still read.
    assert decode_file(FileBytes("renamed.jpg", heic, len(heic), 0.0), GEOMETRY, defaults.MAX_PIXELS).width == 600


def test_without_pillow_heif_a_heic_is_a_clear_error_not_a_skip(photos, tmp_path):
    """A missing decoder cannot be caused here without uninstalling a dependency: a child Python runs with
    the import of pillow_heif blocked, a fake of that one fault."""
    write_heif(str(tmp_path / "phone.heic"), photos["coffee"])
    code = (
        "import sys; sys.modules['pillow_heif'] = None\n"
        "from ray_pipeline.core.geometry import InputGeometry\n"
        "from ray_pipeline.files.decode import DecodeError, decode_file\n"
        "from ray_pipeline.files.reading import read_file\n"
        "try:\n"
        f"    decode_file(read_file({str(tmp_path / 'phone.heic')!r}), InputGeometry(64, 64), 10**8)\n"
        "except DecodeError as exc:\n"
        "    print(exc)\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert "HEIF picture, but the pillow-heif package that reads HEIF is not installed (pip install pillow-heif)" \
        in completed.stdout


def test_heif_through_pillow_keeps_its_format_name(photos, tmp_path):
    """The checks above rest on the format names the decoders give: HEIF from pillow-heif, AVIF from Pillow."""
    for name, fmt in FORMATS:
        write_heif(str(tmp_path / name), photos["coffee"], fmt=fmt)
        assert Image.open(io.BytesIO((tmp_path / name).read_bytes())).format == fmt
