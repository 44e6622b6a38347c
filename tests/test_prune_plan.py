"""Prune's plan on real files, and the collection's memory of failed files: what goes, what moves, what
stays, and the folders that remove nothing. No Ray, no model, no subprocess."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from ray_pipeline.core.reasons import lasting
from ray_pipeline.files.state import file_states
from ray_pipeline.records.collections import list_collections
from ray_pipeline.records.failures import Failure, failures_collection
from ray_pipeline.records.store import opened_for_writing
from ray_pipeline.records.target import StoreTarget
from ray_pipeline.steps.prune import (
    GONE,
    REPLACED,
    folder_refusal,
    folders_holding,
    is_gone,
    plan_prune,
    unmounted_mount_point,
    unmounted_mount_points_in,
)

pytestmark = pytest.mark.unit

MODEL = {"model": "tiny-clip", "weights": "test", "embedding_dim": 32}


def photo(path: Path, content: bytes = b"photo bytes") -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return str(path)


def record(path) -> dict:
    return {"path": str(path), "filename": os.path.basename(path)}


@pytest.fixture
def library(tmp_path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    return folder


def test_a_gone_copy_leaves_the_records_paths_and_nothing_else(library):
    """Deleting one copy moves nothing but that path: the record, its path and its other copies stay."""
    original, kept = photo(library / "a.jpg"), photo(library / "copies" / "c.jpg")
    gone = str(library / "copies" / "b.jpg")
    plan = plan_prune({"r": {**record(original), "paths": [original, gone, kept]}}, {original: "r", kept: "r"},
                      [str(library)], folders_holding([original, kept]))
    assert (plan.removals, plan.moves, plan.paths) == ([], {}, {"r": [original, kept]})


def test_a_gone_original_takes_the_path_of_a_copy_the_record_knows(library):
    """The copy need not be listed in this run: the record's `paths` say where its bytes are too."""
    elsewhere = photo(library.parent / "backup" / "a.jpg")
    gone = str(library / "a.jpg")
    listed = photo(library / "other.jpg", b"other bytes")
    plan = plan_prune({"r": {**record(gone), "paths": [elsewhere, gone]}}, {listed: "o"}, [str(library)],
                      folders_holding([listed]))
    assert (plan.removals, plan.moves, plan.paths) == ([], {"r": elsewhere}, {"r": [elsewhere]})


def test_copies_outside_the_folders_of_the_run_are_kept_whatever_they_look_like(library):
    original = photo(library / "a.jpg")
    outside = str(library.parent / "unmounted" / "a.jpg")  # gone, or on a disk not there now: not ours to say
    plan = plan_prune({"r": {**record(original), "paths": [original, outside]}}, {original: "r"}, [str(library)],
                      folders_holding([original]))
    assert (plan.removals, plan.moves, plan.paths) == ([], {}, {})


def test_a_gone_file_loses_its_record(library):
    kept = photo(library / "kept.jpg")
    gone = library / "gone.jpg"
    plan = plan_prune({"k": record(kept), "g": record(gone)}, {kept: "k"}, [str(library)], {str(library)})
    assert [(r.id, r.path, r.reason) for r in plan.removals] == [("g", str(gone), GONE)]
    assert (plan.moves, plan.refused) == ({}, [])


def test_a_file_that_holds_other_bytes_now_loses_its_old_record(library):
    """An edited file: read in this run, its bytes are another record's now."""
    edited = photo(library / "edited.jpg", b"new bytes")
    plan = plan_prune({"old": record(edited), "new": record(edited)}, {edited: "new"}, [str(library)], {str(library)})
    assert [(r.id, r.path, r.reason) for r in plan.removals] == [("old", edited, REPLACED)]
    assert plan.moves == {}


