"""The test library: every format and pixel mode the product promises to read, the broken files it
must report, a duplicate, and files it must ignore. Each valid case knows the picture OpenCLIP's own
preprocessing should see, so tests can compare vectors against OpenCLIP itself."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from samples.sample_photos import real_photos, write_dng, write_heif, write_jpeg


@dataclass
class Case:
    name: str  # path relative to the library root
    kind: str  # "valid", "duplicate", "failed" or "ignored"
    reference: Callable[[Path], Image.Image] | None = None  # the upright picture, for valid files
    reason: str = ""  # a fragment of the reason, for failed files
    metadata: dict = field(default_factory=dict)  # expected record metadata values


def _exif_upright(path: Path) -> Image.Image:
    return ImageOps.exif_transpose(Image.open(path)).convert("RGB")


def _as_rgb(path: Path) -> Image.Image:
    return Image.open(path).convert("RGB")


def _raw_full(path: Path) -> Image.Image:
    import rawpy

    with rawpy.imread(str(path)) as raw:
        return Image.fromarray(raw.postprocess(use_camera_wb=True, output_bps=8))


def _heif_primary(path: Path) -> Image.Image:
    """The primary picture in full, upright, straight from libheif (not through Pillow's plugin)."""
    import pillow_heif

    heif = pillow_heif.open_heif(path)
    return heif[heif.primary_index].to_pillow().convert("RGB")


def write_test_library(root: Path) -> list[Case]:
    photos = real_photos()
    root.mkdir(parents=True, exist_ok=True)
    for sub in ("travel/2024", "modes", "raw", "phone", "broken", "copies", ".hidden_dir"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    grey_rocket = np.asarray(Image.fromarray(photos["rocket"]).convert("L"))
    cases = [
        Case("travel/astronaut.jpg", "valid", _exif_upright, metadata={
            "camera_make": "Sampleco", "camera_model": "Field One", "lens": "Sampleco 35mm F2",
            "datetime_original": "2024-05-01T10:20:30", "iso": 400, "exposure_time": 0.004,
            "f_number": 2.8, "focal_length": 35.0, "width": 512, "height": 512, "format": "jpg", "is_raw": False}),
        Case("travel/2024/chelsea_rotated.JPG", "valid", _exif_upright,
             metadata={"width": 451, "height": 300, "format": "jpg", "camera_make": "Sampleco"}),
        Case("coffee.png", "valid", _as_rgb, metadata={"width": 600, "height": 400, "format": "png"}),
        Case("rocket.webp", "valid", _as_rgb, metadata={"format": "webp"}),
        Case("china.TIFF", "valid", _as_rgb, metadata={"format": "tiff", "width": 640, "height": 427}),
        Case("modes/alpha.png", "valid", _as_rgb),
        Case("modes/palette.png", "valid", _as_rgb),
        Case("modes/grey16.png", "valid", lambda p: Image.fromarray(grey_rocket).convert("RGB")),
        Case("modes/grey.png", "valid", _as_rgb),
        Case("modes/cmyk.jpg", "valid", _as_rgb),
        Case("modes/coffee.gif", "valid", _as_rgb),
        Case("modes/chelsea.bmp", "valid", _as_rgb),
        Case("raw/flower.dng", "valid", _raw_full, metadata={
            "format": "dng", "is_raw": True, "camera_make": "Sampleco", "camera_model": "Field One",
            "width": 640, "height": 426}),
        # As phones write them: HEIC with a thumbnail (decoded instead: it is big enough for the tests' model),
        # orientation, camera and GPS; a burst whose primary picture is its second; AVIF turned by EXIF.
        Case("phone/IMG_0420.HEIC", "valid", _heif_primary, metadata={
            "format": "heic", "is_raw": False, "width": 451, "height": 300, "camera_make": "Sampleco",
            "camera_model": "Field One", "lens": "Sampleco 35mm F2", "iso": 400, "datetime_original": "2024-05-01T10:20:30",
            "gps_lat": 35.6586, "gps_lon": 139.7454}),
        Case("phone/burst.heif", "valid", _heif_primary, metadata={"format": "heif", "width": 640, "height": 427}),
        Case("phone/coffee.avif", "valid", _exif_upright, metadata={
            "format": "avif", "width": 600, "height": 400, "camera_model": "Field One", "f_number": 2.8}),
        Case("copies/astronaut copy.jpg", "duplicate"),
        Case("broken/truncated.jpg", "failed", reason="cannot decode image"),
        Case("broken/empty.png", "failed", reason="empty file"),
        Case("broken/notes.jpg", "failed", reason="not a recognised image format"),
        Case("broken/garbage.nef", "failed", reason="LibRaw"),
        Case("broken/truncated.heic", "failed", reason="broken or truncated HEIF file"),
        Case("broken/jpeg_renamed.heic", "failed", reason="holds a JPEG picture, not the HEIF or AVIF its name says"),
        Case("broken/loop_a.jpg", "failed", reason="symlink loop"),
        Case("broken/loop_b.jpg", "failed", reason="symlink loop"),
        Case("broken/dangling.jpg", "failed", reason="broken symlink"),
        # Names that are not UTF-8 (Latin-1 here, as archives from older systems have them) are photos too.
        Case(os.fsdecode(b"caf\xe9/na\xefve.png"), "valid", _as_rgb, metadata={"format": "png", "width": 200}),
        Case("readme.txt", "ignored"),
        Case(".hidden.jpg", "ignored"),
        Case(".hidden_dir/secret.jpg", "ignored"),
        Case("linked/elsewhere.jpg", "ignored"),  # inside a symlinked folder: not followed
    ]
    write_jpeg(str(root / "travel/astronaut.jpg"), photos["astronaut"], gps=(48.8584, 2.2945))
    write_jpeg(str(root / "travel/2024/chelsea_rotated.JPG"), photos["chelsea"], orientation=6)
    Image.fromarray(photos["coffee"]).save(root / "coffee.png")
    Image.fromarray(photos["rocket"]).save(root / "rocket.webp", quality=90)
    Image.fromarray(photos["china"]).save(root / "china.TIFF")
    alpha = np.dstack([photos["coffee"], np.linspace(0, 255, photos["coffee"].shape[1], dtype=np.uint8)[None].repeat(photos["coffee"].shape[0], 0)])
    Image.fromarray(alpha, "RGBA").save(root / "modes/alpha.png")
    Image.fromarray(photos["chelsea"]).quantize(colors=64).save(root / "modes/palette.png")
    Image.fromarray(grey_rocket.astype(np.uint16) * 257).save(root / "modes/grey16.png")
    Image.fromarray(photos["china"]).convert("L").save(root / "modes/grey.png")
    Image.fromarray(photos["flower"]).convert("CMYK").save(root / "modes/cmyk.jpg", quality=92)
    Image.fromarray(photos["coffee"]).convert("P").save(root / "modes/coffee.gif")
    Image.fromarray(photos["chelsea"][::-1]).save(root / "modes/chelsea.bmp")
    write_dng(str(root / "raw/flower.dng"), photos["flower"])
    write_heif(str(root / "phone/IMG_0420.HEIC"), photos["chelsea"], orientation=6, gps=(35.6586, 139.7454), thumbnail=160)
    Image.fromarray(photos["coffee"]).save(root / "phone/burst.heif", "HEIF", save_all=True, quality=90,
                                           append_images=[Image.fromarray(photos["rocket"])], primary_index=1)
    write_heif(str(root / "phone/coffee.avif"), photos["coffee"], orientation=8, fmt="AVIF")
    shutil.copyfile(root / "travel/astronaut.jpg", root / "copies/astronaut copy.jpg")
    (root / "broken/truncated.jpg").write_bytes((root / "travel/astronaut.jpg").read_bytes()[:3000])
    (root / "broken/empty.png").write_bytes(b"")
    phone = (root / "phone/IMG_0420.HEIC").read_bytes()
    (root / "broken/truncated.heic").write_bytes(phone[: len(phone) // 2])
    write_jpeg(str(root / "broken/jpeg_renamed.heic"), photos["flower"])  # a JPEG of its own: not a copy of another file
    (root / "broken/notes.jpg").write_text("these are notes, not a photo\n")
    (root / "broken/garbage.nef").write_bytes(np.random.default_rng(0).bytes(50_000))
    os.symlink(root / "broken/loop_b.jpg", root / "broken/loop_a.jpg")
    os.symlink(root / "broken/loop_a.jpg", root / "broken/loop_b.jpg")
    os.symlink(root / "broken/gone.jpg", root / "broken/dangling.jpg")
    os.mkdir(os.fsencode(root) + b"/caf\xe9")
    Image.fromarray(photos["chelsea"][:150, :200]).save(os.fsdecode(os.fsencode(root) + b"/caf\xe9/na\xefve.png"))
    (root / "readme.txt").write_text("not a photo")
    shutil.copyfile(root / "coffee.png", root / ".hidden.jpg")
    shutil.copyfile(root / "rocket.webp", root / ".hidden_dir/secret.jpg")
    outside = root.parent / f"{root.name}_outside"  # a folder reached only through a symlink
    outside.mkdir(exist_ok=True)
    Image.fromarray(photos["flower"]).save(outside / "elsewhere.jpg")
    os.symlink(outside, root / "linked", target_is_directory=True)
    cases.append(Case(_deep_folder(root), "failed", reason="cannot list folder: File name too long"))
    return cases


def _deep_folder(root: Path) -> str:
    """Nest folders (made relative to each other) until the path passes PATH_MAX; a photo lies at the
    bottom. Returns the first folder too long to list, relative to `root`."""
    name, parts = "d" * 200, []
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        while len(str(root)) + sum(len(p) + 1 for p in parts) < 4200:
            os.mkdir(name, dir_fd=fd)
            child = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd, parts = child, parts + [name]
        photo = os.open("lost.jpg", os.O_WRONLY | os.O_CREAT, dir_fd=fd)
        os.write(photo, (root / "coffee.png").read_bytes())
        os.close(photo)
    finally:
        os.close(fd)
    depth = next(i for i in range(1, len(parts) + 1) if len(str(root)) + sum(len(p) + 1 for p in parts[:i]) >= 4096)
    return "/".join(parts[:depth])


def sha256_of(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@dataclass(frozen=True)
class Shoot:
    """One photo of the search-filter library, and what its record must say."""

    name: str  # path relative to the library root
    taken: str | None  # the capture date, YYYY-MM-DD, or None for none
    make: str | None = None
    model: str | None = None
    gps: tuple[float, float] | None = None
    iso: int | None = None


# A photographer's library: two cameras and a phone, three years, three places; a RAW file and a PNG
# with no date. The subjects differ, so a text or photo query ranks them.
SHOOTS = [
    Shoot("beach/2019/sunset.jpg", "2019-07-14", "FUJIFILM", "X100V", (-22.9711, -43.1822), 200),
    Shoot("beach/2019/noon.jpg", "2019-07-15", "FUJIFILM", "X100V", None, 100),
    Shoot("city/2021/street.jpg", "2021-03-02", "Canon", "EOS R5", (48.8566, 2.3522), 3200),
    Shoot("city/2021/night.heic", "2021-03-02", "Apple", "iPhone 15", (35.6586, 139.7454), 1600),
    Shoot("city/2022/market.jpg", "2022-11-20", "Canon", "EOS R5", (48.8606, 2.3376), 800),
    Shoot("raw/flower.dng", None, "Sampleco", "Field One"),
    Shoot("scan.png", None),
]
# The listing's order: newest capture first (the two 2021-03-02 photos by time of day), the undated last, by path.
NEWEST_FIRST = ["city/2022/market.jpg", "city/2021/night.heic", "city/2021/street.jpg", "beach/2019/noon.jpg",
                "beach/2019/sunset.jpg", "raw/flower.dng", "scan.png"]
_SUBJECTS = ["china", "coffee", "astronaut", "chelsea", "rocket", "flower", "coffee"]
_SHOTS = {"X100V": dict(lens="XF23mm F2", exposure_time=1 / 500, focal_length=23.0),
          "EOS R5": dict(lens="RF24-105mm F4L", exposure_time=1 / 60, focal_length=50.0),
          "iPhone 15": dict(lens="iPhone 15 back camera 6.1mm f/1.6", exposure_time=1 / 15, focal_length=6.1)}


def write_shoots(root: Path) -> list[Shoot]:
    """The SHOOTS under `root`, with EXIF as each camera writes it (time of day varies with the file)."""
    photos = real_photos()
    for number, (shoot, subject) in enumerate(zip(SHOOTS, _SUBJECTS)):
        path = root / shoot.name
        path.parent.mkdir(parents=True, exist_ok=True)
        picture = photos[subject] if shoot.name != "scan.png" else photos[subject][::-1]
        if shoot.model in _SHOTS:
            shot = dict(make=shoot.make, model=shoot.model, iso=shoot.iso, taken=f"{shoot.taken.replace('-', ':')} 1{number}:30:00",
                        **_SHOTS[shoot.model])
            if shoot.name.endswith(".heic"):
                write_heif(str(path), picture, gps=shoot.gps, shot=shot)
            else:
                write_jpeg(str(path), picture, gps=shoot.gps, **shot)
        elif shoot.name.endswith(".dng"):
            write_dng(str(path), picture)
        else:
            Image.fromarray(picture).save(path)
    return SHOOTS
