"""Journey: one file's way from a path to a record, with no Ray in it.

Read the bytes once, hash them, claim the content for this ingestion (a copy is a duplicate), look the
content up in the collection (what is stored is skipped), decode what is new at the model's size and
gather its metadata. Every route runs these very steps: the Ray Data job's CPU actors (`runs.bulk_stages.PrepareStage`), and the
runs in a process (`runs.in_process`): the CLI's own, a watch's batches and the Serve app's warm path.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ray_pipeline.core import record_keys as keys
from ray_pipeline.core.formats import extension_of, is_raw
from ray_pipeline.core.geometry import InputGeometry
from ray_pipeline.core.outcome import Outcome
from ray_pipeline.core.paths import PATH_BYTES, is_within, path_fields, path_text, recorded_path
from ray_pipeline.core.reasons import OUTSIDE_ROOTS
from ray_pipeline.files.decode import DecodedPhoto, DecodeError, decode_file
from ray_pipeline.files.reading import FileBytes, read_file
from ray_pipeline.records.enrichments import derived_keys, folders_field
from ray_pipeline.records.store import RecordStore


def file_fields(file: FileBytes) -> dict:
    """What a record says about the file it was made from: where it is and its stat."""
    return {
        **path_fields(file.path),
        keys.FILENAME: path_text(os.path.basename(file.path)),
        keys.FORMAT: extension_of(file.path),
        keys.IS_RAW: is_raw(file.path),
        keys.FILE_SIZE: file.size,
        keys.MTIME: file.mtime,
        keys.MTIME_NS: file.mtime_ns,
    }


def moved_fields(file: FileBytes) -> dict:
    """What a record learns when its bytes are found in another file; a new name that is UTF-8 clears
    the exact bytes of an old one that was not."""
    fields = {PATH_BYTES: "", **file_fields(file)}
    return {**fields, **folders_field(fields["path"])}


def record_metadata(file: FileBytes, photo: DecodedPhoto, machine: str = "") -> dict:
    """The metadata stored with a record (see the README's record layout), with the keys filters need, and the
    machine whose file it is."""
    metadata = {**file_fields(file), keys.PATHS: [path_text(file.path)], **({keys.MACHINE: machine} if machine else {}),
                keys.WIDTH: photo.width,
                keys.HEIGHT: photo.height, **photo.exif}
    return {**metadata, **derived_keys(metadata)}


def refresh_records(store: RecordStore, read: dict[str, tuple[FileBytes, dict]]) -> None:
    """Bring stored records {id: (file just read, its record's metadata)} up to date: a file touched or
    copied with a new mtime gets its new stat (so the next run skips it unread), and a record whose file
    has moved gets the path it now has."""
    changes = {}
    for record_id, (file, recorded) in read.items():
        now = file_fields(file)
        if recorded_path(recorded) == file.path:
            if any(recorded.get(key) != now[key] for key in keys.STAT_KEYS):
                changes[record_id] = {key: now[key] for key in keys.STAT_KEYS}
        elif not os.path.exists(recorded_path(recorded) or ""):
            old = recorded.get(keys.PATH)
            moved = moved_fields(file)
            changes[record_id] = {**moved, keys.PATHS: sorted({*keys.paths_of(recorded), moved[keys.PATH]} - {old})}
    if changes:
        store.merge_metadata(changes)


class DuplicateRegistry:
    """The first path seen with a given content owns it for this ingestion; later ones are duplicates.

    Claims are idempotent per path, so a retried batch keeps the contents it owned. Thread-safe: the
    in-process paths claim from several threads; the bulk path runs it as one Ray actor.
    """

    def __init__(self):
        self._owner: dict[bytes, str] = {}
        self._lock = threading.Lock()

    def claim(self, pairs: list[tuple[str, str]]) -> list[bool]:
        """For each (id, path): does this path own the content?"""
        with self._lock:
            return [self._owner.setdefault(bytes.fromhex(i), path) == path for i, path in pairs]


@dataclass
class PhotoFile:
    """One file on its journey: each step records what it learnt, or why the file stops there."""

    path: str
    machine: str = ""  # whose file it is (`core.machine`)
    status: Outcome = Outcome.FAILED
    reason: str = ""
    id: str = ""
    file: FileBytes | None = None
    photo: DecodedPhoto | None = None
    read_seconds: float = 0.0
    decode_seconds: float = 0.0

    def read(self) -> None:
        """Read the bytes once and take their SHA-256, the record's id."""
        started = time.perf_counter()
        try:
            self.file = read_file(self.path)
        except OSError as exc:
            self.reason = exc.strerror or str(exc)
            return
        self.id = hashlib.sha256(self.file.data).hexdigest()
        self.read_seconds = time.perf_counter() - started

    def decode(self, geometry: InputGeometry, max_pixels: int) -> None:
        """Decode at the model's size, or say why the picture cannot be made."""
        started = time.perf_counter()
        try:
            self.photo = decode_file(self.read_bytes, geometry, max_pixels)
            self.status = Outcome.NEW
        except DecodeError as exc:
            self.reason = str(exc)
        self.decode_seconds = time.perf_counter() - started

    @property
    def read_bytes(self) -> FileBytes:
        """The file as read (a file that was read: it has an id)."""
        if self.file is None:
            raise ValueError(f"{self.path} was not read")
        return self.file

    @property
    def picture(self) -> DecodedPhoto:
        """The decoded picture (a new file's only)."""
        if self.photo is None:
            raise ValueError(f"{self.path} was not decoded")
        return self.photo

    @property
    def metadata(self) -> dict:
        """The record's metadata (a new file's only)."""
        return record_metadata(self.read_bytes, self.picture, self.machine)


@dataclass(frozen=True)
class Journey:
    """What every file's journey needs: the collection's records, who owns a content in this ingestion
    (`claim`: a DuplicateRegistry's claim, local or through Ray), and the model's input."""

    store: RecordStore
    claim: Callable[[list[tuple[str, str]]], list[bool]]
    geometry: InputGeometry
    max_pixels: int
    within: tuple[str, ...] = ()  # resolved folders the files must really lie in; () for anywhere
    machine: str = ""  # whose files they are: their records say so

    def run(self, paths: list[str]) -> list[PhotoFile]:
        """Take these files as far as they go: new files come back decoded, the others with their status."""
        files = [PhotoFile(path, self.machine) for path in paths]
        for photo in files:
            if self.within and not is_within(os.path.realpath(photo.path), self.within):
                photo.reason = OUTSIDE_ROOTS
            else:
                photo.read()
        for photo in self._owned([photo for photo in files if photo.id]):
            photo.decode(self.geometry, self.max_pixels)
        for photo in files:  # only the stat is needed from here on
            if photo.file is not None:
                photo.file.data = b""
        return files

    def _owned(self, hashed: list[PhotoFile]) -> list[PhotoFile]:
        """The files whose content is theirs to store: copies are marked duplicates (claimed first, so
        every copy but one is a duplicate whether or not the content is stored) and stored contents
        existing (their records learn a new stat or path)."""
        owners = self.claim([(photo.id, photo.path) for photo in hashed]) if hashed else []
        owned = []
        for photo, owns in zip(hashed, owners):
            if owns:
                owned.append(photo)
            else:
                photo.status = Outcome.DUPLICATE
        stored = self.store.records(sorted({photo.id for photo in owned})) if owned else {}
        refresh_records(self.store, {photo.id: (photo.read_bytes, stored[photo.id]) for photo in owned if photo.id in stored})
        for photo in owned:
            if photo.id in stored:
                photo.status = Outcome.EXISTING
        return [photo for photo in owned if photo.status != Outcome.EXISTING]
