"""Collections managed: shown with what they hold (records, photos, model, enrichments, people, faces, remembered
failures), and deleted with their companions only when the name is typed again, over HTTP and the CLI; a
collection deleted can be made again by the next ingestion."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import requests
from conftest import ROOT
from serve_app import auth, wait_job

from samples.face_photos import write_faces

COLLECTION = "doomed"


def upload(service, folder, names: list[str], **fields) -> dict:
    files = [("files", (name, (folder / name).read_bytes(), "image/jpeg")) for name in names]
    files.append(("files", ("broken.jpg", b"\xff\xd8 not a photo", "image/jpeg")))
    response = requests.post(f"{service['url']}/ingest/upload", headers=auth(service), params={"wait": "true"},
                             files=files, data={"collection": COLLECTION, **fields}, timeout=300)
    assert response.status_code == 200, response.text
    return wait_job(service, response.json()["job_id"])  # its faces, found after the records are stored


def show(service, **params) -> requests.Response:
    return requests.get(f"{service['url']}/collections/{COLLECTION}", params=params, headers=auth(service), timeout=60)


def delete(service, confirm: str, name: str = COLLECTION) -> requests.Response:
    return requests.delete(f"{service['url']}/collections/{name}", json={"confirm": confirm}, headers=auth(service),
                           timeout=60)


def test_a_collection_shown_then_deleted_with_its_companions(service, tmp_path):
    write_faces(tmp_path)
    upload(service, tmp_path, ["eileen.jpg", "coffee.jpg"], find_faces="true")
    shown = show(service, failures=5)
    assert shown.status_code == 200, shown.text
    held = shown.json()
    assert (held["records"], held["photos"], held["faces"], held["people"]) == (2, 2, 1, 1)
    assert held["enrichments"]["looked_for_faces"] == 2 and held["model"] == "tiny-clip"
    # the broken upload's copy is deleted, not remembered: an upload that fails is not kept
    assert held["failed_files"] == len(held["failures"])

    wrong = delete(service, "doomed ")
    assert wrong.status_code == 422 and "confirm: type the collection's name, 'doomed'" in wrong.text
    assert show(service).json()["records"] == 2  # nothing changed
    assert delete(service, "no-such-thing", "no-such-thing").status_code == 404

    gone = delete(service, COLLECTION)
    assert gone.status_code == 200, gone.text
    removed = {entry["name"]: entry["records"] for entry in gone.json()["removed"]}
    assert {name: removed[name] for name in ("doomed", "doomed--faces", "doomed--people")} == {
        "doomed": 2, "doomed--faces": 1, "doomed--people": 1}
    assert set(removed) <= {"doomed", "doomed--faces", "doomed--people", "doomed--failed-files"}
    assert show(service).status_code == 404
    listed = requests.get(f"{service['url']}/collections", headers=auth(service), timeout=60).json()["collections"]
    assert COLLECTION not in {entry["name"] for entry in listed}
    entries = requests.get(f"{service['url']}/audit", headers=auth(service), timeout=60).json()["entries"]
    assert (entries[0]["action"], entries[0]["collection"], entries[0]["key"]) == ("collection deleted", COLLECTION,
                                                                                   "env-admin")

    again = upload(service, tmp_path, ["grace.jpg"])  # made again by the next ingestion
    assert again["embedded"] == 1
    assert show(service).json()["records"] == 1


def test_the_collections_command(tiny_model_args, tmp_path):
    def command(*args) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "ray_pipeline", *args], cwd=ROOT, capture_output=True, text=True,
                              timeout=300)

    photos = tmp_path / "photos"
    photos.mkdir()
    write_faces(tmp_path / "faces")
    shutil.copy(tmp_path / "faces" / "eileen.jpg", photos)
    (photos / "broken.jpg").write_bytes(b"\xff\xd8 not a photo")
    chroma = str(tmp_path / "chroma")
    ingested = command("ingest", str(photos), "--collection", "family", "--chroma-path", chroma, "--find-faces",
                       *tiny_model_args)
    assert ingested.returncode == 0, ingested.stderr[-2000:]
    assert "family  1 records  tiny-clip" in command("collections", "list", "--chroma-path", chroma).stdout
    held = json.loads(command("collections", "show", "family", "--failures", "3", "--chroma-path", chroma).stdout)
    assert (held["records"], held["faces"], held["failed_files"]) == (1, 1, 1)
    assert held["failures"][0]["path"].endswith("broken.jpg") and held["failures"][0]["reason"]
    refused = command("collections", "delete", "family", "--confirm", "famly", "--chroma-path", chroma)
    assert refused.returncode == 2 and "confirm: type the collection's name" in refused.stderr
    removed = json.loads(command("collections", "delete", "family", "--confirm", "family", "--chroma-path", chroma).stdout)
    assert {entry["name"] for entry in removed["removed"]} == {"family", "family--failed-files", "family--faces",
                                                               "family--people"}
    assert command("collections", "list", "--chroma-path", chroma).stdout == ""