def test_a_gone_file_whose_bytes_another_listed_file_holds_moves_there(library):
    """Deleting one of two copies loses nothing: the record takes the surviving copy's path."""
    copy = photo(library / "copies" / "copy.jpg")
    plan = plan_prune({"same": record(library / "original.jpg")}, {copy: "same"}, [str(library)], {str(library)})
    assert plan.removals == []
    assert plan.moves == {"same": copy}


def test_a_file_there_but_not_read_in_this_run_is_kept(library):
    """Nothing says it changed: not listed in `holds` is no reason to remove it."""
    unread = photo(library / "unread.jpg")
    plan = plan_prune({"u": record(unread)}, {}, [str(library)], {str(library)})
    assert (plan.removals, plan.moves) == ([], {})


def test_records_outside_the_folders_of_the_run_are_kept(library, tmp_path):
    elsewhere = tmp_path / "elsewhere" / "gone.jpg"  # gone, but in no folder of this run
    listed = photo(library / "a.jpg")
    plan = plan_prune({"e": record(elsewhere), "a": record(listed)}, {listed: "a"}, [str(library)], {str(library)})
    assert plan.removals == []


def test_records_under_folders_that_could_not_be_listed_are_kept(library):
    """A subfolder the run could not list (`kept`) says nothing of the files in it."""
    listed = photo(library / "a.jpg")
    locked = library / "locked"
    records = {"a": record(listed), "l": record(locked / "x.jpg"), "g": record(library / "gone.jpg")}
    plan = plan_prune(records, {listed: "a"}, [str(library)], {str(library)}, kept=(str(locked),))
    assert [r.id for r in plan.removals] == ["g"]


def test_an_emptied_folder_removes_nothing_unless_forced(library):
    """A folder that holds no photos while the collection holds records under it (an unmounted card, a
    sync that wiped it) says why and removes nothing; --prune-missing-folders overrides."""
    records = {name: record(library / f"{name}.jpg") for name in ("a", "b")}
    plan = plan_prune(records, {}, [str(library)], listed=set())
    assert (plan.removals, plan.moves) == ([], {})
    assert [refusal.path for refusal in plan.refused] == [str(library)]
    assert "holds no photos" in plan.refused[0].reason and "2 records" in plan.refused[0].reason
    assert "--prune-missing-folders" in plan.refused[0].reason
    assert any(line.startswith(f"kept every record under {library}: ") for line in plan.describe())

    forced = plan_prune(records, {}, [str(library)], listed=set(), force=True)
    assert sorted(r.id for r in forced.removals) == ["a", "b"] and forced.refused == []


