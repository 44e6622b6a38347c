"""Prepare (the CPU stage): read each file once, hash it, skip what is stored, decode what is new.

Rows leave this stage with a `status`: "new" rows carry model-sized pixels and their metadata;
"existing", "duplicate" and "failed" rows carry only what the summary and the errors file need.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import time
from dataclasses import dataclass

import numpy as np

from ray_pipeline.decode import (
    DecodedPhoto,
    DecodeError,
    InputGeometry,
    decode_image,
    decode_raw,
)
from ray_pipeline.discover import extension_of, is_raw, is_within
from ray_pipeline.metrics import metrics

NEW, EXISTING, DUPLICATE, FAILED = "new", "existing", "duplicate", "failed"


@dataclass
class FileBytes:
    path: str
    data: bytes
    size: int
    mtime: float
    mtime_ns: int = 0  # exact, where `mtime` (a float) does not survive Chroma's storage bit for bit


def read_file(path: str) -> FileBytes:
    """The file's bytes and stat, or an OSError whose message is the reason users see."""
    try:
        with open(path, "rb") as f:
            stat = os.fstat(f.fileno())
            data = f.read()
    except OSError as exc:
        raise OSError(exc.errno, _read_failure(path, exc)) from None
    return FileBytes(path=path, data=data, size=stat.st_size, mtime=stat.st_mtime, mtime_ns=stat.st_mtime_ns)


def _read_failure(path: str, exc: OSError) -> str:
    if exc.errno == errno.ENOENT and os.path.islink(path):
        return "broken symlink"
    if exc.errno == errno.ELOOP:
        return "symlink loop"
    if exc.errno == errno.EACCES:
        return "permission denied"
    if exc.errno == errno.EISDIR:
        return "is a folder, not a file"
    return f"cannot read file: {exc.strerror or exc}"


def decode_file(file: FileBytes, geometry: InputGeometry, max_pixels: int) -> DecodedPhoto:
    """Decode by extension; whatever a decoder raises on hostile bytes becomes this file's DecodeError."""
    decoder = decode_raw if is_raw(file.path) else decode_image
    try:
        return decoder(file.data, geometry, max_pixels)
    except DecodeError:
        raise
    except Exception as exc:  # one bad file must never fail the batch it is in
        raise DecodeError(f"cannot decode: {type(exc).__name__}: {exc}"[:500]) from None


STAT_FIELDS = ("file_size", "mtime", "mtime_ns")


def file_fields(file: FileBytes) -> dict:
    """What a record says about the file it was made from: where it is and its stat."""
    return {
        "path": file.path,
        "filename": os.path.basename(file.path),
        "format": extension_of(file.path),
        "is_raw": is_raw(file.path),
        "file_size": file.size,
        "mtime": file.mtime,
        "mtime_ns": file.mtime_ns,
    }


def record_metadata(file: FileBytes, photo: DecodedPhoto) -> dict:
    """The metadata stored with a record (see the README's record layout)."""
    return {**file_fields(file), "width": photo.width, "height": photo.height, **photo.exif}


def refresh_records(store, read: dict[str, tuple[FileBytes, dict]]) -> None:
    """Bring stored records {id: (file just read, its record's metadata)} up to date: a file touched or
    copied with a new mtime gets its new stat (so the next run skips it unread), and a record whose file
    has moved gets the path it now has."""
    changes = {}
    for record_id, (file, recorded) in read.items():
        now = file_fields(file)
        if recorded.get("path") == file.path:
            if any(recorded.get(key) != now[key] for key in STAT_FIELDS):
                changes[record_id] = {key: now[key] for key in STAT_FIELDS}
        elif not os.path.exists(recorded.get("path") or ""):
            changes[record_id] = now
    if changes:
        store.merge_metadata(changes)


class PrepareImages:
    """Ray Data class UDF for the CPU stage; one instance per CPU actor."""

    def __init__(self, store, registry, geometry: InputGeometry, max_pixels: int, within: tuple[str, ...] = ()):
        self.store = store  # StoreHandle: which ids the collection holds already
        self.registry = registry  # DuplicateRegistry actor: which path owns an id in this job
        self.geometry = geometry
        self.max_pixels = max_pixels
        self.within = within  # resolved folders the files must really lie in; () for anywhere
        self.tags = {"collection": store.target.collection}

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import ray

        paths = [str(p) for p in batch["path"]]
        ids = [""] * len(paths)
        status = [FAILED] * len(paths)
        reasons = [""] * len(paths)
        pixels = [b""] * len(paths)
        metadata = [""] * len(paths)
        read_seconds = np.zeros(len(paths))
        decode_seconds = np.zeros(len(paths))
        files: dict[int, FileBytes] = {}
        allowed = []
        for i, path in enumerate(paths):
            if self.within and not is_within(os.path.realpath(path), self.within):
                reasons[i] = "resolves outside the allowed folders"
            else:
                allowed.append(i)
        for i in allowed:
            path = paths[i]
            started = time.perf_counter()
            try:
                files[i] = read_file(path)
            except OSError as exc:
                reasons[i] = exc.strerror
                continue
            ids[i] = hashlib.sha256(files[i].data).hexdigest()
            read_seconds[i] = time.perf_counter() - started
            if files[i].size:  # Ray counters take positive increments only
                metrics().bytes_read.inc(files[i].size, tags=self.tags)

        # Claim first, so every copy but one counts as a duplicate whether or not the content is stored.
        known = [i for i in allowed if ids[i]]
        owners = ray.get(self.registry.claim.remote([(ids[i], paths[i]) for i in known])) if known else []
        owned = [i for i, owns in zip(known, owners) if owns]
        for i, owns in zip(known, owners):
            if not owns:
                status[i] = DUPLICATE
        to_check = sorted({ids[i] for i in owned})
        stored = self.store.records(to_check) if to_check else {}
        refresh_records(self.store, {ids[i]: (files[i], stored[ids[i]]) for i in owned if ids[i] in stored})
        for i in owned:
            if ids[i] in stored:
                status[i] = EXISTING
                continue
            started = time.perf_counter()
            try:
                photo = decode_file(files[i], self.geometry, self.max_pixels)
            except DecodeError as exc:
                reasons[i] = str(exc)
                continue
            finally:
                decode_seconds[i] = time.perf_counter() - started
                metrics().decode_seconds.observe(decode_seconds[i], tags=self.tags)
            status[i] = NEW
            pixels[i] = photo.pixels.tobytes()
            metadata[i] = json.dumps(record_metadata(files[i], photo))
        return {
            "path": np.array(paths, dtype=object),
            "id": np.array(ids, dtype=object),
            "status": np.array(status, dtype=object),
            "reason": np.array(reasons, dtype=object),
            "pixels": np.array(pixels, dtype=object),
            "metadata": np.array(metadata, dtype=object),
            "read_seconds": read_seconds,
            "decode_seconds": decode_seconds,
        }


class DuplicateRegistry:
    """Ray actor: the first path seen with a given id owns it for this job; later ones are duplicates.

    Claims are idempotent per path so a retried task keeps the ids it owned.
    """

    def __init__(self):
        self._owner: dict[bytes, str] = {}

    def claim(self, pairs: list[tuple[str, str]]) -> list[bool]:
        return [self._owner.setdefault(bytes.fromhex(i), path) == path for i, path in pairs]
