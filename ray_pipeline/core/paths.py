"""Paths: file names in records and reports, and whether a path lies inside given folders.

File names in records and reports: every path as text that any JSON, Arrow column or Chroma record
takes, and back to the very same file.

POSIX file names are bytes. Python holds those that are not UTF-8 with surrogate escapes, which no JSON
or database text accepts. Such a name is written twice: readable in `path` (undecodable bytes shown as
\\xNN) and exactly, in hex, in `path_bytes`. `recorded_path` reads the real name back from either.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

PATH_BYTES = "path_bytes"


def path_text(path: str) -> str:
    """The path as text: itself when it is UTF-8, else with undecodable bytes shown as \\xNN."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def exact_name(path: str) -> dict[str, str]:
    """{"path_bytes": hex} when the path's text is not the path itself; {} for every UTF-8 name."""
    return {} if path_text(path) == path else {PATH_BYTES: os.fsencode(path).hex()}


def path_fields(path: str) -> dict[str, str]:
    """What a record or a report says of where a file is."""
    return {"path": path_text(path), **exact_name(path)}


def recorded_path(fields: dict) -> str | None:
    """The real path of a record's (or a report's) file, the one `path_fields` wrote."""
    if fields.get(PATH_BYTES):
        return os.fsdecode(bytes.fromhex(fields[PATH_BYTES]))
    return fields.get("path")


@dataclass(frozen=True)
class FileFailure:
    """A file (or folder) that failed, and why."""

    path: str  # the real path, which need not be UTF-8
    reason: str
    name: str | None = None  # an upload's: the name it came with (its path is the app's copy, named by its hash)

    def as_json(self) -> dict[str, str]:
        """As reports carry it (errors file, status JSON): {"path", "reason"}, "path_bytes" for a non-UTF-8 name,
        and an upload's "name"."""
        return {"path": path_text(self.path), "reason": self.reason, **exact_name(self.path),
                **({"name": self.name} if self.name else {})}


def is_within(path: str, roots: tuple[str, ...]) -> bool:
    """Whether `path` (already resolved) lies inside one of the (resolved) `roots`."""
    return any(path == root or path.startswith(root.rstrip(os.sep) + os.sep) for root in roots)

