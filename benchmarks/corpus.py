"""A photo-like benchmark corpus built from the real photos of samples.sample_photos.

Camera-sized files: 12-megapixel JPEGs (4000x3000, quality 92, with sensor-like grain so they compress
like photos, about 3 MB each) and 24-megapixel DNGs (6000x4000 RGGB mosaics, 16 bits, uncompressed,
48 MB each), half of them carrying a 1024x683 JPEG preview the way cameras and Adobe's converter write
one, half without, so that their decode takes LibRaw's demosaic. On request, 12-megapixel HEICs as
phones write them (HEVC in 512-pixel grid tiles, about 1.5 MB), half with a 320 x 240 thumbnail as
iPhones write one, half without, and 12-megapixel AVIFs. Files already present are kept, so a second
build is free.

    python -m benchmarks.corpus FOLDER [--jpegs N] [--dngs N] [--heics N] [--avifs N] [--workers N]
"""

from __future__ import annotations

import argparse
import io
import os
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache

import numpy as np
from PIL import Image

from samples.sample_photos import bayer_mosaic, real_photos, write_heif, write_jpeg

JPEG_SIZE = (4000, 3000)
DNG_SIZE = (6000, 4000)
PREVIEW_SIZE = (1024, 683)
HEIF_THUMBNAIL = 320  # the long side of an iPhone's HEIC thumbnail (320 x 240)
HEIF_TILE = 512  # phones encode HEIC in tiles of a grid
GRAIN = 5.0  # standard deviation of the added noise, in 8-bit levels
GRAIN_TILE = 509  # a prime, so the tiling does not line up with JPEG blocks
WHITE_LEVEL = 4095
# The DNG tags LibRaw needs besides the TIFF ones: version, camera, colour and levels.
DNG_TAGS = [
    (50706, "B", 4, (1, 4, 0, 0), True),  # DNGVersion
    (50707, "B", 4, (1, 2, 0, 0), True),  # DNGBackwardVersion
    (271, "s", 0, "Sampleco", True),  # Make
    (272, "s", 0, "Field One", True),  # Model
    (50708, "s", 0, "Sampleco Field One", True),  # UniqueCameraModel
    (50721, "2i", 9, (1, 1, 0, 1, 0, 1, 0, 1, 1, 1, 0, 1, 0, 1, 0, 1, 1, 1), True),  # ColorMatrix1 = identity
    (50778, "H", 1, 21, True),  # CalibrationIlluminant1 = D65
    (50728, "2I", 3, (1, 1, 1, 1, 1, 1), True),  # AsShotNeutral
]
CFA_TAGS = [
    (33421, "H", 2, (2, 2), True),  # CFARepeatPatternDim
    (33422, "B", 4, (0, 1, 1, 2), True),  # CFAPattern RGGB
    (50717, "I", 1, WHITE_LEVEL, True),  # WhiteLevel
    (50714, "I", 1, 0, True),  # BlackLevel
]
PHOTOMETRIC_CFA = 32803


