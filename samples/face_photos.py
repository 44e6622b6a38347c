"""Photos of people, for the face finder's tests and benchmarks: two real people whose photos ship in packages this
project installs (Eileen Collins, skimage's `astronaut`; Grace Hopper, matplotlib's sample photo: both US government
works in the public domain), each at other sizes, crops, a mirror image, a small rotation, an EXIF orientation, in
16-bit grayscale and at the photo's edge; the two of them in one photo; photos with no face."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

from samples.sample_photos import write_jpeg

EILEEN = "eileen"  # the file name's first word says whose face a photo holds
GRACE = "grace"


def grace_hopper() -> np.ndarray:
    """matplotlib's sample photo of Grace Hopper (600 x 512), found without importing matplotlib."""
    spec = importlib.util.find_spec("matplotlib")
    assert spec is not None and spec.submodule_search_locations, "matplotlib (a dev dependency) is needed"
    path = os.path.join(list(spec.submodule_search_locations)[0], "mpl-data", "sample_data", "grace_hopper.jpg")
    return np.asarray(Image.open(path).convert("RGB"))


def _resized(picture: np.ndarray, width: int) -> np.ndarray:
    image = Image.fromarray(picture)
    return np.asarray(image.resize((width, round(image.height * width / image.width)), Image.Resampling.LANCZOS))


def _side_by_side(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    height = max(left.shape[0], right.shape[0])
    canvas = np.full((height, left.shape[1] + right.shape[1], 3), 200, np.uint8)
    canvas[: left.shape[0], : left.shape[1]] = left
    canvas[: right.shape[0], left.shape[1] :] = right
    return canvas


def write_faces(folder: str | Path) -> dict[str, list[str]]:
    """The photos, written into `folder`; {file name: whose faces it holds} ([] for none)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    eileen, grace = data.astronaut(), grace_hopper()
    rotated = np.asarray(Image.fromarray(eileen).rotate(5, resample=Image.Resampling.BICUBIC, fillcolor=(128, 128, 128)))
    written: dict[str, list[str]] = {}

    def jpeg(name: str, picture: np.ndarray, people: list[str], orientation: int = 1) -> None:
        write_jpeg(str(folder / name), picture, orientation=orientation)
        written[name] = people

    jpeg("eileen.jpg", eileen, [EILEEN])
    jpeg("eileen_mirrored.jpg", np.ascontiguousarray(eileen[:, ::-1]), [EILEEN])
    jpeg("eileen_large_crop.jpg", _resized(eileen[20:330, 90:400], 900), [EILEEN])
    jpeg("eileen_rotated.jpg", rotated, [EILEEN], orientation=6)  # stored on its side: found upright
    jpeg("grace.jpg", grace, [GRACE])
    jpeg("grace_small.jpg", _resized(grace, 300), [GRACE])
    jpeg("grace_at_edge.jpg", np.ascontiguousarray(grace[100:600, 150:512]), [GRACE])  # the face at the left edge
    gray16 = (np.asarray(Image.fromarray(grace).convert("L"), np.uint16) * 257)
    Image.fromarray(gray16).save(folder / "grace_gray16.png")
    written["grace_gray16.png"] = [GRACE]
    jpeg("together.jpg", _side_by_side(eileen, grace), [EILEEN, GRACE])
    jpeg("coffee.jpg", data.coffee(), [])
    jpeg("chelsea.jpg", data.chelsea(), [])
    Image.fromarray(np.full((6, 6, 3), 90, np.uint8)).save(folder / "tiny.png")
    written["tiny.png"] = []
    return written
