"""The text in photos and their places through the Serve app: an upload through the warm path has its place at
once and its text shortly after (the TextReader deployment, which goes 0 -> 1 -> 0); a folder over the inline
limit is read by the Ray job's own actors; `POST /text`; search by words over HTTP."""

from __future__ import annotations

import shutil

import pytest
import requests
from conftest import wait_for
from photo_cases import sha256_of
from serve_app import IDLE_SECONDS, INLINE_MAX_FILES, auth, running_replicas, wait_job

from samples.sample_photos import write_many
from samples.text_photos import write_shop_signs

COLLECTION = "signs"


def search(service, text: str, **fields) -> list[dict]:
    response = requests.post(f"{service['url']}/search", headers=auth(service), timeout=60,
                             json={"collection": fields.pop("collection", COLLECTION), "text": text, **fields})
    assert response.status_code == 200, response.text
    return response.json()["results"]


@pytest.fixture(scope="module")
def signs(tmp_path_factory):
    return write_shop_signs(tmp_path_factory.mktemp("upload-signs"))


def named(results: list[dict], signs: dict) -> list[str]:
    """The signs' names (an upload is kept under its content's hash)."""
    names = {sha256_of(path): name for name, path in signs.items()}
    return [names.get(result["id"], result["path"]) for result in results]


def test_an_upload_has_its_place_at_once_and_its_text_shortly_after(service, ray_head, signs):
    wait_for(lambda: running_replicas(service, ray_head, "TextReader") == 0, timeout=IDLE_SECONDS + 60,
             what="the text reader at zero")
    files = [("files", (name, path.read_bytes(), "image/jpeg")) for name, path in signs.items()]
    response = requests.post(f"{service['url']}/ingest/upload", headers=auth(service), params={"wait": "true"},
                             files=files, data={"collection": COLLECTION, "read_text": "true"}, timeout=300)
    assert response.status_code == 200, response.text  # stored: searchable, with its place
    stored = {result["place"] for result in search(service, "a sign", k=10, mode="vector") if "place" in result}
    assert stored == {"Lisbon, Portugal", "Paris, France"}
    done = wait_job(service, response.json()["job_id"])
    assert (done["status"], done["embedded"], done["text_read"]) == ("SUCCEEDED", 3, 3), done
    found = search(service, "pharmacie", mode="words")
    assert named(found, signs) == ["street.jpg"] and found[0]["matched"] == ["text"]
    assert found[0]["text"] == "Rue de Rivoli 12\nPHARMACIE"
    both = search(service, "bakery")
    assert named(both, signs)[0] == "bakery.jpg" and "text" in both[0]["matched"]
    by_filter = search(service, "food", text_words="soup")
    assert named(by_filter, signs) == ["menu.jpg"]
    wrong = requests.post(f"{service['url']}/search", headers=auth(service), timeout=30,
                          json={"collection": COLLECTION, "text": "x", "mode": "sideways"})
    assert wrong.status_code == 422 and "mode" in wrong.text
    wait_for(lambda: running_replicas(service, ray_head, "TextReader") == 0, timeout=IDLE_SECONDS + 60,
             what="the text reader back at zero")


def test_the_text_route_reads_a_photo(service, signs):
    with open(signs["street.jpg"], "rb") as photo:
        response = requests.post(f"{service['url']}/text", headers=auth(service), files={"file": photo}, timeout=120)
    assert response.status_code == 200, response.text
    assert response.json() == {"text": "Rue de Rivoli 12\nPHARMACIE", "lines": ["Rue de Rivoli 12", "PHARMACIE"]}
    broken = requests.post(f"{service['url']}/text", headers=auth(service), files={"file": ("x.jpg", b"not a photo")},
                           timeout=60)
    assert broken.status_code == 422 and broken.json()["detail"].startswith("file: ")


def test_a_folder_over_the_inline_limit_has_its_text_read_by_the_jobs_own_actors(service, signs):
    folder = service["allowed"] / "signs-job"
    write_many(str(folder), INLINE_MAX_FILES)
    for name, path in signs.items():
        shutil.copy(path, folder / name)
    response = requests.post(f"{service['url']}/ingest", headers=auth(service), timeout=60,
                             json={"paths": [str(folder)], "collection": "signs-job", "read_text": True})
    assert response.status_code == 202, response.text
    done = wait_job(service, response.json()["job_id"], timeout=600)
    assert done["route"]["kind"] == "ray_job", done
    assert (done["status"], done["embedded"], done["text_read"]) == ("SUCCEEDED", INLINE_MAX_FILES + 3,
                                                                     INLINE_MAX_FILES + 3), done
    assert named(search(service, "rivoli", mode="words", collection="signs-job"), signs) == ["street.jpg"]
