"""End to end through the CLI on a real Ray head: the records, vectors, metadata, failures and re-runs
a user relies on."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from conftest import summary_of
from photo_cases import sha256_of, write_test_library

from ray_pipeline.core.paths import path_text, recorded_path

pytestmark = pytest.mark.usefixtures("ray_head")


def open_collection(chroma_path, name):
    import chromadb

    return chromadb.PersistentClient(path=str(chroma_path)).get_collection(name)


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    root = tmp_path_factory.mktemp("lib") / "photos"
    return root, write_test_library(root)


@pytest.fixture(scope="module")
def ingested(library, tmp_path_factory, ray_head, tiny_model_args):
    from conftest import run_cli

    root, cases = library
    work = tmp_path_factory.mktemp("ingest")
    errors_file = work / "errors.jsonl"
    completed = run_cli(
        ["ingest", str(root), "--collection", "photos", "--chroma-path", str(work / "chroma"),
         "--errors", str(errors_file), "--inline-max-files", "0", *tiny_model_args],  # the bulk path, whatever the size
        env=ray_head["env"],
    )
    return {"summary": summary_of(completed), "stderr": completed.stderr, "chroma": work / "chroma",
            "errors_file": errors_file, "root": root, "cases": cases}


def by_kind(cases, kind):
    return [c for c in cases if c.kind == kind]


def test_summary_counts_every_discovered_file(ingested):
    cases = ingested["cases"]
    summary = ingested["summary"]
    assert summary["collection"] == "photos"
    assert summary["embedded"] == len(by_kind(cases, "valid"))
    assert summary["duplicates"] == len(by_kind(cases, "duplicate")) == 1
    assert summary["failed"] == len(by_kind(cases, "failed"))
    assert summary["skipped_existing"] == 0
    assert summary["discovered"] == len(cases) - len(by_kind(cases, "ignored"))
    assert summary["seconds"] > 0
    assert list(summary) == ["collection", "discovered", "embedded", "skipped_existing", "duplicates", "failed", "removed",
                             "seconds", "stage_seconds", "actors", "route"]
    assert summary["route"]["kind"] == "ray_data"
    assert summary["route"]["reason"].endswith("more than --inline-max-files (0), on a running Ray cluster: a Ray Data job on it")
    # The plan the Ray Data job ran with, on the session's 2-CPU head: one CPU embedding actor beside decoding.
    assert summary["actors"]["device"] == "cpu" and summary["actors"]["embed_actors"] == [1, 1]
    assert summary["actors"]["decode_actors"] >= 1 and summary["actors"]["batch_size"] == 32
    assert all(summary["stage_seconds"][stage] > 0 for stage in ("read", "decode", "embed", "write"))


def test_a_job_shows_no_ray_noise(ingested):
    """What a user reads is the job's own lines and Ray Data's progress: no deprecation warning, no core
    worker ERROR line about Ray Data's own actors, no warning of OpenCLIP's that the job already says."""
    for noise in ("RayDeprecationWarning", "core_worker.cc", "No pretrained weights loaded"):
        assert noise not in ingested["stderr"], noise
    assert "Starting execution of Dataset" in ingested["stderr"]  # it did run as a Ray Data job


def test_stored_ids_are_the_sha256_of_the_valid_distinct_files(ingested):
    collection = open_collection(ingested["chroma"], "photos")
    stored = set(collection.get(include=[])["ids"])
    expected = {sha256_of(ingested["root"] / c.name) for c in by_kind(ingested["cases"], "valid")}
    assert stored == expected
    duplicate = ingested["root"] / "copies/astronaut copy.jpg"
    assert sha256_of(duplicate) in stored  # the copy is the same record, not a second one
    # ... which knows both paths of its bytes (learnt after the Ray Data job, through the folder's owner)
    record = collection.get(ids=[sha256_of(duplicate)], include=["metadatas"])["metadatas"][0]
    assert record["paths"] == sorted({str(duplicate), str(ingested["root"] / "travel/astronaut.jpg")})


def test_vectors_match_openclip_own_preprocessing_and_encoding(ingested, tiny_model):
    import open_clip
    import torch

    open_clip.add_model_config(tiny_model["config"])
    model, _, preprocess = open_clip.create_model_and_transforms("tiny-clip", pretrained=tiny_model["checkpoint"])
    model.eval()
    collection = open_collection(ingested["chroma"], "photos")
    for case in by_kind(ingested["cases"], "valid"):
        path = ingested["root"] / case.name
        record = collection.get(ids=[sha256_of(path)], include=["embeddings"])
        stored = np.asarray(record["embeddings"][0], dtype=np.float64)
        with torch.no_grad():
            own = model.encode_image(preprocess(case.reference(path))[None], normalize=True)[0].double().numpy()
        assert abs(np.linalg.norm(stored) - 1) < 1e-4, case.name
        assert float(stored @ own) > 0.999, f"{case.name}: cosine {float(stored @ own):.5f}"


def test_record_metadata(ingested):
    collection = open_collection(ingested["chroma"], "photos")
    for case in by_kind(ingested["cases"], "valid"):
        path = ingested["root"] / case.name
        metadata = collection.get(ids=[sha256_of(path)], include=["metadatas"])["metadatas"][0]
        if case.name.startswith("copies/") or metadata["path"].endswith("astronaut copy.jpg"):
            assert metadata["path"] in {str(path), str(ingested["root"] / "copies/astronaut copy.jpg")}
        else:
            assert recorded_path(metadata) == str(path)
            assert metadata["path"] == path_text(str(path))  # text any JSON takes, for every name
        assert metadata["filename"] == os.path.basename(metadata["path"])
        recorded = os.stat(recorded_path(metadata))  # of the copy the record was made from
        assert metadata["file_size"] == recorded.st_size
        assert metadata["mtime"] == pytest.approx(recorded.st_mtime)
        assert metadata["mtime_ns"] == recorded.st_mtime_ns
        assert metadata["is_raw"] is case.name.endswith(".dng")
        for key, value in case.metadata.items():
            assert metadata[key] == pytest.approx(value), f"{case.name}: {key}"
    astronaut = collection.get(ids=[sha256_of(ingested["root"] / "travel/astronaut.jpg")], include=["metadatas"])
    gps = astronaut["metadatas"][0]
    assert gps["gps_lat"] == pytest.approx(48.8584, abs=1e-4)
    assert gps["gps_lon"] == pytest.approx(2.2945, abs=1e-4)


def test_collection_records_its_model(ingested, tiny_model):
    collection = open_collection(ingested["chroma"], "photos")
    assert collection.metadata["model"] == "tiny-clip"
    assert collection.metadata["weights"].startswith("checkpoint:sha256:")
    assert collection.metadata["random_weights"] is False
    assert collection.configuration["hnsw"]["space"] == "cosine"


def test_failed_files_are_reported_with_reasons(ingested):
    lines = ingested["errors_file"].read_text(encoding="utf-8").splitlines()
    errors = {json.loads(line)["path"]: json.loads(line)["reason"] for line in lines}
    failed = by_kind(ingested["cases"], "failed")
    assert set(errors) == {path_text(str(ingested["root"] / c.name)) for c in failed}
    for case in failed:
        assert case.reason in errors[path_text(str(ingested["root"] / case.name))], case.name


def test_a_name_that_is_not_utf8_is_a_photo_like_any_other(ingested, cli):
    """Its record's text path shows the undecodable bytes; `path_bytes` reaches the very file, and a
    search by that file finds it (the record that holds its bytes, by the path it has)."""
    name = os.fsdecode(os.fsencode(ingested["root"]) + b"/caf\xe9/na\xefve.png")
    collection = open_collection(ingested["chroma"], "photos")
    metadata = collection.get(ids=[sha256_of(name)], include=["metadatas"])["metadatas"][0]
    assert metadata["path"].endswith("/caf\\xe9/na\\xefve.png")
    assert bytes.fromhex(metadata["path_bytes"]) == os.fsencode(name)
    assert metadata["filename"] == "na\\xefve.png"
    completed = cli("search", "--image", name, "--collection", "photos", "--chroma-path", str(ingested["chroma"]),
                    "-k", "1", "--json")
    assert completed.returncode == 0, completed.stderr
    best = json.loads(completed.stdout)["results"][0]
    assert (best["id"], best["path"], recorded_path(best)) == (sha256_of(name), metadata["path"], name)


def test_rerun_embeds_nothing(ingested, cli, tiny_model_args):
    completed = cli("ingest", str(ingested["root"]), "--collection", "photos", "--chroma-path",
                    str(ingested["chroma"]), *tiny_model_args)
    summary = summary_of(completed)
    assert summary["embedded"] == 0
    assert summary["skipped_existing"] == len(by_kind(ingested["cases"], "valid"))
    assert summary["duplicates"] == 1  # the copy is still a copy
    assert summary["failed"] == len(by_kind(ingested["cases"], "failed"))
    assert open_collection(ingested["chroma"], "photos").count() == len(by_kind(ingested["cases"], "valid"))


def test_search_by_text_prints_paths_and_scores(ingested, cli):
    completed = cli("search", "a cup of coffee", "--collection", "photos", "--chroma-path", str(ingested["chroma"]), "-k", "3")
    assert completed.returncode == 0, completed.stderr
    lines = [line for line in completed.stdout.strip().splitlines() if not line.startswith(" ")]  # then their details
    assert len(lines) == 3
    for line in lines:
        rank, score, path = line.split(maxsplit=2)
        assert -1.0 <= float(score) <= 1.0
        assert os.path.exists(path)


def test_search_by_image_finds_that_image_first(ingested, cli):
    query = ingested["root"] / "raw/flower.dng"
    completed = cli("search", "--image", str(query), "--collection", "photos", "--chroma-path",
                    str(ingested["chroma"]), "-k", "2", "--json")
    assert completed.returncode == 0, completed.stderr
    results = json.loads(completed.stdout)["results"]
    assert results[0]["path"] == str(query)
    assert results[0]["id"] == sha256_of(query)
    assert results[0]["score"] > 0.999


def test_writing_with_another_model_is_refused(ingested, cli, tiny_model):
    completed = cli("ingest", str(ingested["root"] / "coffee.png"), "--collection", "photos", "--chroma-path",
                    str(ingested["chroma"]), "--model", tiny_model["config"], "--checkpoint", tiny_model["other_checkpoint"])
    assert completed.returncode != 0
    assert "holds vectors from model tiny-clip" in completed.stderr
    assert completed.stdout == ""


def test_rerun_reads_only_new_or_changed_files(cli, tmp_path, tiny_model, tiny_model_args):
    """A file whose path, size and mtime match its record is not read again; --rehash reads everything."""
    from samples.sample_photos import real_photos, write_jpeg, write_library

    photos = tmp_path / "photos"
    write_library(str(photos))
    args = ["--collection", "rereads", "--chroma-path", str(tmp_path / "chroma"), *tiny_model_args]
    assert summary_of(cli("ingest", str(photos), *args))["embedded"] == 6

    unchanged = cli("ingest", str(photos), *args)
    again = summary_of(unchanged)
    assert (again["embedded"], again["skipped_existing"]) == (0, 6)
    assert again["stage_seconds"]["read"] == 0  # not one file was opened
    # Nothing new: the job ends on the driver, with no Ray Data job and no model loaded.
    assert "all 6 files are stored already: nothing to embed, no job to run" in unchanged.stderr
    assert "Starting execution of Dataset" not in unchanged.stderr
    other_model = cli("ingest", str(photos), "--collection", "rereads", "--chroma-path", str(tmp_path / "chroma"),
                      "--model", tiny_model["config"], "--checkpoint", tiny_model["other_checkpoint"])
    assert other_model.returncode == 2  # nothing to read, but another model is still refused
    assert "holds vectors from model tiny-clip" in other_model.stderr

    write_jpeg(str(photos / "astronaut.jpg"), real_photos()["astronaut"][:, ::-1])  # edited: new bytes, new mtime
    tiff = photos / "china.tiff"
    stat = tiff.stat()
    data = bytearray(tiff.read_bytes())
    data[len(data) // 2] ^= 0xFF  # changed in place with size and mtime restored, as no editor would
    tiff.write_bytes(bytes(data))
    os.utime(tiff, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    edits = cli("ingest", str(photos), *args)
    edited = summary_of(edits)
    assert (edited["embedded"], edited["skipped_existing"]) == (1, 5)
    assert "5 of 6 files are stored already: not read again" in edits.stderr  # only the JPEG
    rehashed = summary_of(cli("ingest", str(photos), "--rehash", *args))
    assert (rehashed["embedded"], rehashed["skipped_existing"]) == (1, 5)
    # Two records now match the TIFF's path, size and mtime: it is read to tell which one it is.
    settles = cli("ingest", str(photos), *args)
    settled = summary_of(settles)
    assert (settled["embedded"], settled["skipped_existing"]) == (0, 6)
    assert "files read here, their records not matching path, size and mtime: 1 (1 stored already" in settles.stderr


def test_touched_and_moved_files_update_their_records(cli, tmp_path, tiny_model_args):
    """Same bytes, new mtime or new place: no new record, the old one learns the file's stat or path,
    and the next run reads nothing."""
    from samples.sample_photos import write_library

    photos = tmp_path / "photos"
    write_library(str(photos))
    args = ["--collection", "moves", "--chroma-path", str(tmp_path / "chroma"), *tiny_model_args]
    cli("ingest", str(photos), *args)
    os.utime(photos / "coffee.png", ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000))
    (photos / "moved").mkdir()
    os.rename(photos / "rocket.webp", photos / "moved" / "rocket.webp")
    shutil.copy(photos / "astronaut.jpg", photos / "moved" / "astronaut copy.jpg")

    # Three files do not match a record by path, size and mtime: read and settled on the driver, no job.
    rerun = cli("ingest", str(photos), *args)
    again = summary_of(rerun)
    assert (again["embedded"], again["skipped_existing"], again["duplicates"]) == (0, 6, 1)
    assert "nothing to embed, no job to run" in rerun.stderr
    assert "Starting execution of Dataset" not in rerun.stderr
    collection = open_collection(tmp_path / "chroma", "moves")
    coffee = collection.get(ids=[sha256_of(photos / "coffee.png")], include=["metadatas"])["metadatas"][0]
    assert coffee["mtime_ns"] == 1_700_000_000_000_000_000
    rocket = collection.get(ids=[sha256_of(photos / "moved" / "rocket.webp")], include=["metadatas"])["metadatas"][0]
    assert (rocket["path"], rocket["filename"]) == (str(photos / "moved" / "rocket.webp"), "rocket.webp")
    assert collection.count() == 6

    settled = summary_of(cli("ingest", str(photos), *args))
    assert (settled["skipped_existing"], settled["duplicates"]) == (6, 1)
    assert settled["stage_seconds"]["read"] == 0
