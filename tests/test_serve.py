"""The Serve application over real HTTP on loopback: auth, ingestion as Ray jobs with live status,
search, captions, and a captioner that scales to zero."""

from __future__ import annotations

import io
import os
import signal
from pathlib import Path

import pytest
import requests
from conftest import wait_for
from photo_cases import sha256_of
from serve_app import IDLE_SECONDS, MAX_UPLOAD, auth, running_replicas, wait_job

from benchmarks.http_load import hammer
from samples.sample_photos import real_photos, write_heif


def caption_replicas(service, ray_head) -> int:
    return running_replicas(service, ray_head, "Captioner")


def test_health_needs_no_token(service):
    assert requests.get(f"{service['url']}/healthz", timeout=5).json() == {"status": "ok"}


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic abc"}])
def test_every_route_needs_the_token(service, headers):
    for method, route in [("get", "/collections"), ("post", "/ingest"), ("get", "/ingest/x"), ("post", "/search"),
                          ("post", "/caption"), ("post", "/text"), ("delete", "/ingest/x"), ("post", "/ingest/upload")]:
        response = requests.request(method, f"{service['url']}{route}", headers=headers, json={}, timeout=10)
        assert response.status_code == 401, route
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert service["token"] not in response.text


def test_paths_outside_the_allowed_roots_are_forbidden(service):
    url = f"{service['url']}/ingest"
    outside = service["work"] / "outside"
    for path in [str(outside), str(service["allowed"] / "escape" / "secret.jpg"), str(service["allowed"] / ".." / "outside"), "/etc"]:
        response = requests.post(url, headers=auth(service), json={"paths": [path], "collection": "photos"}, timeout=10)
        assert response.status_code == 403, (path, response.text)
        assert path in response.json()["detail"]
    missing = requests.post(url, headers=auth(service), json={"paths": [str(service["allowed"] / "nope.jpg")], "collection": "photos"}, timeout=10)
    assert missing.status_code == 404
    bad = requests.post(url, headers=auth(service), json={"paths": "not a list", "collection": "photos"}, timeout=10)
    assert bad.status_code == 422
    assert "paths" in str(bad.json()["detail"])
    named = requests.post(url, headers=auth(service), json={"paths": [str(service["allowed"])], "collection": "no"}, timeout=10)
    assert named.status_code == 422
    assert "collection" in str(named.json()["detail"])


def test_ingest_job_with_captions_then_search(service, ray_head):
    # The app is shared by the session: an earlier module's captions may still hold a replica, which
    # the idle timeout must take back to zero (no BLIP in memory while nothing asks for captions).
    wait_for(lambda: caption_replicas(service, ray_head) == 0, timeout=IDLE_SECONDS + 60, what="the captioner at zero")
    photos = service["allowed"] / "photos"
    response = requests.post(f"{service['url']}/ingest", headers=auth(service),
                             json={"paths": [str(photos)], "collection": "photos", "caption": True}, timeout=30)
    assert response.status_code == 202
    job_id = response.json()["job_id"]
    status = wait_job(service, job_id)
    assert status["status"] == "SUCCEEDED", status
    assert (status["discovered"], status["embedded"], status["failed"], status["captioned"]) == (6, 6, 0, 6)
    assert status["errors"] == []
    assert caption_replicas(service, ray_head) == 1  # the job's captions started one

    listed = requests.get(f"{service['url']}/collections", headers=auth(service), timeout=10).json()["collections"]
    assert {"name": "photos", "count": 6, "model": "tiny-clip"}.items() <= next(c for c in listed if c["name"] == "photos").items()

    query = photos / "rocket.webp"
    with open(query, "rb") as f:
        found = requests.post(f"{service['url']}/search", headers=auth(service),
                              files={"file": ("q.webp", f)}, data={"collection": "photos", "k": "3"}, timeout=60)
    assert found.status_code == 200, found.text
    best = found.json()["results"][0]
    assert best["path"] == str(query) and best["id"] == sha256_of(query)
    assert isinstance(best["caption"], str) and best["caption"]

    by_text = requests.post(f"{service['url']}/search", headers=auth(service),
                            json={"collection": "photos", "text": "a rocket", "k": 2}, timeout=60).json()["results"]
    assert len(by_text) == 2 and all("caption" in r and "metadata" in r for r in by_text)

    wait_for(lambda: caption_replicas(service, ray_head) == 0, timeout=IDLE_SECONDS + 60, what="the captioner back at zero")


