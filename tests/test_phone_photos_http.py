"""Phone photos (HEIC and AVIF) over real HTTP on the session's Serve app: a folder ingested warm, an
upload, search by a HEIC photo, and thumbnails upright; each file with the metadata a JPEG gives."""

from __future__ import annotations

import io

import numpy as np
import pytest
import requests
from photo_cases import sha256_of
from PIL import Image, ImageOps
from serve_app import auth

from samples.sample_photos import real_photos, stored_for_orientation, write_heif

COLLECTION = "phone-photos"
GPS = (-22.9519, -43.2105)


@pytest.fixture(scope="module")
def phone(service):
    """A folder of phone photos inside the allowed roots, ingested by the app itself (`wait`: warm)."""
    photos = real_photos()
    folder = service["allowed"] / "phone"
    folder.mkdir()
    write_heif(str(folder / "IMG_0001.HEIC"), photos["chelsea"], orientation=6, gps=GPS, thumbnail=160)
    write_heif(str(folder / "coffee.avif"), photos["coffee"], orientation=8, fmt="AVIF")
    response = requests.post(f"{service['url']}/ingest", headers=auth(service), params={"wait": "true"}, timeout=300,
                             json={"paths": [str(folder)], "collection": COLLECTION})
    assert response.status_code == 200, response.text
    done = response.json()
    assert (done["status"], done["embedded"], done["failed"]) == ("SUCCEEDED", 2, 0), done
    return {"folder": folder, "photos": photos}


def search_by_photo(service, name: str, data: bytes, collection: str = COLLECTION) -> list[dict]:
    response = requests.post(f"{service['url']}/search", headers=auth(service), timeout=60,
                             files={"file": (name, data)}, data={"collection": collection, "k": "2"})
    assert response.status_code == 200, response.text
    return response.json()["results"]


@pytest.mark.parametrize("name, fmt, size", [("IMG_0001.HEIC", "heic", (451, 300)), ("coffee.avif", "avif", (600, 400))])
def test_a_phone_photo_is_found_by_itself_with_its_metadata(service, phone, name, fmt, size):
    path = phone["folder"] / name
    best = search_by_photo(service, name, path.read_bytes())[0]
    assert best["id"] == sha256_of(path) and best["score"] > 0.999
    metadata = best["metadata"]
    assert (metadata["format"], metadata["is_raw"], metadata["camera_make"]) == (fmt, False, "Sampleco")
    assert (metadata["width"], metadata["height"]) == size  # upright
    if fmt == "heic":
        assert (metadata["gps_lat"], metadata["gps_lon"]) == pytest.approx(GPS, abs=1e-4)


def test_an_uploaded_heic_is_searchable_when_the_response_returns(service, phone):
    burst = io.BytesIO()
    first, primary = Image.fromarray(phone["photos"]["astronaut"]), Image.fromarray(phone["photos"]["flower"])
    first.save(burst, "HEIF", save_all=True, append_images=[primary], primary_index=1, quality=90)
    response = requests.post(f"{service['url']}/ingest/upload", headers=auth(service), params={"wait": "true"}, timeout=120,
                             files=[("files", ("IMG_0002.heic", burst.getvalue()))], data={"collection": COLLECTION})
    assert response.status_code == 200, response.text
    assert (response.json()["embedded"], response.json()["failed"]) == (1, 0)
    found = search_by_photo(service, "query.heic", burst.getvalue())[0]
    assert found["score"] > 0.999 and found["metadata"]["format"] == "heic"
    assert (found["metadata"]["width"], found["metadata"]["height"]) == primary.size  # the primary picture


def test_a_jpeg_uploaded_as_heic_gets_a_reason(service, phone):
    jpeg = io.BytesIO()
    Image.fromarray(phone["photos"]["rocket"]).save(jpeg, "JPEG")
    response = requests.post(f"{service['url']}/ingest/upload", headers=auth(service), params={"wait": "true"}, timeout=120,
                             files=[("files", ("IMG_0003.heic", jpeg.getvalue()))], data={"collection": COLLECTION})
    assert response.status_code == 200, response.text
    assert (response.json()["embedded"], response.json()["failed"]) == (0, 1)
    assert "holds a JPEG picture, not the HEIF or AVIF its name says" in response.json()["errors"][0]["reason"]


@pytest.mark.parametrize("name, orientation, subject", [("IMG_0001.HEIC", 6, "chelsea"), ("coffee.avif", 8, "coffee")])
def test_thumbnails_of_phone_photos_are_upright(service, phone, name, orientation, subject):
    response = requests.get(f"{service['url']}/thumbnails/{COLLECTION}/{sha256_of(phone['folder'] / name)}",
                            headers=auth(service), params={"size": 128}, timeout=60)
    assert response.status_code == 200, response.text
    shown = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"), dtype=np.float32)
    upright = phone["photos"][subject]
    sideways = stored_for_orientation(upright, orientation)
    fit = lambda pixels: np.asarray(ImageOps.fit(Image.fromarray(pixels), (128, 128)), dtype=np.float32)  # noqa: E731
    assert np.abs(shown - fit(upright)).mean() < 12
    assert np.abs(shown - fit(sideways)).mean() > 2 * np.abs(shown - fit(upright)).mean()
