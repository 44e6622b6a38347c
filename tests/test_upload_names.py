"""An upload keeps the name it had on the uploader's disk: the stored file stays named by its hash, the record holds
`upload_name`, results show it as `name`, and a search by words finds the photo by the words of that name; bytes
uploaded again under another name take the newer name."""

from __future__ import annotations

import os

import requests
from photo_cases import sha256_of
from serve_app import auth

from ray_pipeline.files.upload_names import NAMES_FOLDER
from samples.sample_photos import write_many


def test_an_upload_is_shown_and_found_by_its_own_name(service, tmp_path):
    (photo,) = write_many(str(tmp_path), 1, seed=77)
    with open(photo, "rb") as data:
        response = requests.post(f"{service['url']}/ingest/upload", headers=auth(service), params={"wait": "true"},
                                 files={"files": ("Holiday at Sintra - day 2.jpg", data, "image/jpeg")},
                                 data={"collection": "named-uploads"}, timeout=300)
    assert response.status_code == 200, response.text
    found = requests.post(f"{service['url']}/search", headers=auth(service), timeout=60,
                          json={"collection": "named-uploads", "text": "sintra", "mode": "words"}).json()["results"]
    assert [result["id"] for result in found] == [sha256_of(photo)]
    (result,) = found
    assert result["name"] == "Holiday at Sintra - day 2.jpg" and result["metadata"]["upload_name"] == result["name"]
    assert result["path"].endswith(f"{sha256_of(photo)}.jpg")  # the stored file: named by its hash
    with open(photo, "rb") as data:  # the same bytes, from another disk, under another name
        again = requests.post(f"{service['url']}/ingest/upload", headers=auth(service), params={"wait": "true"},
                              files={"files": ("C:\\Users\\ana\\Pictures\\IMG_0042.JPG", data, "image/jpeg")},
                              data={"collection": "named-uploads"}, timeout=300)
    assert again.status_code == 200 and again.json()["skipped_existing"] == 1, again.text
    listed = requests.get(f"{service['url']}/collections/named-uploads/photos", headers=auth(service), timeout=60)
    assert [result["name"] for result in listed.json()["results"]] == ["IMG_0042.JPG"]


def test_a_failed_upload_is_reported_by_its_own_name(service):
    """The job's errors name the file as the uploader knows it (the app's copy, named by its hash, is deleted, and the
    name kept beside it with it)."""
    response = requests.post(f"{service['url']}/ingest/upload", headers=auth(service), params={"wait": "true"},
                             files={"files": ("Grandma's scan 1987.jpg", b"\xff\xd8 not a photo at all", "image/jpeg")},
                             data={"collection": "named-uploads"}, timeout=300)
    assert response.status_code == 200 and response.json()["failed"] == 1, response.text
    (error,) = response.json()["errors"]
    assert error["name"] == "Grandma's scan 1987.jpg" and error["reason"], error
    assert not os.path.exists(error["path"])  # the app's copy: deleted, not remembered
    names = service["work"] / "uploads" / NAMES_FOLDER
    assert not (names / os.path.basename(error["path"])).exists()