def test_caption_route_starts_the_captioner(service, ray_head):
    with open(service["allowed"] / "photos" / "coffee.png", "rb") as f:
        response = requests.post(f"{service['url']}/caption", headers=auth(service), files={"file": ("c.png", f)}, timeout=120)
    assert response.status_code == 200, response.text
    assert isinstance(response.json()["caption"], str)
    assert caption_replicas(service, ray_head) == 1
    phone = io.BytesIO()  # a phone's HEIC is captioned as a JPEG is
    write_heif(phone, real_photos()["chelsea"], orientation=6)
    response = requests.post(f"{service['url']}/caption", headers=auth(service), files={"file": ("IMG.HEIC", phone.getvalue())},
                             timeout=120)
    assert response.status_code == 200, response.text
    assert isinstance(response.json()["caption"], str)


def test_upload_ingestion(service):
    photos = service["allowed"] / "photos"
    files = [("files", ("../../evil name.png", (photos / "coffee.png").read_bytes())),
             ("files", ("x.dng", (photos / "flower.dng").read_bytes()))]
    response = requests.post(f"{service['url']}/ingest/upload", headers=auth(service), files=files,
                             data={"collection": "uploaded"}, timeout=60)
    assert response.status_code == 202, response.text
    status = wait_job(service, response.json()["job_id"])
    assert status["status"] == "SUCCEEDED" and status["embedded"] == 2
    stored = set(os.listdir(service["work"] / "uploads"))  # named by their content, whatever the client called them
    assert {f"{sha256_of(photos / 'coffee.png')}.png", f"{sha256_of(photos / 'flower.dng')}.dng"} <= stored
    assert not any("evil" in name for name in stored)


@pytest.mark.parametrize("size", [MAX_UPLOAD + 1, MAX_UPLOAD + 3 * 1024**2])  # counted while read; declared length
def test_oversized_upload_is_refused(service, size):
    files = [("files", ("big.png", b"\0" * size))]
    response = requests.post(f"{service['url']}/ingest/upload", headers=auth(service), files=files,
                             data={"collection": "uploaded"}, timeout=60)
    assert response.status_code == 413
    assert not os.listdir(service["work"] / "uploads") or all(not n.startswith("tmp") for n in os.listdir(service["work"] / "uploads"))


def test_files_linked_from_outside_the_roots_are_not_read(service):
    mixed = service["allowed"] / "mixed"
    response = requests.post(f"{service['url']}/ingest", headers=auth(service),
                             json={"paths": [str(mixed)], "collection": "mixed"}, timeout=30)
    status = wait_job(service, response.json()["job_id"])
    assert (status["status"], status["embedded"], status["failed"]) == ("SUCCEEDED", 1, 1)
    assert status["errors"] == [{"path": str(mixed / "leak.jpg"), "reason": "resolves outside the allowed folders"}]


