"""Sample photos for the demo, the tests and the benchmarks, made from real pictures that ship in
scikit-image and scikit-learn: JPEG, HEIC and AVIF with EXIF, PNG in several modes, WEBP, TIFF and DNG (RAW).

Run `python -m samples.sample_photos FOLDER` to write a small library into FOLDER.
"""

from __future__ import annotations

import io
import os
import sys
from fractions import Fraction

import numpy as np
from PIL import ExifTags, Image
from PIL.TiffImagePlugin import IFDRational

CAMERA = {"make": "Sampleco", "model": "Field One", "lens": "Sampleco 35mm F2"}


def real_photos() -> dict[str, np.ndarray]:
    """Real RGB photographs (uint8, H x W x 3) from the packages' bundled data."""
    from skimage import data
    from sklearn.datasets import load_sample_images

    photos = {name: getattr(data, name)() for name in ("astronaut", "chelsea", "coffee", "rocket")}
    china, flower = load_sample_images().images
    photos.update(china=china, flower=flower)
    return photos


def _rational(value: float) -> IFDRational:
    fraction = Fraction(value).limit_denominator(10000)
    return IFDRational(fraction.numerator, fraction.denominator)


# What `camera_exif` writes unless told otherwise.
SHOT = {"taken": "2024:05:01 10:20:30", "iso": 400, "exposure_time": 1 / 250, "f_number": 2.8, "focal_length": 35.0}


def camera_exif(orientation: int = 1, gps: tuple[float, float] | None = None, **shot) -> Image.Exif:
    """An EXIF block with camera, exposure and (optionally) GPS fields, as cameras write them. `shot`
    overrides CAMERA's make, model and lens and SHOT's fields ("taken" as EXIF writes it: 2024:05:01 10:20:30)."""
    shot = {**CAMERA, **SHOT, **shot}
    exif = Image.Exif()
    tag, gps_tag = ExifTags.Base, ExifTags.GPS
    exif[tag.Make] = shot["make"]
    exif[tag.Model] = shot["model"]
    exif[tag.Orientation] = orientation
    sub = exif.get_ifd(ExifTags.IFD.Exif)
    sub[tag.LensModel] = shot["lens"]
    sub[tag.DateTimeOriginal] = shot["taken"]
    sub[tag.ISOSpeedRatings] = shot["iso"]
    sub[tag.ExposureTime] = _rational(shot["exposure_time"])
    sub[tag.FNumber] = _rational(shot["f_number"])
    sub[tag.FocalLength] = _rational(shot["focal_length"])
    if gps:
        info = exif.get_ifd(ExifTags.IFD.GPSInfo)
        for value, ref_tag, value_tag, signs in (
            (gps[0], gps_tag.GPSLatitudeRef, gps_tag.GPSLatitude, "NS"),
            (gps[1], gps_tag.GPSLongitudeRef, gps_tag.GPSLongitude, "EW"),
        ):
            degrees = abs(value)
            minutes = (degrees % 1) * 60
            info[ref_tag] = signs[0] if value >= 0 else signs[1]
            info[value_tag] = (_rational(int(degrees)), _rational(int(minutes)), _rational((minutes % 1) * 60))
    return exif


# The transpose that stores an upright picture under each EXIF orientation (the inverse of showing it).
STORED_AS = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,  # stored turned 90 degrees anticlockwise: a viewer turns it clockwise
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def stored_for_orientation(upright: np.ndarray, orientation: int) -> np.ndarray:
    """The pixels a camera stores so that EXIF `orientation` shows `upright`."""
    if orientation not in STORED_AS:
        return upright
    return np.asarray(Image.fromarray(upright).transpose(STORED_AS[orientation]))


def write_jpeg(path: str, upright: np.ndarray, orientation: int = 1, gps=None, quality: int = 92, **shot) -> None:
    stored = np.ascontiguousarray(stored_for_orientation(upright, orientation))
    Image.fromarray(stored).save(path, "JPEG", quality=quality, exif=camera_exif(orientation, gps, **shot).tobytes())


def write_heif(path: str | io.BytesIO, upright: np.ndarray, orientation: int = 1, gps=None, quality: int = 90,
               thumbnail: int = 0, fmt: str = "HEIF", shot: dict | None = None, **options) -> None:
    """A HEIC as phones write one (`fmt="AVIF"`: an AVIF): the camera's EXIF (`shot`: as for camera_exif),
    and the orientation as the container's rotation and mirror, which readers apply; `thumbnail`: the
    long side of an embedded thumbnail."""
    import pillow_heif

    pillow_heif.register_heif_opener()
    stored = Image.fromarray(np.ascontiguousarray(stored_for_orientation(upright, orientation)))
    if thumbnail:
        options["thumbnails"] = [thumbnail]
    stored.save(path, fmt, quality=quality, exif=camera_exif(orientation, gps, **(shot or {})).tobytes(), **options)


