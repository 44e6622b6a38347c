"""Discovery: turn the user's folders, files or manifest into the list of photo paths to ingest."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ray_pipeline.core.errors import UserFacingError
from ray_pipeline.core.formats import SUPPORTED_EXTENSIONS, extension_of
from ray_pipeline.core.paths import FileFailure


class DiscoveryError(UserFacingError):
    """A path the user named cannot be used; the job does not start."""


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _walk(root: str, problems: list[FileFailure]) -> Iterator[str]:
    """Recursive listing that skips hidden entries and never follows symlinked folders.

    A folder that cannot be listed is reported in `problems`, never silently left out.
    """
    pending = [root]
    while pending:
        folder = pending.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError as exc:
            problems.append(FileFailure(folder, f"cannot list folder: {exc.strerror or exc}"))
            continue
        for entry in entries:
            if _is_hidden(entry.name):
                continue
            if entry.is_dir(follow_symlinks=False):
                pending.append(entry.path)
            elif extension_of(entry.name) in SUPPORTED_EXTENSIONS and (
                entry.is_file(follow_symlinks=False) or entry.is_symlink()
            ):
                # A symlink to a file is kept (a broken one fails later with its reason).
                yield entry.path


def _found(paths: list[str], problems: list[FileFailure]) -> Iterator[str]:
    for given in paths:
        path = os.path.abspath(os.path.expanduser(given))
        if os.path.isdir(path):
            yield from _walk(path, problems)
        elif os.path.lexists(path):
            yield path
        else:
            raise DiscoveryError(f"no such file or folder: {given}")


def discover(paths: list[str], problems: list[FileFailure] | None = None) -> list[str]:
    """Absolute, sorted, de-duplicated photo paths under the given files and folders.

    A named file is taken whatever its extension: the user asked for it explicitly. Folders that
    cannot be listed go to `problems`.
    """
    return sorted(set(_found(paths, [] if problems is None else problems)))


def listed_up_to(paths: list[str], limit: int) -> int:
    """How many photos the given files and folders hold, counted up to one past `limit`: the walk stops
    there, so a large library answers at once."""
    seen: set[str] = set()
    for path in _found(paths, []):
        seen.add(path)  # a file named twice (a folder and a file in it) counts once, as in `discover`
        if len(seen) > limit:
            break
    return len(seen)


def more_than(paths: list[str], limit: int) -> bool:
    """Whether the given files and folders hold more than `limit` photos."""
    return listed_up_to(paths, limit) > limit


def read_manifest(manifest: str) -> list[str]:
    """Paths listed in a text manifest, one per line (a Parquet manifest is streamed: `streamed`).

    Relative entries are taken relative to the manifest's own folder, so a manifest can travel with
    its library. Names that are not UTF-8 are taken byte for byte. Blank lines and lines starting with
    '#' are ignored; a path listed twice is taken once. Paths are listed without touching the files:
    millions of them take seconds, not hours.
    """
    manifest_path = Path(manifest).expanduser()
    if not manifest_path.is_file():
        raise DiscoveryError(f"no such manifest: {manifest}")
    base = manifest_path.resolve().parent
    # Each line is a file name's bytes (any encoding, as the file system has it), not decoded text.
    entries = [os.fsdecode(line.strip()) for line in manifest_path.read_bytes().splitlines()]
    return sorted({manifest_entry(base, e) for e in entries if e and not e.startswith("#")})


def manifest_entry(base: str | Path, entry: str) -> str:
    """The absolute path a manifest's entry names: a relative one is taken from the manifest's folder."""
    return os.path.abspath(os.path.join(base, os.path.expanduser(entry)))


def is_streamed(manifest: str | None) -> bool:
    """Whether a manifest is read by Ray Data rather than here: Parquet, a file or a folder of files."""
    if manifest is None:
        return False
    path = Path(manifest).expanduser()
    return path.suffix.lower() == ".parquet" or path.is_dir()


@dataclass(frozen=True)
class Listing:
    """The photos to ingest, and the folders that cannot be listed."""

    paths: list[str]
    problems: list[FileFailure]

    @property
    def discovered(self) -> int:
        """What the job summary counts as discovered: every photo listed, and every folder that failed."""
        return len(self.paths) + len(self.problems)


def photo_paths(paths: list[str], manifest: str | None = None) -> Listing:
    """The listing, from files and folders or from a manifest."""
    problems: list[FileFailure] = []
    listed = read_manifest(manifest) if manifest else discover(paths, problems)
    return Listing(listed, problems)
