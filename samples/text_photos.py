"""Photos with words in them, for the text reader's tests and benchmarks: real photos (skimage's) with signs
drawn in with Pillow and the DejaVu fonts, at a size, an angle and an orientation of the file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from samples.sample_photos import real_photos, write_jpeg

FONT_FOLDER = Path("/usr/share/fonts/truetype/dejavu")
BOLD = FONT_FOLDER / "DejaVuSans-Bold.ttf"
PLAIN = FONT_FOLDER / "DejaVuSans.ttf"


@dataclass(frozen=True)
class Sign:
    """Words drawn on a photo: `text` (one line), its letters' height in pixels, and the sign's angle."""

    text: str
    height: int = 64
    angle: float = 0.0
    bold: bool = True


def with_signs(picture: np.ndarray, signs: list[Sign], width: int = 1600) -> np.ndarray:
    """The picture scaled to `width`, with each sign drawn on a pale board, one below the other."""
    image = Image.fromarray(picture)
    image = image.resize((width, round(image.height * width / image.width)), Image.Resampling.BICUBIC)
    top = image.height // 8
    for sign in signs:
        font = ImageFont.truetype(str(BOLD if sign.bold else PLAIN), sign.height)
        left, upper, right, lower = font.getbbox(sign.text)
        pad = sign.height // 3
        board = Image.new("RGBA", (right - left + 2 * pad, lower - upper + 2 * pad), (245, 240, 225, 255))
        ImageDraw.Draw(board).text((pad - left, pad - upper), sign.text, font=font, fill=(25, 25, 30, 255))
        board = board.rotate(sign.angle, expand=True, resample=Image.Resampling.BICUBIC)
        image.paste(board, (image.width // 10, top), board)
        top += board.height + sign.height
    return np.asarray(image.convert("RGB"))


# The shop signs of the tests: what each photo holds, and where it was taken.
SHOP_SIGNS = {
    "bakery.jpg": ("coffee", [Sign("BAKERY OPEN 7AM", 72)], (38.7139, -9.1394)),  # Lisbon
    "street.jpg": ("chelsea", [Sign("Rue de Rivoli 12", 56, bold=False), Sign("PHARMACIE", 64, angle=8)],
                   (48.8606, 2.3376)),  # Paris
    "menu.jpg": ("astronaut", [Sign("MENU", 80), Sign("Soup 4 EUR", 48, angle=-6)], None),
}


def write_shop_signs(folder: str | Path, orientation: int = 1) -> dict[str, Path]:
    """SHOP_SIGNS as JPEGs under `folder` (turned by an EXIF orientation, the picture upright when shown)."""
    photos, written = real_photos(), {}
    Path(folder).mkdir(parents=True, exist_ok=True)
    for name, (subject, signs, gps) in SHOP_SIGNS.items():
        path = Path(folder) / name
        write_jpeg(str(path), with_signs(photos[subject], signs), orientation=orientation, gps=gps)
        written[name] = path
    return written
