"""The index follows the library: `ingest --prune` through the CLI as a user runs it, in its own process
(no Ray cluster), on a real embedded Chroma. Deletions, edits, moves and copies; the dry run; folders
that must remove nothing; failed files remembered; names that are not UTF-8."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import ROOT, summary_line, summary_of
from photo_cases import sha256_of
from test_where_it_runs import no_cluster_env

from ray_pipeline.core.paths import path_text, recorded_path
from ray_pipeline.steps.prune import GONE, REPLACED
from samples.sample_photos import real_photos, write_jpeg, write_library


def ingest(*args, chroma: Path, model: list[str], collection: str = "library") -> subprocess.CompletedProcess:
    """`python -m ray_pipeline ingest ARGS` in a shell with no Ray cluster."""
    return subprocess.run(
        [sys.executable, "-m", "ray_pipeline", "ingest", *map(str, args), "--collection", collection,
         "--chroma-path", str(chroma), *model],
        check=False, env=no_cluster_env(), cwd=ROOT, capture_output=True, text=True, timeout=300,
    )


def stored(chroma: Path, collection: str = "library") -> dict[str, dict]:
    """{id: {"metadata", "embedding"}} of every record, read by a client closed again at once."""
    import chromadb
    from chromadb.config import Settings

    client = chromadb.PersistentClient(path=str(chroma), settings=Settings(anonymized_telemetry=False))
    try:
        got = client.get_collection(collection).get(include=["metadatas", "embeddings"])
    finally:
        client.clear_system_cache()
    return {i: {"metadata": m, "embedding": [float(x) for x in e]}
            for i, m, e in zip(got["ids"], got["metadatas"], got["embeddings"])}


def paths_of(records: dict[str, dict]) -> dict[str, str]:
    return {record_id: recorded_path(r["metadata"]) for record_id, r in records.items()}


def lines_after(prefix: str, text: str) -> set[str]:
    return {line[len(prefix):] for line in text.splitlines() if line.startswith(prefix)}


def failures_in(errors_file: Path) -> dict[str, str]:
    return {json.loads(line)["path"]: json.loads(line)["reason"] for line in errors_file.read_text(encoding="utf-8").splitlines()}


def test_prune_follows_deletions_edits_moves_and_copies(tmp_path, tiny_model_args):
    """A deleted file's record goes, an edited file's old record goes (its new bytes are embedded), a
    moved file's record and the record of a copy whose original was deleted keep their id and take the
    new path. The dry run first lists exactly what prune then removes, and changes nothing."""
    photos, chroma = tmp_path / "photos", tmp_path / "chroma"
    write_library(str(photos))
    first = ingest(photos, chroma=chroma, model=tiny_model_args)
    assert summary_of(first)["embedded"] == 6
    assert "route: in_process (" in first.stderr and "in this process, without Ray" in first.stderr
    before = stored(chroma)
    ids = {name: sha256_of(photos / name) for name in os.listdir(photos)}

    (photos / "flower.dng").unlink()
    write_jpeg(str(photos / "astronaut.jpg"), real_photos()["astronaut"][:, ::-1])  # edited in place
    (photos / "moved").mkdir()
    os.rename(photos / "rocket.webp", photos / "moved" / "rocket.webp")
    (photos / "copies").mkdir()
    shutil.copy2(photos / "coffee.png", photos / "copies" / "coffee copy.png")
    (photos / "coffee.png").unlink()
    edited = sha256_of(photos / "astronaut.jpg")
    assert edited not in before
    expected = {f"{photos / 'flower.dng'} ({GONE})", f"{photos / 'astronaut.jpg'} ({REPLACED})"}

    dry = ingest(photos, "--prune", "--dry-run", chroma=chroma, model=tiny_model_args)
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert lines_after("would remove: ", dry.stdout) == expected
    assert summary_line(dry.stdout)["dry_run"] is True and summary_line(dry.stdout)["removed"] == 2
    assert stored(chroma) == before  # nothing moved, removed or embedded

    pruned = ingest(photos, "--prune", chroma=chroma, model=tiny_model_args)
    summary = summary_of(pruned)
    assert (summary["removed"], summary["embedded"]) == (2, 1)
    assert lines_after("removed: ", pruned.stderr) == expected
    assert paths_of(stored(chroma)) == {
        ids["chelsea_rotated.JPG"]: str(photos / "chelsea_rotated.JPG"),
        ids["china.tiff"]: str(photos / "china.tiff"),
        ids["rocket.webp"]: str(photos / "moved" / "rocket.webp"),
        ids["coffee.png"]: str(photos / "copies" / "coffee copy.png"),
        edited: str(photos / "astronaut.jpg"),
    }


def test_an_emptied_folder_removes_nothing_until_told(tmp_path, tiny_model_args):
    """A folder of the run that holds no photos while records point into it (a card wiped, a sync gone
    wrong) keeps every record and says why; the other folders prune as usual. With
    --prune-missing-folders its records go."""
    keep, card, chroma = tmp_path / "keep", tmp_path / "card", tmp_path / "chroma"
    photos = real_photos()
    for folder, names in ((keep, ("astronaut", "coffee")), (card, ("rocket", "chelsea"))):
        folder.mkdir()
        for name in names:
            write_jpeg(str(folder / f"{name}.jpg"), photos[name])
    assert summary_of(ingest(keep, card, chroma=chroma, model=tiny_model_args))["embedded"] == 4
    before = paths_of(stored(chroma))
    deleted = sha256_of(keep / "coffee.jpg")
    (keep / "coffee.jpg").unlink()
    for file in card.iterdir():
        file.unlink()

    refused = ingest(keep, card, "--prune", chroma=chroma, model=tiny_model_args)
    assert summary_of(refused)["removed"] == 1
    assert paths_of(stored(chroma)) == {i: p for i, p in before.items() if i != deleted}  # only keep's gone file
    assert lines_after("removed: ", refused.stderr) == {f"{keep / 'coffee.jpg'} ({GONE})"}
    (why,) = lines_after(f"kept every record under {card}: ", refused.stderr)
    assert "holds no photos" in why and "--prune-missing-folders" in why

    forced = ingest(keep, card, "--prune", "--prune-missing-folders", chroma=chroma, model=tiny_model_args)
    assert summary_of(forced)["removed"] == 2
    assert paths_of(stored(chroma)) == {sha256_of(keep / "astronaut.jpg"): str(keep / "astronaut.jpg")}


def test_a_missing_folder_stops_the_run_until_told(tmp_path, tiny_model_args):
    """A folder of the run that is gone (a disk unplugged, a typo) is an error and deletes nothing; with
    --prune-missing-folders its records go."""
    keep, disk, chroma = tmp_path / "keep", tmp_path / "disk", tmp_path / "chroma"
    photos = real_photos()
    for folder, names in ((keep, ("astronaut",)), (disk, ("rocket", "chelsea"))):
        folder.mkdir()
        for name in names:
            write_jpeg(str(folder / f"{name}.jpg"), photos[name])
    assert summary_of(ingest(keep, disk, chroma=chroma, model=tiny_model_args))["embedded"] == 3
    before = stored(chroma)
    shutil.rmtree(disk)

    stopped = ingest(keep, disk, "--prune", chroma=chroma, model=tiny_model_args)
    assert stopped.returncode != 0
    assert f"no such file or folder: {disk}" in stopped.stderr
    assert stored(chroma) == before

    forced = ingest(keep, disk, "--prune", "--prune-missing-folders", chroma=chroma, model=tiny_model_args)
    assert summary_of(forced)["removed"] == 2
    assert paths_of(stored(chroma)) == {sha256_of(keep / "astronaut.jpg"): str(keep / "astronaut.jpg")}
    assert lines_after("removed: ", forced.stderr) == {f"{disk / 'rocket.jpg'} ({GONE})", f"{disk / 'chelsea.jpg'} ({GONE})"}


def test_failed_files_are_reported_again_unread_until_they_change(tmp_path, tiny_model_args):
    """A re-run of a library with a corrupt file and a dangling symlink reports both again with their
    reasons, reads nothing and runs no job; once fixed, both are read and embedded."""
    photos, chroma, errors = tmp_path / "photos", tmp_path / "chroma", tmp_path / "errors.jsonl"
    pictures = real_photos()
    photos.mkdir()
    write_jpeg(str(photos / "good.jpg"), pictures["coffee"])
    corrupt, link = photos / "corrupt.jpg", photos / "dangling.jpg"
    corrupt.write_bytes((photos / "good.jpg").read_bytes()[:3000])
    target = tmp_path / "elsewhere" / "target.jpg"
    os.symlink(target, link)

    first = ingest(photos, "--errors", errors, chroma=chroma, model=tiny_model_args)
    assert (summary_of(first)["embedded"], summary_of(first)["failed"]) == (1, 2)
    reasons = failures_in(errors)
    assert set(reasons) == {str(corrupt), str(link)} and all(reasons.values())

    again = ingest(photos, "--errors", errors, chroma=chroma, model=tiny_model_args)
    summary = summary_of(again)
    assert (summary["embedded"], summary["skipped_existing"], summary["failed"]) == (0, 1, 2)
    assert failures_in(errors) == reasons
    assert lines_after("failed: ", again.stderr) == {f"{path}: {reason}" for path, reason in reasons.items()}
    assert summary["stage_seconds"]["read"] == 0
    assert "nothing to embed, no job to run" in again.stderr
    assert "route: none (" in again.stderr and "in this process" not in again.stderr  # no model loaded

    write_jpeg(str(corrupt), pictures["chelsea"])
    target.parent.mkdir()
    write_jpeg(str(target), pictures["rocket"])
    fixed = ingest(photos, "--errors", errors, chroma=chroma, model=tiny_model_args)
    summary = summary_of(fixed)
    assert (summary["embedded"], summary["skipped_existing"], summary["failed"]) == (2, 1, 0)
    assert set(paths_of(stored(chroma)).values()) == {str(photos / "good.jpg"), str(corrupt), str(link)}
    assert errors.read_text() == ""


def test_a_name_that_is_not_utf8_round_trips_through_records_errors_reruns_and_prune(tmp_path, tiny_model_args):
    """Latin-1 names: the record's `path_bytes` and the errors file's reach the very files; a re-run
    skips the stored one unread; once it is deleted, prune removes its record."""
    folder = os.fsdecode(os.fsencode(tmp_path) + b"/caf\xe9")
    good, broken = (os.fsdecode(os.fsencode(folder) + name) for name in (b"/na\xefve.jpg", b"/cass\xe9.jpg"))
    chroma, errors = tmp_path / "chroma", tmp_path / "errors.jsonl"
    os.mkdir(folder)
    write_jpeg(good, real_photos()["chelsea"])
    Path(broken).write_text("these are notes, not a photo\n")

    first = ingest(folder, "--errors", errors, chroma=chroma, model=tiny_model_args)
    assert (summary_of(first)["embedded"], summary_of(first)["failed"]) == (1, 1)
    ((record_id, record),) = stored(chroma).items()
    assert record_id == sha256_of(good)
    assert bytes.fromhex(record["metadata"]["path_bytes"]) == os.fsencode(good)
    assert record["metadata"]["path"] == path_text(good) != good
    (error,) = (json.loads(line) for line in errors.read_text(encoding="utf-8").splitlines())
    assert error["path"] == path_text(broken)
    assert bytes.fromhex(error["path_bytes"]) == os.fsencode(broken)
    assert f"failed: {path_text(broken)}: {error['reason']}" in first.stderr

    again = summary_of(ingest(folder, chroma=chroma, model=tiny_model_args))
    assert (again["embedded"], again["skipped_existing"], again["failed"]) == (0, 1, 1)
    assert again["stage_seconds"]["read"] == 0

    os.unlink(good)
    pruned = ingest(folder, "--prune", chroma=chroma, model=tiny_model_args)
    assert summary_of(pruned)["removed"] == 1
    assert lines_after("removed: ", pruned.stderr) == {f"{path_text(good)} ({GONE})"}
    assert stored(chroma) == {}


def test_a_record_knows_every_path_of_its_bytes_and_follows_each_deletion(tmp_path, tiny_model_args):
    """Three files with one content: one record whose `paths` are all three, shown in listings and search
    results. Deleting a copy drops only that path; deleting the record's own file moves it to a copy."""
    photos, chroma = tmp_path / "photos", tmp_path / "chroma"
    photos.mkdir()
    write_jpeg(str(photos / "a.jpg"), real_photos()["astronaut"])
    write_jpeg(str(photos / "other.jpg"), real_photos()["coffee"])
    for copy in ("b.jpg", "c.jpg"):
        shutil.copy2(photos / "a.jpg", photos / copy)
    record_id = sha256_of(photos / "a.jpg")
    first = summary_of(ingest(photos, chroma=chroma, model=tiny_model_args))
    assert (first["embedded"], first["duplicates"]) == (2, 2)
    assert stored(chroma)[record_id]["metadata"]["paths"] == [str(photos / name) for name in ("a.jpg", "b.jpg", "c.jpg")]
    listing = subprocess.run([sys.executable, "-m", "ray_pipeline", "browse", "--collection", "library", "--chroma-path",
                              str(chroma), "--json"], env=no_cluster_env(), cwd=ROOT, capture_output=True, text=True, timeout=120)
    shown = {result["id"]: result for result in json.loads(listing.stdout)["results"]}
    assert shown[record_id]["paths"] == [str(photos / name) for name in ("a.jpg", "b.jpg", "c.jpg")]

    (photos / "b.jpg").unlink()
    pruned = summary_of(ingest(photos, "--prune", chroma=chroma, model=tiny_model_args))
    assert (pruned["removed"], pruned["embedded"]) == (0, 0)
    kept = stored(chroma)[record_id]["metadata"]
    assert (kept["path"], kept["paths"]) == (str(photos / "a.jpg"), [str(photos / "a.jpg"), str(photos / "c.jpg")])

    (photos / "a.jpg").unlink()
    moved = summary_of(ingest(photos, "--prune", chroma=chroma, model=tiny_model_args))
    assert (moved["removed"], moved["embedded"]) == (0, 0)
    kept = stored(chroma)[record_id]["metadata"]
    assert (kept["path"], kept["paths"]) == (str(photos / "c.jpg"), [str(photos / "c.jpg")])