def test_one_refused_folder_does_not_stop_the_others(library, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    records = {"a": record(library / "a.jpg"), "o": record(other / "o.jpg")}
    plan = plan_prune(records, {}, [str(library), str(other)], listed={str(other)})
    assert [r.id for r in plan.removals] == ["o"]
    assert [refusal.path for refusal in plan.refused] == [str(library)]


def test_a_refused_folder_inside_another_folder_of_the_run_keeps_its_records(library):
    """`ingest photos photos/card --prune` with the card emptied: the card's records stay, although the
    outer folder, which still holds photos, may prune."""
    kept = photo(library / "kept.jpg")
    card = library / "card"
    card.mkdir()
    records = {"k": record(kept), "c1": record(card / "1.jpg"), "c2": record(card / "2.jpg"), "g": record(library / "gone.jpg")}
    plan = plan_prune(records, {kept: "k"}, [str(library), str(card)], {str(library)})
    assert [r.id for r in plan.removals] == ["g"]
    assert [refusal.path for refusal in plan.refused] == [str(card)]


def test_an_unmounted_mount_point_inside_a_folder_of_the_run_keeps_its_records(library, tmp_path):
    """`ingest /photos --prune` with /photos/nas in fstab and nothing mounted there: what it held looks
    gone, and stays."""
    kept = photo(library / "kept.jpg")
    nas = library / "nas"
    nas.mkdir()
    fstab = tmp_path / "fstab"
    fstab.write_text(f"server:/photos {nas} nfs defaults 0 0\n")
    assert unmounted_mount_points_in(str(library), str(fstab)) == [str(nas)]
    records = {"k": record(kept), "n": record(nas / "far.jpg"), "g": record(library / "gone.jpg")}
    plan = plan_prune(records, {kept: "k"}, [str(library)], {str(library)}, fstab=str(fstab))
    assert [r.id for r in plan.removals] == ["g"]
    assert [refusal.path for refusal in plan.refused] == [str(nas)]
    forced = plan_prune(records, {kept: "k"}, [str(library)], {str(library)}, force=True, fstab=str(fstab))
    assert sorted(r.id for r in forced.removals) == ["g", "n"]


def test_a_subfolder_gone_or_emptied_keeps_its_records_unless_its_files_were_seen_going(library, tmp_path):
    """`ingest --prune /media/me` with the disk under /media/me/DISK unplugged, or a symlinked folder
    whose target is gone, or a card folder emptied: the records under it stay. A watch that saw the
    files go one by one may remove them."""
    kept = photo(library / "kept.jpg")
    os.symlink(tmp_path / "elsewhere", library / "linked")  # a folder whose target is gone
    (library / "emptied").mkdir()
    records = {"k": record(kept), "d": record(library / "DISK" / "a.jpg"), "l": record(library / "linked" / "b.jpg"),
               "e": record(library / "emptied" / "c.jpg"), "g": record(library / "gone.jpg")}
    listed = folders_holding([kept])
    plan = plan_prune(records, {kept: "k"}, [str(library)], listed)
    assert [r.id for r in plan.removals] == ["g"]
    assert sorted(refusal.path for refusal in plan.refused) == sorted(
        str(library / name) for name in ("DISK", "linked", "emptied"))
    seen = plan_prune(records, {kept: "k"}, [str(library)], listed, events_seen=True)
    assert sorted(r.id for r in seen.removals) == ["d", "e", "g", "l"]


def test_only_no_such_file_says_a_file_is_gone(tmp_path):
    """A file that cannot be stat'ed for another reason (a network file system that stopped answering,
    a name too long) is not gone, and its record stays."""
    assert is_gone(str(tmp_path / "nothing.jpg"))
    assert is_gone(photo(tmp_path / "file.jpg") + "/under-a-file.jpg")
    too_long = str(tmp_path / ("x" * 300) / "a.jpg")
    assert not is_gone(too_long)
    plan = plan_prune({"t": record(too_long)}, {}, [str(tmp_path)], folders_holding([str(tmp_path / "file.jpg")]))
    assert plan.removals == [] and plan.moves == {}


def test_a_missing_folder_removes_nothing_unless_forced(tmp_path):
    missing = tmp_path / "unplugged"
    records = {"m": record(missing / "m.jpg")}
    plan = plan_prune(records, {}, [str(missing)], listed=set())
    assert plan.removals == []
    assert [(refusal.path, "missing" in refusal.reason) for refusal in plan.refused] == [(str(missing), True)]
    assert [r.id for r in plan_prune(records, {}, [str(missing)], set(), force=True).removals] == ["m"]


def test_a_folder_on_an_fstab_mount_point_with_nothing_mounted_is_refused(tmp_path):
    """The disk is not plugged in: its mount point is an ordinary (maybe non-empty) folder."""
    mount_point = os.path.realpath(tmp_path / "disk")
    folder = os.path.join(mount_point, "photos")
    photo(Path(folder) / "left-behind.jpg")
    fstab = tmp_path / "fstab"
    fstab.write_text(f"# a comment line\nUUID=1234 / ext4 defaults 0 1\nUUID=abcd {mount_point} ext4 defaults,nofail 0 2\n")
    assert unmounted_mount_point(folder, str(fstab)) == mount_point
    reason = folder_refusal(folder, has_photos=True, recorded=3, fstab=str(fstab))
    assert reason is not None and mount_point in reason and "nothing mounted" in reason


def test_an_fstab_that_names_only_the_root_refuses_nothing(tmp_path):
    folder = tmp_path / "photos"
    photo(folder / "a.jpg")
    fstab = tmp_path / "fstab"
    fstab.write_text("UUID=1234 / ext4 defaults 0 1\n")
    assert unmounted_mount_point(str(folder), str(fstab)) is None
    assert folder_refusal(str(folder), has_photos=True, recorded=3, fstab=str(fstab)) is None


def test_a_mounted_mount_point_is_not_refused(tmp_path):
    """/proc is mounted wherever Linux runs: a folder on it passes the fstab check."""
    fstab = tmp_path / "fstab"
    fstab.write_text("proc /proc proc defaults 0 0\n")
    assert os.path.ismount("/proc")
    assert unmounted_mount_point("/proc/self", str(fstab)) is None


def test_the_collection_remembers_failures_until_the_file_changes(tmp_path):
    """A failed file in the same state (size, mtime, ctime) is known with its reason; changed, it is
    known as changed (None), to be read again; forgotten, it is not known at all. Non-UTF-8 names too."""
    broken = photo(tmp_path / "photos" / "broken.jpg", b"not a photo")
    latin = photo(Path(os.fsdecode(os.fsencode(tmp_path / "photos") + b"/caf\xe9.jpg")), b"nor this")
    other = photo(tmp_path / "photos" / "other.jpg")
    before = file_states([broken, latin, other])
    target = StoreTarget(collection="memory", path=str(tmp_path / "chroma"))
    with opened_for_writing(target, MODEL) as store:
        assert store.failed_before(before) == {}  # no memory yet: no companion collection either
        store.remember_failures([Failure(broken, before[broken], "cannot decode image"),
                                 Failure(latin, before[latin], "not a recognised image format")], [])
        assert store.failed_before(before) == {broken: "cannot decode image", latin: "not a recognised image format"}

        with open(broken, "ab") as f:
            f.write(b" and more")
        now = file_states([broken, latin])
        assert now[broken] != before[broken]
        assert store.failed_before(now) == {broken: None, latin: "not a recognised image format"}

        store.remember_failures([], [broken])
        assert store.failed_before(now) == {latin: "not a recognised image format"}
        assert [c["name"] for c in list_collections(store.client)] == ["memory"]
        assert failures_collection("memory") in {c.name for c in store.client.list_collections()}
        assert store.collection.count() == 0  # failures are no records of the collection


def test_only_failures_of_the_file_itself_are_remembered():
    """A picture refused by --max-pixels, a file outside --within, a permission or a read error hang on
    the run or the moment: the next run tries them again. A broken picture is remembered."""
    import io

    from PIL import Image

    from ray_pipeline.core.geometry import InputGeometry
    from ray_pipeline.files.decode import DecodeError, decode_image

    for reason in ("permission denied", "cannot read file: Input/output error", "resolves outside the allowed folders"):
        assert not lasting(reason), reason
    png = io.BytesIO()
    Image.new("RGB", (64, 64)).save(png, "PNG")
    with pytest.raises(DecodeError) as broken:
        decode_image(png.getvalue()[:40], InputGeometry(32, 32))
    assert lasting(str(broken.value))
    with pytest.raises(DecodeError) as too_large:
        decode_image(png.getvalue(), InputGeometry(32, 32), max_pixels=100)
    assert not lasting(str(too_large.value))


def test_the_failures_of_a_collection_with_the_longest_name_have_a_name_chroma_takes():
    from ray_pipeline.records.target import COLLECTION_NAME

    longest = "a" * 511 + "b"
    names = {failures_collection(longest), failures_collection("a" * 511 + "c"), failures_collection("photos")}
    assert failures_collection("photos") == "photos--failed-files"
    assert len(names) == 3 and all(len(name) <= 512 and re.fullmatch(COLLECTION_NAME, name) for name in names)