def sensor_values(rgb: np.ndarray, white_level: int = 4095, black_level: int = 0,
                  neutral: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """The linear values a sensor records of a (gamma-encoded) RGB picture, with its black level and with
    `neutral` as the raw value of white in each channel (its white balance)."""
    return (rgb.astype(np.float32) / 255.0) ** 2.2 * np.float32(neutral) * (white_level - black_level) + black_level


def bayer_mosaic(rgb: np.ndarray, white_level: int = 4095, black_level: int = 0,
                 neutral: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """A 12-bit RGGB Bayer mosaic of a (gamma-encoded) RGB picture: what a camera sensor records."""
    linear = sensor_values(rgb, white_level, black_level, neutral)
    h, w = (rgb.shape[0] // 2) * 2, (rgb.shape[1] // 2) * 2
    mosaic = np.zeros((h, w), np.uint16)
    mosaic[0::2, 0::2] = linear[0:h:2, 0:w:2, 0]
    mosaic[0::2, 1::2] = linear[0:h:2, 1:w:2, 1]
    mosaic[1::2, 0::2] = linear[1:h:2, 0:w:2, 1]
    mosaic[1::2, 1::2] = linear[1:h:2, 1:w:2, 2]
    return mosaic


def write_dng(path: str, rgb: np.ndarray, black_level: int = 0, neutral: tuple[int, int, int] = (1000, 1000, 1000),
              mosaic: bool = True) -> None:
    """An uncompressed DNG (16 bits per sample) that LibRaw decodes; `path` ends in .dng.

    `neutral`: AsShotNeutral in thousandths, the camera's white balance. `mosaic`: a Bayer (RGGB) sensor
    as most cameras have; False writes a linear DNG (three values per pixel, already demosaiced)."""
    from pidng.core import RAW2DNG, DNGTags, Tag
    from pidng.defs import (
        CalibrationIlluminant,
        CFAPattern,
        DNGVersion,
        Orientation,
        PhotometricInterpretation,
    )

    scale = tuple(n / 1000 for n in neutral)
    if mosaic:
        pixels = bayer_mosaic(rgb, black_level=black_level, neutral=scale)
        layout = ((Tag.PhotometricInterpretation, PhotometricInterpretation.Color_Filter_Array), (Tag.SamplesPerPixel, 1),
                  (Tag.CFARepeatPatternDim, [2, 2]), (Tag.CFAPattern, CFAPattern.RGGB))
    else:
        pixels = sensor_values(rgb, black_level=black_level, neutral=scale).astype(np.uint16)
        layout = ((Tag.PhotometricInterpretation, PhotometricInterpretation.Linear_Raw), (Tag.SamplesPerPixel, 3))
    height, width = pixels.shape[:2]
    tags = DNGTags()
    for tag, value in (
        (Tag.ImageWidth, width), (Tag.ImageLength, height), (Tag.TileWidth, width), (Tag.TileLength, height),
        (Tag.Orientation, Orientation.Horizontal), *layout, (Tag.BitsPerSample, 16),
        (Tag.BlackLevel, black_level), (Tag.WhiteLevel, 4095),
        (Tag.ColorMatrix1, [[1, 1], [0, 1], [0, 1], [0, 1], [1, 1], [0, 1], [0, 1], [0, 1], [1, 1]]),
        (Tag.CalibrationIlluminant1, CalibrationIlluminant.D65),
        (Tag.AsShotNeutral, [[n, 1000] for n in neutral]),
        (Tag.Make, CAMERA["make"]), (Tag.Model, CAMERA["model"]),
        (Tag.DNGVersion, DNGVersion.V1_4), (Tag.DNGBackwardVersion, DNGVersion.V1_2),
    ):
        tags.set(tag, value)
    writer = RAW2DNG()
    writer.options(tags, path="", compress=False)
    writer.convert(pixels, filename=os.path.splitext(path)[0])


def write_library(folder: str) -> dict[str, str]:
    """A small mixed library: one file per format and mode. Returns {file name: what it shows}."""
    os.makedirs(folder, exist_ok=True)
    photos = real_photos()
    shows: dict[str, str] = {}

    def save(name: str, subject: str, writer) -> None:
        writer(os.path.join(folder, name))
        shows[name] = subject

    save("astronaut.jpg", "astronaut", lambda p: write_jpeg(p, photos["astronaut"], gps=(48.8584, 2.2945)))
    save("chelsea_rotated.JPG", "chelsea", lambda p: write_jpeg(p, photos["chelsea"], orientation=6))
    save("coffee.png", "coffee", lambda p: Image.fromarray(photos["coffee"]).save(p))
    save("rocket.webp", "rocket", lambda p: Image.fromarray(photos["rocket"]).save(p, quality=90))
    save("china.tiff", "china", lambda p: Image.fromarray(photos["china"]).save(p))
    save("flower.dng", "flower", lambda p: write_dng(p, photos["flower"]))
    return shows


def write_many(folder: str, count: int, size: int = 96, seed: int = 0) -> list[str]:
    """`count` distinct small JPEGs: random crops of the real photos (for load, fault and scale tests)."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    photos = list(real_photos().values())
    paths = []
    for i in range(count):
        photo = photos[i % len(photos)]
        top = int(rng.integers(0, photo.shape[0] - size))
        left = int(rng.integers(0, photo.shape[1] - size))
        path = os.path.join(folder, f"crop_{i:06d}.jpg")
        Image.fromarray(photo[top : top + size, left : left + size]).save(path, quality=90)
        paths.append(path)
    return paths


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else "sample_photos"
    for name, subject in write_library(target).items():
        print(f"{os.path.join(target, name)}: {subject}")
