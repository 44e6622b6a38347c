"""Upload names: the name a photo had on the uploader's disk. The Serve app keeps an upload under its content's hash
(`<sha256>.<ext>`: a client's name never becomes a path), and writes the name it came with beside it, in a hidden
folder of the upload folder, which every node sees; the run that stores the upload gives its record that name
(`record_keys.UPLOAD_NAME`), so results show it."""

from __future__ import annotations

import os
import tempfile

NAMES_FOLDER = ".names"
MAX_NAME = 255  # characters: a file name's length on most file systems


def tidy_name(given: str | None) -> str | None:
    """The last part of a client's file name, printable and bounded; None for none worth keeping."""
    name = os.path.basename((given or "").replace("\\", "/")).strip()
    if not name or len(name) > MAX_NAME or not name.isprintable() or name in (".", ".."):
        return None
    return name


def name_file(upload_dir: str, stored: str) -> str:
    """Where the name an upload came with is kept."""
    return os.path.join(upload_dir, NAMES_FOLDER, os.path.basename(stored))


def write_upload_name(upload_dir: str, stored: str, given: str | None) -> None:
    """Keep the name an upload came with beside it (the last one given, for bytes uploaded twice)."""
    name = tidy_name(given)
    if name is None:
        return
    folder = os.path.join(upload_dir, NAMES_FOLDER)
    os.makedirs(folder, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=folder, delete=False, encoding="utf-8") as out:
        out.write(name)
    os.replace(out.name, name_file(upload_dir, stored))


def upload_name(upload_dir: str, stored: str) -> str | None:
    """The name an upload came with; None for a file that is no upload, or came with none."""
    try:
        with open(name_file(upload_dir, stored), encoding="utf-8") as kept:
            return tidy_name(kept.read(MAX_NAME * 4 + 1))
    except (OSError, UnicodeDecodeError):
        return None