def camera_sized(photo: np.ndarray, size: tuple[int, int], seed: int) -> np.ndarray:
    """The photo enlarged to a camera's pixel count, with grain, and mirrored for variety."""
    rng = np.random.default_rng(seed)
    width, height = size
    pixels = np.asarray(Image.fromarray(photo).resize(size, Image.Resampling.BILINEAR), dtype=np.int16)
    grain = rng.normal(0, GRAIN, (GRAIN_TILE, GRAIN_TILE, 3)).astype(np.int16)  # tiled: cheap to make
    pixels += np.tile(grain, (height // GRAIN_TILE + 1, width // GRAIN_TILE + 1, 1))[:height, :width]
    if seed % 2:
        pixels = pixels[:, ::-1]
    return np.clip(pixels, 0, 255).astype(np.uint8)


def write_camera_dng(path: str, rgb: np.ndarray, preview: bool) -> None:
    """A DNG with the raw mosaic in a SubIFD and, when asked, a JPEG preview in IFD 0 (as real DNGs)."""
    import tifffile

    mosaic = bayer_mosaic(rgb, WHITE_LEVEL)
    with tifffile.TiffWriter(path) as tif:
        if preview:
            thumb = np.asarray(Image.fromarray(rgb).resize(PREVIEW_SIZE, Image.Resampling.BILINEAR))
            tif.write(thumb, photometric="rgb", subifds=1, subfiletype=1, rowsperstrip=thumb.shape[0],
                      extratags=DNG_TAGS)
            tif.write(mosaic, photometric=PHOTOMETRIC_CFA, subfiletype=0, extratags=CFA_TAGS)
        else:
            tif.write(mosaic, photometric=PHOTOMETRIC_CFA, subfiletype=0, extratags=CFA_TAGS + DNG_TAGS)
    if preview:
        _jpeg_compress_preview(path, thumb)


def _jpeg_compress_preview(path: str, thumb: np.ndarray) -> None:
    """Turn IFD 0's uncompressed strip into a JPEG one in place (tifffile writes JPEG only with imagecodecs).

    The JPEG is smaller than the raw strip it replaces, so it fits where the strip was; only the strip's
    byte count, Compression (7, JPEG) and PhotometricInterpretation (6, YCbCr) change.
    """
    import tifffile

    encoded = io.BytesIO()
    Image.fromarray(thumb).save(encoded, "JPEG", quality=90)
    jpeg = encoded.getvalue()
    with tifffile.TiffFile(path) as tif:
        tags = tif.pages[0].tags
        strip = tags["StripOffsets"].value[0]
        patches = [(tags["StripByteCounts"], len(jpeg)), (tags["Compression"], 7),
                   (tags["PhotometricInterpretation"], 6)]
        places = [(tag.valueoffset, tag.dtype, value) for tag, value in patches]
    with open(path, "r+b") as file:
        file.seek(strip)
        file.write(jpeg)
        for offset, dtype, value in places:
            file.seek(offset)
            file.write(int(value).to_bytes(4 if dtype == 4 else 2, "little"))


def build_corpus(folder: str, jpegs: int, dngs: int, heics: int = 0, avifs: int = 0,
                 workers: int = 1) -> dict[str, list[str]]:
    """{"jpeg": [...], "dng": [...], "heic": [...], "avif": [...]}: the corpus's files, written where missing,
    by `workers` processes. Half the DNGs have a preview, half the HEICs a thumbnail."""
    files: dict[str, list[str]] = {
        "jpeg": [os.path.join(folder, "jpeg", f"photo_{i:05d}.jpg") for i in range(jpegs)],
        "dng": [os.path.join(folder, "dng", f"raw_{i:05d}{'_preview' if i % 2 == 0 else ''}.dng") for i in range(dngs)],
        "heic": [os.path.join(folder, "heic", f"IMG_{i:05d}{'_thumbnail' if i % 2 == 0 else ''}.heic")
                 for i in range(heics)],
        "avif": [os.path.join(folder, "avif", f"photo_{i:05d}.avif") for i in range(avifs)],
    }
    for kind in files:
        os.makedirs(os.path.join(folder, kind), exist_ok=True)
    missing = [(kind, i, path) for kind, paths in files.items() for i, path in enumerate(paths) if not os.path.exists(path)]
    if workers > 1 and len(missing) > 1:
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(_write, missing, chunksize=4))
    else:
        for task in missing:
            _write(task)
    return files


@lru_cache(maxsize=1)
def _photos() -> list[np.ndarray]:
    return list(real_photos().values())


def _write(task: tuple[str, int, str]) -> None:
    """One corpus file (kind, index, path), from the index's real photo and seed."""
    kind, i, path = task
    photos = _photos()
    if kind == "jpeg":
        _atomically(path, lambda tmp: write_jpeg(tmp, camera_sized(photos[i % len(photos)], JPEG_SIZE, i)))
    elif kind == "dng":
        rgb = camera_sized(photos[i % len(photos)], DNG_SIZE, 1000 + i)
        _atomically(path, lambda tmp: write_camera_dng(tmp, rgb, preview=i % 2 == 0))
    elif kind == "heic":
        rgb = camera_sized(photos[i % len(photos)], JPEG_SIZE, 2000 + i)
        _atomically(path, lambda tmp: write_heif(tmp, rgb, quality=50, thumbnail=HEIF_THUMBNAIL if i % 2 == 0 else 0,
                                                 tile_size=HEIF_TILE))
    else:
        rgb = camera_sized(photos[i % len(photos)], JPEG_SIZE, 3000 + i)
        _atomically(path, lambda tmp: write_heif(tmp, rgb, quality=50, fmt="AVIF", speed=8))


def _atomically(path: str, write) -> None:
    """Write through a temporary name, so an interrupted build leaves no half-written photo behind."""
    temporary = f"{path}.partial"  # not a photo extension: an interrupted build's leftover is never ingested
    write(temporary)
    os.replace(temporary, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder")
    parser.add_argument("--jpegs", type=int, default=48)
    parser.add_argument("--dngs", type=int, default=24)
    parser.add_argument("--heics", type=int, default=0)
    parser.add_argument("--avifs", type=int, default=0)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes writing files")
    args = parser.parse_args()
    files = build_corpus(args.folder, args.jpegs, args.dngs, args.heics, args.avifs, args.workers)
    print({kind: len(paths) for kind, paths in files.items()})


if __name__ == "__main__":
    main()
