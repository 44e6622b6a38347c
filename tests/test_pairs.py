"""RAW+JPEG pairs: a camera's RAW file and the picture it wrote of the same shot are marked in both
records and shown as one search result, the picture with its RAW, unless all are asked for."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT
from test_where_it_runs import no_cluster_env

from ray_pipeline.records.store import opened_for_writing
from ray_pipeline.records.target import StoreTarget
from ray_pipeline.search.query import newest_first, top_k
from ray_pipeline.steps.pairs import beside, candidates, pair_records
from samples.sample_photos import real_photos, write_dng, write_jpeg

MODEL = {"model": "tiny-clip", "weights": "test", "embedding_dim": 4}


def records(folder, files: dict[str, str | None]) -> tuple[list[str], list[dict]]:
    """Ids and metadata of records of these files ({name: capture time or None})."""
    ids = [f"{i:064x}" for i in range(1, len(files) + 1)]
    metadatas = [{"path": str(folder / name), "paths": [str(folder / name)],
                  **({"datetime_original": taken} if taken else {})} for name, taken in files.items()]
    return ids, metadatas


@pytest.fixture
def store(tmp_path):
    with opened_for_writing(StoreTarget("pairs", path=str(tmp_path / "chroma")), MODEL) as opened:
        yield opened


@pytest.mark.unit
def test_a_pair_is_one_shot_in_one_folder_whose_times_agree(tmp_path, store):
    a, b = tmp_path / "a", tmp_path / "b"
    files = {"IMG_1.dng": "2024-05-01T10:20:30", "IMG_1.JPG": "2024-05-01T10:20:30",  # a pair
             "IMG_2.dng": "2024-05-01T10:20:30", "IMG_2.jpg": "2024-05-01T11:00:00",  # the times differ
             "IMG_3.nef": None, "IMG_3.heic": "2024-05-01T12:00:00",  # one time only: a pair
             "IMG_4.dng": None, "IMG_5.jpg": None}  # other stems
    ids, metadatas = records(a, files)
    _, other = records(b, {"IMG_1.jpg": "2024-05-01T10:20:30"})  # another folder
    every = [*ids, f"{99:064x}"]
    store.upsert(every, np.tile(np.eye(4, dtype=np.float32)[0], (len(every), 1)), metadatas + other)
    paths = [m["path"] for m in metadatas] + [other[0]["path"]]
    assert sorted(sorted(raws + shown) for raws, shown in candidates(paths)) == [
        sorted([str(a / "IMG_1.dng"), str(a / "IMG_1.JPG")]), sorted([str(a / "IMG_2.dng"), str(a / "IMG_2.jpg")]),
        sorted([str(a / "IMG_3.heic"), str(a / "IMG_3.nef")])]
    assert pair_records(store, paths) == 2
    by_name = {m["path"].rsplit("/", 1)[1]: (i, m) for i, m in store.records(ids).items()}
    marked = {name: (m.get("pair_of"), m.get("pair_role")) for name, (_, m) in by_name.items() if m.get("pair_of")}
    assert marked == {"IMG_1.dng": (by_name["IMG_1.JPG"][0], "raw"), "IMG_1.JPG": (by_name["IMG_1.dng"][0], "shown"),
                      "IMG_3.nef": (by_name["IMG_3.heic"][0], "raw"), "IMG_3.heic": (by_name["IMG_3.nef"][0], "shown")}
    assert pair_records(store, paths) == 0  # marked once


@pytest.mark.unit
def test_search_shows_a_pair_once_unless_all_are_asked_for(tmp_path, store):
    ids, metadatas = records(tmp_path, {"IMG_1.dng": None, "IMG_1.jpg": None, "other.jpg": None})
    vectors = np.array([[1, 0, 0, 0], [0.9, 0.1, 0, 0], [0.8, 0.2, 0, 0]], np.float32)
    store.upsert(ids, vectors / np.linalg.norm(vectors, axis=1, keepdims=True), metadatas)
    pair_records(store, [m["path"] for m in metadatas])
    query = np.array([1, 0, 0, 0], np.float32)
    collapsed = top_k(store, query, 5).results
    assert [r["path"] for r in collapsed] == [str(tmp_path / "IMG_1.jpg"), str(tmp_path / "other.jpg")]
    assert collapsed[0]["raw"] == {"id": ids[0], "path": str(tmp_path / "IMG_1.dng"), "paths": [str(tmp_path / "IMG_1.dng")]}
    assert collapsed[0]["score"] == pytest.approx(1.0)  # the pair ranks where its first file ranked
    assert [r["path"] for r in top_k(store, query, 5, collapse=False).results] == [m["path"] for m in metadatas]
    assert [r["id"] for r in top_k(store, query, 1, offset=1).results] == [ids[2]]  # pages count results, not records
    listing = newest_first(store, 5)
    assert (len(listing.results), listing.total) == (2, 2) and newest_first(store, 5, collapse=False).total == 3


@pytest.mark.unit
def test_beside_finds_the_files_of_the_same_shot_on_disk(tmp_path):
    for name in ("IMG_1.dng", "IMG_1.jpg", "IMG_2.jpg"):
        (tmp_path / name).write_bytes(b"x")
    assert beside([str(tmp_path / "IMG_1.dng")]) == [str(tmp_path / "IMG_1.dng"), str(tmp_path / "IMG_1.jpg")]


def test_a_raw_and_its_jpeg_are_one_search_result(tmp_path, tiny_model_args):
    """Through the CLI, with no cluster: a DNG and a JPEG made from one photo, the same shot."""
    photos, chroma = tmp_path / "photos", tmp_path / "chroma"
    photos.mkdir()
    picture = real_photos()["chelsea"]
    write_dng(str(photos / "DSC_0007.dng"), picture)
    write_jpeg(str(photos / "DSC_0007.jpg"), picture)
    write_jpeg(str(photos / "rocket.jpg"), real_photos()["rocket"])
    env = no_cluster_env()
    ingested = subprocess.run([sys.executable, "-m", "ray_pipeline", "ingest", str(photos), "--collection", "pairs",
                               "--chroma-path", str(chroma), *tiny_model_args], env=env, cwd=ROOT, capture_output=True,
                              text=True, timeout=300)
    assert ingested.returncode == 0, ingested.stderr[-3000:]

    def search(*extra: str) -> list[dict]:
        done = subprocess.run([sys.executable, "-m", "ray_pipeline", "search", "a cat", "--collection", "pairs", "--chroma-path",
                               str(chroma), "-k", "5", "--json", *extra], env=env, cwd=ROOT, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout)["results"]

    one = search()
    assert sorted(r["path"] for r in one) == [str(photos / "DSC_0007.jpg"), str(photos / "rocket.jpg")]
    pair = next(r for r in one if r["path"].endswith("DSC_0007.jpg"))
    assert pair["raw"]["path"] == str(photos / "DSC_0007.dng")
    assert (pair["metadata"]["pair_of"], pair["metadata"]["pair_role"]) == (pair["raw"]["id"], "shown")
    assert sorted(r["path"].rsplit("/", 1)[1] for r in search("--all")) == ["DSC_0007.dng", "DSC_0007.jpg", "rocket.jpg"]
    raw = next(r for r in search("--all") if r["path"].endswith(".dng"))
    assert (raw["metadata"]["pair_of"], raw["metadata"]["pair_role"]) == (pair["id"], "raw")


def test_over_http_a_pair_is_one_result_unless_collapse_is_false(service):
    import requests
    from serve_app import auth, wait_job

    photos = service["allowed"] / "pairs"
    photos.mkdir()
    write_dng(str(photos / "DSC_0009.dng"), real_photos()["coffee"])
    write_jpeg(str(photos / "DSC_0009.jpg"), real_photos()["coffee"])
    started = requests.post(f"{service['url']}/ingest", json={"paths": [str(photos)], "collection": "http-pairs"},
                            headers=auth(service), timeout=60)
    assert wait_job(service, started.json()["job_id"])["status"] == "SUCCEEDED"

    def search(**extra) -> list[dict]:
        answer = requests.post(f"{service['url']}/search", json={"collection": "http-pairs", "text": "a cup", "k": 5, **extra},
                               headers=auth(service), timeout=120)
        assert answer.status_code == 200, answer.text
        return answer.json()["results"]

    one = search()
    assert [(r["path"], r["raw"]["path"]) for r in one] == [(str(photos / "DSC_0009.jpg"), str(photos / "DSC_0009.dng"))]
    assert sorted(r["path"] for r in search(collapse=False)) == [str(photos / "DSC_0009.dng"), str(photos / "DSC_0009.jpg")]
    listed = requests.get(f"{service['url']}/collections/http-pairs/photos", params={"collapse": "false"},
                          headers=auth(service), timeout=60).json()
    assert listed["total"] == 2
