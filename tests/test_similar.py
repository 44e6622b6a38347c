"""`similar`: exact copies apart from near-duplicates. Real photos re-encoded, resized, cropped and
rotated group together with the tiny model at its threshold, distinct photos do not; in this process
and as Ray tasks, and the block products find every pair a brute-force product finds."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import requests
from conftest import ROOT
from PIL import Image
from test_where_it_runs import no_cluster_env

from ray_pipeline.search import similar
from samples.sample_photos import real_photos

# The tiny test model's threshold: its variants of one photo stay above 0.99 and these distinct photos
# below (the tiny model is random: it tells apart fewer photos than a trained one, so `coffee`, which it
# finds within 0.996 of `chelsea`, is left out).
TINY_THRESHOLD = "0.99"


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.unit
def test_the_blocks_find_every_pair_a_whole_product_finds(monkeypatch):
    monkeypatch.setattr(similar, "BLOCK", 7)  # 40 vectors: blocks meet in many places
    rng = np.random.default_rng(3)
    vectors = unit(rng.normal(size=(40, 16)))
    vectors[[5, 13, 38]] = unit(vectors[[21, 21, 2]] + rng.normal(scale=0.05, size=(3, 16)))  # across blocks
    whole = vectors @ vectors.T
    expected = {(i, j) for i, j in zip(*np.nonzero(whole >= 0.9)) if i < j}
    found, count = similar.pairs_here(vectors, 0.9)
    assert {(i, j) for i, j, _ in found} == expected and len(found) == count == len(expected) >= 3
    assert all(abs(score - whole[i, j]) < 1e-5 for i, j, score in found)
    # A threshold that lets every pair through: the answer is bounded, the strongest first, the count told.
    kept, every = similar.pairs_here(vectors, -1.0, most=10)
    upper = sorted((whole[i, j] for i in range(40) for j in range(i + 1, 40)), reverse=True)
    assert every == 40 * 39 // 2 and len(kept) == 10
    assert np.allclose([score for _, _, score in kept], upper[:10], atol=1e-5)


@pytest.mark.unit
def test_chained_pairs_make_one_group_with_every_pairs_score():
    ids = ["a", "b", "c", "d", "e"]
    metadatas = [{"path": f"/p/{i}.jpg"} for i in ids]
    groups = similar.groups_of(ids, metadatas, [(0, 1, 0.99), (1, 2, 0.97), (3, 4, 0.96)])
    assert [[m.id for m in g.members] for g in groups] == [["a", "b", "c"], ["d", "e"]]
    assert groups[0].scores == [("a", "b", 0.99), ("b", "c", 0.97)]
    assert groups[0].members[0].paths == ["/p/a.jpg"]


def write_near_copies(folder) -> None:
    """Two photos in six versions each, three distinct photos, one of them also copied byte for byte."""
    (folder / "exports").mkdir(parents=True)
    photos = real_photos()
    for name in ("astronaut", "rocket"):
        picture = Image.fromarray(photos[name])
        width, height = picture.size
        picture.save(folder / f"{name}.jpg", quality=95)
        picture.save(folder / "exports" / f"{name} q60.jpg", quality=60)
        picture.save(folder / "exports" / f"{name} q30.jpg", quality=30)
        picture.resize((width // 2, height // 2)).save(folder / "exports" / f"{name} small.jpg", quality=85)
        picture.crop((width // 20, height // 20, width - width // 20, height - height // 20)).save(
            folder / "exports" / f"{name} cropped.png")
        picture.rotate(3).save(folder / "exports" / f"{name} rotated.webp", quality=90)
    for name in ("china", "flower", "chelsea"):
        Image.fromarray(photos[name]).save(folder / f"{name}.jpg", quality=90)
    shutil.copy2(folder / "flower.jpg", folder / "exports" / "flower copy.jpg")


@pytest.fixture(scope="module")
def near_copies(tmp_path_factory, tiny_model_args):
    """The near copies, ingested with no cluster."""
    folder = tmp_path_factory.mktemp("similar") / "photos"
    write_near_copies(folder)
    chroma = folder.parent / "chroma"
    ingested = subprocess.run([sys.executable, "-m", "ray_pipeline", "ingest", str(folder), "--collection", "similar",
                               "--chroma-path", str(chroma), *tiny_model_args],
                              env=no_cluster_env(), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert ingested.returncode == 0, ingested.stderr[-3000:]
    return folder, chroma


def grouped(output: str) -> tuple[list[list[str]], list[list[str]]]:
    found = json.loads(output)
    names = [sorted(member["path"].rsplit("/", 1)[1] for member in group["members"]) for group in found["near"]]
    return [member["paths"] for member in found["exact"]], sorted(names)


def expected_groups(folder) -> list[list[str]]:
    return sorted(sorted([f"{name}.jpg", *(f"{name} {v}" for v in ("q60.jpg", "q30.jpg", "small.jpg", "cropped.png",
                                                                     "rotated.webp"))]) for name in ("astronaut", "rocket"))


def test_near_copies_group_together_and_exact_copies_come_apart(near_copies):
    folder, chroma = near_copies
    completed = subprocess.run([sys.executable, "-m", "ray_pipeline", "similar", "--collection", "similar", "--chroma-path",
                                str(chroma), "--threshold", TINY_THRESHOLD, "--json"],
                               env=no_cluster_env(), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    exact, near = grouped(completed.stdout)
    assert exact == [[str(folder / "exports" / "flower copy.jpg"), str(folder / "flower.jpg")]]
    assert near == expected_groups(folder)  # china, flower and chelsea are in no group
    group = json.loads(completed.stdout)["near"][0]
    assert len(group["scores"]) >= len(group["members"]) - 1 and all(s["score"] >= 0.99 for s in group["scores"])
    text = subprocess.run([sys.executable, "-m", "ray_pipeline", "similar", "--collection", "similar", "--chroma-path",
                           str(chroma), "--threshold", TINY_THRESHOLD], env=no_cluster_env(), cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert text.stdout.splitlines()[0] == f"exact copies: {json.loads(completed.stdout)['exact'][0]['id'][:12]}  " \
        f"{folder / 'exports' / 'flower copy.jpg'}  {folder / 'flower.jpg'}"
    assert "1 contents stored at several paths; 2 groups of near-duplicates at cosine >= 0.99" in text.stderr


def test_past_the_in_process_limit_the_blocks_are_ray_tasks(cli, near_copies):
    folder, chroma = near_copies
    completed = cli("similar", "--collection", "similar", "--chroma-path", str(chroma), "--threshold", TINY_THRESHOLD,
                    "--in-process-max", "5", "--json")
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "15 vectors: their pairs found by Ray tasks on" in completed.stderr
    assert grouped(completed.stdout)[1] == expected_groups(folder)


def test_a_threshold_out_of_range_is_a_usage_error(tmp_path):
    completed = subprocess.run([sys.executable, "-m", "ray_pipeline", "similar", "--collection", "photos", "--threshold", "1.5"],
                               env=no_cluster_env(), cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 2 and "expected a cosine between -1 and 1, got '1.5'" in completed.stderr


def test_over_http_the_groups_are_those_of_the_command(service):
    """GET /collections/{name}/similar answers the JSON of `similar --json`."""
    from serve_app import auth, wait_job

    folder = service["allowed"] / "similar"
    write_near_copies(folder)
    started = requests.post(f"{service['url']}/ingest", json={"paths": [str(folder)], "collection": "near-copies"},
                            headers=auth(service), timeout=60)
    assert started.status_code in (200, 202), started.text
    ingested = wait_job(service, started.json()["job_id"])
    assert (ingested["status"], ingested["embedded"], ingested["duplicates"], ingested["failed"]) == ("SUCCEEDED", 15, 1, 0), ingested
    answer = requests.get(f"{service['url']}/collections/near-copies/similar", params={"threshold": TINY_THRESHOLD},
                          headers=auth(service), timeout=300)
    assert answer.status_code == 200, answer.text
    exact, near = grouped(answer.text)
    assert exact == [[str(folder / "exports" / "flower copy.jpg"), str(folder / "flower.jpg")]]
    assert near == expected_groups(folder)
    # As a Ray job (what a collection larger than SIMILAR_IN_APP_MAX gets): followed as an ingestion, the
    # groups in its status once it has succeeded.
    started = requests.get(f"{service['url']}/collections/near-copies/similar", params={"threshold": TINY_THRESHOLD,
                           "job": "true"}, headers=auth(service), timeout=60)
    assert started.status_code == 202, started.text
    done = wait_job(service, started.json()["job_id"])
    assert done["status"] == "SUCCEEDED" and done["collection"] == "near-copies"
    assert grouped(json.dumps(done["similar"])) == (exact, near)
    assert requests.get(f"{service['url']}/collections/near-copies/similar", params={"threshold": 2},
                        headers=auth(service), timeout=60).status_code == 422
    assert requests.get(f"{service['url']}/collections/no-such-one/similar", headers=auth(service), timeout=60).status_code == 404
