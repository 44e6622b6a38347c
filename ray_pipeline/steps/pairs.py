"""Pairs: the RAW file a camera writes and the JPEG (or HEIF, or TIFF) it writes of the same shot.

A RAW file and such a picture are a pair when they lie in the same folder, share the name stem
(`IMG_0042.CR3` and `IMG_0042.JPG`), and their capture times agree where both carry one. Both records
say so (`pair_of`: the other record's id; `pair_role`: "raw" or "shown"), and search shows a pair as
one result: the picture, with the RAW beside it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from ray_pipeline.core import record_keys as keys
from ray_pipeline.core.formats import extension_of, is_raw
from ray_pipeline.core.paths import recorded_path
from ray_pipeline.records.store import RecordStore

SHOWN_EXTENSIONS = frozenset({"jpg", "jpeg", "heic", "heif", "hif", "tif", "tiff"})
RAW, SHOWN = "raw", "shown"


def shot_of(path: str) -> tuple[str, str]:
    """(folder, name stem): what a pair's two files share."""
    folder, name = os.path.split(path)
    return folder, os.path.splitext(name)[0]


def candidates(paths: Iterable[str]) -> list[tuple[list[str], list[str]]]:
    """(RAW files, pictures) of each shot among these paths that has both."""
    shots: dict[tuple[str, str], tuple[list[str], list[str]]] = {}
    for path in paths:
        kind = 0 if is_raw(path) else 1 if extension_of(path) in SHOWN_EXTENSIONS else None
        if kind is not None:
            shots.setdefault(shot_of(path), ([], []))[kind].append(path)
    return [(raws, shown) for raws, shown in shots.values() if raws and shown]


def beside(paths: Iterable[str]) -> list[str]:
    """These paths, and the files in their folders that share a name stem with one of them: a RAW
    ingested now finds the picture stored before it, and the other way round."""
    wanted = {shot_of(path) for path in paths}
    found = set(paths)
    for folder in {folder for folder, _ in wanted}:
        try:
            names = os.listdir(folder)
        except OSError:
            continue
        found.update(os.path.join(folder, name) for name in names if (folder, os.path.splitext(name)[0]) in wanted)
    return sorted(found)


def pair_records(store: RecordStore, paths: Iterable[str], fresh: set[str] | None = None) -> int:
    """Mark the records of the pairs among these files (both records of each); with `fresh`, only the
    shots with a file in it (the files read in this run: the others were paired when they were).
    Returns how many pairs were marked anew."""
    shots = [(raws, shown) for raws, shown in candidates(paths) if fresh is None or not fresh.isdisjoint(raws + shown)]
    if not shots:
        return 0
    records = store.records_at([path for raws, shown in shots for path in raws + shown])
    by_path = {recorded_path(metadata): (record_id, metadata) for record_id, metadata in records.items()}
    changes: dict[str, dict] = {}
    for raws, shown in shots:
        for raw, picture in ((raw, picture) for raw in raws for picture in shown):
            if raw in by_path and picture in by_path and _same_shot(by_path[raw][1], by_path[picture][1]):
                (raw_id, raw_metadata), picture_id = by_path[raw], by_path[picture][0]
                if raw_id != picture_id and raw_metadata.get(keys.PAIR_OF) != picture_id:
                    changes[raw_id] = {keys.PAIR_OF: picture_id, keys.PAIR_ROLE: RAW}
                    changes[picture_id] = {keys.PAIR_OF: raw_id, keys.PAIR_ROLE: SHOWN}
    if changes:
        store.merge_metadata(changes)
    return len(changes) // 2


def _same_shot(raw: dict, picture: dict) -> bool:
    """The capture times agree, where both files carry one."""
    taken = raw.get("datetime_original"), picture.get("datetime_original")
    return None in taken or taken[0] == taken[1]


class PairScope(Protocol):
    """Where a run looks for the RAW+JPEG pairs among its files."""

    def mark(self, store: RecordStore) -> int: ...


@dataclass(frozen=True)
class PairsAmong:
    """The pairs among these paths; with `fresh`, only the shots with a file in it (those read in this run)."""

    paths: list[str]
    fresh: set[str] | None = None

    def mark(self, store: RecordStore) -> int:
        return pair_records(store, self.paths, self.fresh)