def test_no_body_is_read_before_the_token(service):
    # No token and no Content-Length: refused for the token, before anything is parsed or spooled.
    response = requests.post(f"{service['url']}/ingest/upload", data=iter([b"x" * 1024] * 4), timeout=30,
                             headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert response.status_code == 401
    chunked = requests.post(f"{service['url']}/ingest/upload", data=iter([b"x" * 1024]), timeout=30,
                            headers={**auth(service), "Content-Type": "multipart/form-data; boundary=b"})
    assert chunked.status_code == 411


def test_status_and_search_under_load_while_a_job_runs(service):
    response = requests.post(f"{service['url']}/ingest", headers=auth(service),
                             json={"paths": [str(service["allowed"] / "many")], "collection": "loaded"}, timeout=30)
    job_id = response.json()["job_id"]
    wait_for(lambda: requests.get(f"{service['url']}/ingest/{job_id}", headers=auth(service), timeout=10).json()["status"] == "RUNNING",
             timeout=60, interval=0.2, what="the job running")
    # The collection exists once the job has opened it; search it while the job writes.
    wait_for(lambda: any(c["name"] == "loaded" for c in requests.get(f"{service['url']}/collections", headers=auth(service), timeout=10).json()["collections"]),
             timeout=60, interval=0.2, what="the collection")
    report = hammer(service["url"], service["token"], job_id, "loaded", total=200, threads=8, time_limit_s=120)
    print("load:", report)
    assert report["requests"] == 200
    assert report["codes"] == {"200": 200}
    assert wait_job(service, job_id)["status"] == "SUCCEEDED"


def captioner_pid(ray_head) -> int | None:
    from ray.util.state import list_actors

    actors = list_actors(address=ray_head["dashboard"], filters=[("state", "=", "ALIVE")], detail=True, limit=1000)
    return next((a.pid for a in actors if "Captioner" in (a.class_name or "")), None)


def test_captioner_killed_while_captioning(service, ray_head):
    wait_for(lambda: caption_replicas(service, ray_head) == 0, timeout=IDLE_SECONDS + 60, what="no captioner")
    body = {"paths": [str(service["allowed"] / "many")], "collection": "captions-cut", "caption": True}
    job_id = requests.post(f"{service['url']}/ingest", headers=auth(service), json=body, timeout=30).json()["job_id"]
    pid = wait_for(lambda: captioner_pid(ray_head), timeout=240, interval=0.2, what="a captioner replica")
    os.kill(pid, signal.SIGKILL)
    status = wait_job(service, job_id)
    assert status["status"] == "SUCCEEDED" and status["embedded"] == 200  # the embeddings are intact
    missing = [e for e in status["errors"] if e["reason"].startswith("caption")]
    assert status["captioned"] + len(missing) == 200
    # Running again embeds nothing and fills in every missing caption.
    again = wait_job(service, requests.post(f"{service['url']}/ingest", headers=auth(service), json=body, timeout=30).json()["job_id"])
    assert (again["status"], again["embedded"], again["skipped_existing"]) == ("SUCCEEDED", 0, 200)
    assert again["captioned"] == len(missing)
    found = requests.post(f"{service['url']}/search", headers=auth(service),
                          json={"collection": "captions-cut", "text": "x", "k": 200}, timeout=60).json()["results"]
    assert len(found) == 200 and all(r.get("caption") for r in found)


def test_stopping_a_job(service):
    response = requests.post(f"{service['url']}/ingest", headers=auth(service),
                             json={"paths": [str(service["allowed"] / "many")], "collection": "stopped"}, timeout=30)
    job_id = response.json()["job_id"]
    stopped = requests.delete(f"{service['url']}/ingest/{job_id}", headers=auth(service), timeout=30)
    assert stopped.status_code == 200 and stopped.json() == {"job_id": job_id, "stopped": True}
    assert wait_job(service, job_id)["status"] == "STOPPED"


def test_the_token_is_in_no_log(service, ray_head):
    leaks = []
    for folder, _, files in os.walk(ray_head["temp_dir"]):
        for name in files:
            try:
                if service["token"].encode() in Path(folder, name).read_bytes():
                    leaks.append(os.path.join(folder, name))
            except OSError:
                continue
    assert leaks == []


def test_unknown_job_and_other_model(service):
    assert requests.get(f"{service['url']}/ingest/nope", headers=auth(service), timeout=10).status_code == 404
    missing = requests.post(f"{service['url']}/search", headers=auth(service), json={"collection": "nothing-here", "text": "x"}, timeout=10)
    assert missing.status_code == 404


def test_a_watch_over_http(service):
    """POST /watches starts a Ray job that ingests the folder, then follows it with the app's Embedder:
    a photo copied in (under a name that is not UTF-8) is counted, stored and has its thumbnail; a deleted
    one is removed; DELETE /ingest/{job_id} stops it, with its final counts."""
    url, headers = service["url"], auth(service)
    folder = service["allowed"] / "watched"
    folder.mkdir()
    photos = service["allowed"] / "photos"
    (folder / "coffee.png").write_bytes((photos / "coffee.png").read_bytes())
    not_a_folder = requests.post(f"{url}/watches", headers=headers, timeout=10,
                                 json={"paths": [str(folder / "coffee.png")], "collection": "watched"})
    assert not_a_folder.status_code == 422 and "not a folder" in not_a_folder.text
    outside = requests.post(f"{url}/watches", headers=headers, json={"paths": ["/etc"], "collection": "watched"}, timeout=10)
    assert outside.status_code == 403
    started = requests.post(f"{url}/watches", headers=headers, json={"paths": [str(folder)], "collection": "watched"}, timeout=30)
    assert started.status_code == 202
    job_id = started.json()["job_id"]

    def status():
        return requests.get(f"{url}/ingest/{job_id}", headers=headers, timeout=10).json()

    try:
        wait_for(lambda: status()["embedded"] == 1, timeout=300, what="the watch's first ingestion")
        assert status()["status"] == "RUNNING" and status()["watch"] is True
        arrived = os.fsencode(folder) + b"/caf\xe9.jpg"  # Latin-1, as from an old archive
        staging = service["work"] / "staging.jpg"
        staging.write_bytes((photos / "astronaut.jpg").read_bytes())
        os.replace(staging, arrived)
        wait_for(lambda: status()["embedded"] == 2, timeout=60, what="the photo copied in")
        record_id = sha256_of(Path(os.fsdecode(arrived)))
        thumbnail = requests.get(f"{url}/thumbnails/watched/{record_id}", headers=headers, timeout=30)
        assert thumbnail.status_code == 200 and thumbnail.headers["Content-Type"] == "image/jpeg"
        (folder / "coffee.png").unlink()
        wait_for(lambda: status()["removed"] == 1, timeout=60, what="the deleted photo removed")
        collections = requests.get(f"{url}/collections", headers=headers, timeout=10).json()["collections"]
        assert {c["name"]: c["count"] for c in collections}["watched"] == 1
        assert "watched--failed-files" not in {c["name"] for c in collections}
    finally:
        stopped = requests.delete(f"{url}/ingest/{job_id}", headers=headers, timeout=30)
    assert stopped.json() == {"job_id": job_id, "stopped": True}
    final = wait_job(service, job_id, timeout=60)
    assert final["status"] == "STOPPED"
    assert (final["embedded"], final["removed"], final["failed"]) == (2, 1, 0)


def test_prune_over_http(service):
    """`"prune": true` runs `ingest --prune` as a Ray job: the record of a photo deleted since goes."""
    url, headers = service["url"], auth(service)
    folder = service["allowed"] / "prunable"
    folder.mkdir()
    for name in ("coffee.png", "rocket.webp"):
        (folder / name).write_bytes((service["allowed"] / "photos" / name).read_bytes())
    first = requests.post(f"{url}/ingest?wait=true", headers=headers, json={"paths": [str(folder)], "collection": "prunable"},
                          timeout=300)
    assert first.status_code == 200 and first.json()["embedded"] == 2
    (folder / "rocket.webp").unlink()
    pruned = requests.post(f"{url}/ingest", headers=headers, timeout=30,
                           json={"paths": [str(folder)], "collection": "prunable", "prune": True})
    assert pruned.status_code == 202
    final = wait_job(service, pruned.json()["job_id"])
    assert (final["status"], final["removed"], final["skipped_existing"]) == ("SUCCEEDED", 1, 1)
    assert final["watch"] is False
