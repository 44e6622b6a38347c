"""Prune: records whose file is gone, or holds other bytes now, leave the collection, so that the index
follows the library through deletions and edits (`ingest --prune`, and always in `watch`).

Deleting records is the most dangerous thing the product does, so a record goes only when all hold:
- its file lies in a folder of the run, and that folder looks as it should. A folder that is missing,
  unreadable, a mount point with nothing mounted, or that holds no photos while the collection holds
  records under it, removes nothing, and the run says why: an unmounted disk or a typo never empties a
  collection. `--prune-missing-folders` overrides this, for a folder really emptied or deleted;
- its path is really gone from the disk, or was read in this run and holds other bytes now;
- no other file holds its bytes: another listed file, or another of the paths the record knows
  (`paths`). When one does, the record takes that file's path instead, so that deleting one of two
  copies loses nothing. A copy that is gone leaves the record's `paths`, under the same conditions, and
  changes nothing else.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from ray_pipeline.core import record_keys as keys
from ray_pipeline.core.paths import FileFailure, is_within, path_text, recorded_path
from ray_pipeline.files.reading import FileBytes
from ray_pipeline.records.store import RecordStore
from ray_pipeline.steps.journey import moved_fields

logger = logging.getLogger(__name__)

FSTAB = "/etc/fstab"
GONE, REPLACED = "the file is gone", "the file holds other bytes now"


@dataclass(frozen=True)
class Removal:
    id: str
    path: str
    reason: str  # GONE or REPLACED


@dataclass
class PrunePlan:
    removals: list[Removal] = field(default_factory=list)
    moves: dict[str, str] = field(default_factory=dict)  # record id -> another file that holds its bytes
    paths: dict[str, list[str]] = field(default_factory=dict)  # record id -> its `paths`, copies gone left out
    refused: list[FileFailure] = field(default_factory=list)  # folders that remove nothing, and why

    def apply(self, store: RecordStore) -> None:
        """Move, then remove (a ChromaStore or StoreHandle). A copy that vanished since it was listed
        takes no record: that record stays as it was, for the next run to settle."""
        changes = {record_id: {keys.PATHS: paths} for record_id, paths in self.paths.items()}
        for record_id, path in self.moves.items():
            try:
                changes[record_id] = {**changes.get(record_id, {}), **_moved_to(path)}
            except OSError:
                changes.pop(record_id, None)
        if changes:
            store.merge_metadata(changes)
        if self.removals:
            store.delete([removal.id for removal in self.removals])

    def describe(self) -> list[str]:
        """One line per record removed, then per folder refused, for people."""
        return ([f"removed: {path_text(r.path)} ({r.reason})" for r in self.removals]
                + [f"kept every record under {path_text(refusal.path)}: {refusal.reason}" for refusal in self.refused])


def _moved_to(path: str) -> dict:
    info = os.stat(path)
    return moved_fields(FileBytes(path, b"", info.st_size, info.st_mtime, info.st_mtime_ns))


def _fstab_mount_points(fstab: str = FSTAB) -> list[str]:
    try:
        with open(fstab, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    points = []
    for line in lines:
        fields = line.split()
        if len(fields) >= 2 and not fields[0].startswith("#") and fields[1].startswith("/") and fields[1] != "/":
            points.append(fields[1].replace("\\040", " "))
    return points


def unmounted_mount_point(folder: str, fstab: str = FSTAB) -> str | None:
    """The mount point (from /etc/fstab) that `folder` lies on while nothing is mounted there, if any."""
    real = os.path.realpath(folder)
    for point in _fstab_mount_points(fstab):
        if is_within(real, (point,)) and not os.path.ismount(point):
            return point
    return None


def unmounted_mount_points_in(folder: str, fstab: str = FSTAB) -> list[str]:
    """The mount points (from /etc/fstab) inside `folder` with nothing mounted: what they held looks gone."""
    real = os.path.realpath(folder)
    inside = [point for point in _fstab_mount_points(fstab) if point != real and is_within(point, (real,))]
    return [os.path.join(folder, os.path.relpath(point, real)) for point in inside if not os.path.ismount(point)]


def _not_listable(folder: str) -> str | None:
    """Why `folder` cannot be listed (missing, or unreadable), or None."""
    if not os.path.isdir(folder):
        return "the folder is missing (deleted, or on a disk that is not mounted?)"
    try:
        with os.scandir(folder) as entries:
            next(entries, None)
    except OSError as exc:
        return f"the folder cannot be read: {exc.strerror or exc}"
    return None


def folder_refusal(folder: str, has_photos: bool, recorded: int, fstab: str = FSTAB) -> str | None:
    """Why records under `folder` must not be pruned now (None: they may): it is missing or unreadable,
    on a mount point with nothing mounted, or holds no photos while `recorded` records say it did."""
    reason = _not_listable(folder)
    if reason is not None:
        return reason
    point = unmounted_mount_point(folder, fstab)
    if point is not None:
        return f"it lies on {point}, a mount point in {fstab} with nothing mounted"
    if not has_photos and recorded:
        return f"the folder holds no photos, while the collection holds {recorded} records under it"
    return None


def is_gone(path: str) -> bool:
    """Whether nothing is at `path`: only "no such file" says so. A folder that cannot be read, or a
    network file system that stopped answering, is no proof that a file has gone."""
    try:
        os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return True
    except OSError:
        return False
    return False


def folders_holding(paths) -> set[str]:
    """Every folder that holds one of these files, at any depth."""
    folders: set[str] = set()
    for path in paths:
        folder = os.path.dirname(path)
        while folder not in folders and folder != os.path.dirname(folder):
            folders.add(folder)
            folder = os.path.dirname(folder)
    return folders


def _vanished(folder: str, listed: set[str]) -> str | None:
    """Why the files under `folder` (inside a folder of the run) must be kept although they look gone:
    the folder itself is gone or unreadable, or holds no photo now. A disk unplugged from under a
    folder of the run, or a symlinked folder whose target is gone, looks just like that."""
    reason = _not_listable(folder)
    if reason is None and folder not in listed:
        return "the folder holds no photos now"
    return reason


def plan_prune(records: dict[str, dict], holds: dict[str, str], folders: list[str], listed: set[str],
               kept: tuple[str, ...] = (), force: bool = False, fstab: str = FSTAB,
               events_seen: bool = False) -> PrunePlan:
    """What to move and remove among `records` ({id: metadata} of the records under `folders`).

    `holds`: {path: id} of every listed file whose bytes are known in this run; `listed`: the folders
    where the run listed photos (`folders_holding`); `kept`: folders that could not be listed (nothing
    under them goes); `force`: prune even under folders that look missing, unmounted or emptied.
    `events_seen`: the files looked at were seen going, one by one (a watch's deletion events), so a
    subfolder that went with them went for real; otherwise a file under a subfolder that is gone or
    emptied is kept, as under a folder of the run.
    """
    plan = PrunePlan()
    refused: list[str] = []

    def refuse(folder: str, reason: str) -> None:
        refused.append(folder)
        if any(is_within(recorded_path(metadata) or "", (folder,)) for metadata in records.values()):
            plan.refused.append(FileFailure(folder, f"{reason} (--prune-missing-folders overrides)"))

    for folder in folders:
        recorded = sum(1 for metadata in records.values() if is_within(recorded_path(metadata) or "", (folder,)))
        reason = None if force else folder_refusal(folder, folder in listed, recorded, fstab)
        if reason is not None:
            refuse(folder, reason)
        elif not force:
            for point in unmounted_mount_points_in(folder, fstab):
                refuse(point, f"a mount point in {fstab} with nothing mounted")
    allowed = tuple(folder for folder in folders if folder not in refused)
    holders: dict[str, list[str]] = {}
    for path, record_id in holds.items():
        holders.setdefault(record_id, []).append(path)

    def settled(path: str, record_id: str) -> bool:
        """Whether nothing may be said of `path` now: outside the allowed folders, or there (or
        unreadable) with its bytes unknown, or read in this run with this record's bytes."""
        if holds.get(path) == record_id or not is_within(path, allowed) or is_within(path, (*kept, *refused)):
            return True
        return path not in holds and not is_gone(path)

    for record_id, metadata in sorted(records.items(), key=lambda item: recorded_path(item[1]) or ""):
        path = recorded_path(metadata) or ""
        known = [other for other in metadata.get(keys.PATHS) or [] if other != metadata.get(keys.PATH)]
        copies = [other for other in known if settled(other, record_id)]
        if len(copies) < len(known):
            plan.paths[record_id] = sorted({*copies, path_text(path)})
        if settled(path, record_id):
            continue
        others = sorted(other for other in {*holders.get(record_id, ()), *copies} if other != path and not is_gone(other))
        if others:
            plan.moves[record_id] = others[0]
            plan.paths[record_id] = sorted({*copies, path_text(others[0])})
            continue
        parent = os.path.dirname(path)
        if path not in holds and not (force or events_seen) and (reason := _vanished(parent, listed)):
            refuse(parent, reason)  # this record, and the others under it, stay
            continue
        plan.removals.append(Removal(record_id, path, REPLACED if path in holds else GONE))
    return plan


@dataclass(frozen=True)
class Pruning:
    """What a run's prune looks at, and the guards it keeps."""

    folders: list[str]  # the run's folders: prune looks only there (named files and manifests prune nothing)
    listed: set[str]  # the folders where the run listed photos (`folders_holding`), or a watch found some
    kept: tuple[str, ...] = ()  # folders that could not be listed: nothing under them goes
    force: bool = False  # --prune-missing-folders
    events_seen: bool = False  # a watch's batch: the files looked at were seen going, one by one
    scan: tuple[str, ...] | None = None  # the folders whose records are looked at (None: `folders`)
    at_paths: tuple[str, ...] = ()  # and the records at these paths (a watch's changed and gone files)
    known: dict[str, str] = field(default_factory=dict)  # {path: id} known before this run (a watch's earlier batches)
    machine: str = ""  # whose files these are: another machine's records (same paths, other files) are not looked at


def plan_pruning(store: RecordStore, pruning: Pruning, holds: dict[str, str]) -> PrunePlan:
    """What to move and remove, from `holds` ({path: id} of the files whose bytes are known in this run)."""
    scan = list(pruning.folders if pruning.scan is None else pruning.scan)
    records = store.records_under(scan) if scan else {}
    if pruning.at_paths:
        records.update(store.records_at(list(pruning.at_paths)))
    if pruning.machine:  # a record of no machine was written before records said whose they are: this one's
        records = {i: m for i, m in records.items() if m.get(keys.MACHINE) in (None, pruning.machine)}
    plan = plan_prune(records, {**pruning.known, **holds}, pruning.folders, pruning.listed, pruning.kept,
                      pruning.force, events_seen=pruning.events_seen)
    if plan.moves:
        logger.info("prune: %d records of files gone take the path of a copy that is still there", len(plan.moves))
    return plan
