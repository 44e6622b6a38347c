"""Thumbnails and the jobs listing, over real HTTP on the session's Serve app: only files recorded in the
collection are served, only while they still hold the recorded bytes, resized, with caching headers."""

from __future__ import annotations

import hashlib
import io
import shutil

import numpy as np
import pytest
import requests
from photo_cases import sha256_of
from PIL import Image, ImageOps
from serve_app import auth, wait_job

COLLECTION = "thumbnails-test"
FILES = ["astronaut.jpg", "chelsea_rotated.JPG", "flower.dng", "coffee.png", "rocket.webp"]


@pytest.fixture(scope="module")
def library(service):
    """A folder of its own inside the allowed roots (some files here get changed), ingested once."""
    folder = service["allowed"] / "thumbnail-test"
    folder.mkdir()
    for name in FILES:
        shutil.copy(service["allowed"] / "photos" / name, folder / name)
    response = requests.post(f"{service['url']}/ingest", headers=auth(service),
                             json={"paths": [str(folder)], "collection": COLLECTION}, timeout=30)
    assert response.status_code == 202, response.text
    status = wait_job(service, response.json()["job_id"])
    assert (status["status"], status["embedded"]) == ("SUCCEEDED", len(FILES)), status
    return {"folder": folder, "job": status}


def thumbnail(service, record_id: str, collection: str = COLLECTION, headers: dict | None = None, **params):
    return requests.get(f"{service['url']}/thumbnails/{collection}/{record_id}",
                        headers={**auth(service), **(headers or {})}, params=params, timeout=60)


def picture(response) -> Image.Image:
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "image/jpeg"
    image = Image.open(io.BytesIO(response.content))
    assert image.format == "JPEG"
    return image.convert("RGB")


def square(image: Image.Image, size: int) -> np.ndarray:
    """An independent reference: Pillow's own upright picture, centre-cropped and resized."""
    return np.asarray(ImageOps.fit(ImageOps.exif_transpose(image).convert("RGB"), (size, size)), dtype=np.float32)


def test_thumbnails_need_the_token(service, library):
    record_id = sha256_of(library["folder"] / "astronaut.jpg")
    for headers in [{}, {"Authorization": "Bearer wrong"}]:
        response = requests.get(f"{service['url']}/thumbnails/{COLLECTION}/{record_id}", headers=headers, timeout=10)
        assert response.status_code == 401
        assert response.headers["Content-Type"].startswith("application/json")


def test_only_records_of_the_collection_are_served(service, library):
    recorded = sha256_of(library["folder"] / "astronaut.jpg")
    elsewhere = sha256_of(service["allowed"] / "many" / "crop_000000.jpg")  # inside the roots, not in this collection
    for collection, record_id in [(COLLECTION, elsewhere), (COLLECTION, hashlib.sha256(b"nothing").hexdigest()),
                                  ("no-such-collection", recorded), (COLLECTION, "..." + recorded[3:]),
                                  (COLLECTION, recorded.upper())]:
        response = thumbnail(service, record_id, collection)
        assert response.status_code == 404, (collection, record_id, response.text)
        assert response.json()["detail"]


@pytest.mark.parametrize("size", [64, 200])
def test_a_thumbnail_is_an_upright_jpeg_of_the_asked_size(service, library, size):
    path = library["folder"] / "chelsea_rotated.JPG"  # stored sideways, with EXIF orientation 6
    shown = np.asarray(picture(thumbnail(service, sha256_of(path), size=size)), dtype=np.float32)
    assert shown.shape == (size, size, 3)
    with Image.open(path) as original:
        upright = square(original, size)
        sideways = np.asarray(ImageOps.fit(original.convert("RGB"), (size, size)), dtype=np.float32)
    assert np.abs(shown - upright).mean() < 12
    assert np.abs(shown - sideways).mean() > 2 * np.abs(shown - upright).mean()


def test_size_is_bounded(service, library):
    record_id = sha256_of(library["folder"] / "astronaut.jpg")
    assert picture(thumbnail(service, record_id)).size == (256, 256)  # the default
    for size in [0, 31, 1025, "big"]:
        response = thumbnail(service, record_id, size=size)
        assert response.status_code == 422, size
        assert "size" in str(response.json()["detail"])


def test_caching_headers_and_not_modified(service, library):
    record_id = sha256_of(library["folder"] / "astronaut.jpg")
    first = thumbnail(service, record_id, size=96)
    picture(first)
    etag, cache = first.headers["ETag"], first.headers["Cache-Control"]
    assert record_id in etag
    assert {"private", "immutable"} <= {part.strip() for part in cache.split(",")}
    assert int(cache.split("max-age=")[1].split(",")[0]) >= 24 * 3600
    again = thumbnail(service, record_id, headers={"If-None-Match": etag}, size=96)
    assert again.status_code == 304 and again.content == b""
    assert again.headers["ETag"] == etag
    other_size = thumbnail(service, record_id, headers={"If-None-Match": etag}, size=97)
    assert other_size.status_code == 200 and other_size.headers["ETag"] != etag


def test_a_raw_file_gets_a_thumbnail(service, library):
    shown = np.asarray(picture(thumbnail(service, sha256_of(library["folder"] / "flower.dng"), size=128)))
    assert shown.shape == (128, 128, 3)
    assert shown.std() > 20  # a picture, not a blank


def test_a_file_changed_or_gone_after_ingestion_is_not_served(service, library):
    changed = library["folder"] / "coffee.png"
    record_id = sha256_of(changed)
    picture(thumbnail(service, record_id, size=64))
    data = bytearray(changed.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, other bytes
    changed.write_bytes(bytes(data))
    response = thumbnail(service, record_id, size=64)
    assert response.status_code == 410
    assert "changed since it was ingested" in response.json()["detail"]
    changed.write_bytes(bytes(data) + b"more")  # another size: refused before it is read
    assert thumbnail(service, record_id, size=64).status_code == 410

    gone = library["folder"] / "rocket.webp"
    record_id = sha256_of(gone)
    gone.unlink()
    response = thumbnail(service, record_id, size=64)
    assert response.status_code == 410
    assert "gone" in response.json()["detail"]


def test_jobs_listing_has_the_job(service, library):
    url = f"{service['url']}/ingest"
    assert requests.get(url, timeout=10).status_code == 401
    jobs = requests.get(url, headers=auth(service), timeout=30).json()["jobs"]
    job_id = library["job"]["job_id"]
    listed = next(job for job in jobs if job["job_id"] == job_id)
    one = requests.get(f"{url}/{job_id}", headers=auth(service), timeout=10).json()
    assert listed == one
    assert (listed["status"], listed["collection"], listed["discovered"], listed["embedded"]) == ("SUCCEEDED", COLLECTION, 5, 5)
    assert listed["start_time"] <= listed["end_time"]
    starts = [job["start_time"] for job in jobs]
    assert starts == sorted(starts, reverse=True)  # newest first
    assert len(requests.get(url, headers=auth(service), params={"limit": 1}, timeout=30).json()["jobs"]) == 1
