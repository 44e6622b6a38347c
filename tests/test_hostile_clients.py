"""The app under a careless or hostile client, over real HTTP with the token: every case found by probing it
(issue 28) replayed. Names that lead to no file of data are refused per file without blocking a thread; bad
requests leak no file descriptor; previews and answers are bounded; a job outlives its client; answers say
what the caller needs and no more. The app stays up through all of it."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
from conftest import wait_for
from PIL import Image
from serve_app import PREVIEW_MAX_PIXELS, SIMILAR_MAX_PAIRS, auth, wait_job

from samples.sample_photos import write_many

NOT_REGULAR = {"fifo.jpg": "not a regular file: a FIFO (named pipe)", "socket.jpg": "not a regular file: a socket",
               "folder.jpg": "is a folder, not a file"}


def post_ingest(service, paths, collection, wait=True, timeout=120, **body):
    return requests.post(f"{service['url']}/ingest", headers=auth(service), params={"wait": "true"} if wait else None,
                         json={"paths": [str(p) for p in paths], "collection": collection, **body}, timeout=timeout)


def upload(service, files: dict[str, bytes], collection: str, timeout: float = 120, wait: bool = True):
    return requests.post(f"{service['url']}/ingest/upload", headers=auth(service), params={"wait": "true"} if wait else None,
                         files=[("files", (name, data)) for name, data in files.items()], data={"collection": collection},
                         timeout=timeout)


@pytest.fixture(scope="module")
def not_regular(service):
    """Under an allowed root: a FIFO, a socket and a folder, each behind a photo's name."""
    folder = service["allowed"] / "hostile" / "not-regular"
    folder.mkdir(parents=True)
    os.mkfifo(folder / "fifo.jpg")
    listening = socket.socket(socket.AF_UNIX)
    listening.bind(str(folder / "socket.jpg"))
    (folder / "elsewhere").mkdir()
    os.symlink(folder / "elsewhere", folder / "folder.jpg")
    yield folder
    listening.close()


def test_names_that_are_no_file_are_refused_at_once_and_the_app_stays_responsive(service, not_regular):
    """Many requests at once naming a FIFO (more than the inline replicas' threads): each is answered with the
    file's reason, none blocks, and an upload right after is stored at once."""
    fifo = not_regular / "fifo.jpg"
    started = time.monotonic()
    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda _: post_ingest(service, [fifo], "hostile-fifo"), range(24)))
    assert [a.status_code for a in answers] == [200] * 24
    for answer in answers:
        done = answer.json()
        assert (done["status"], done["failed"], done["errors"][0]["reason"]) == ("SUCCEEDED", 1, NOT_REGULAR["fifo.jpg"])
    assert time.monotonic() - started < 90
    for name in ("fifo.jpg", "socket.jpg"):  # named
        done = post_ingest(service, [not_regular / name], "hostile-fifo").json()
        assert (done["failed"], done["errors"][0]["reason"]) == (1, NOT_REGULAR[name]), done
    walked = post_ingest(service, [not_regular], "hostile-fifo").json()  # a folder's walk lists the link, not the FIFO
    assert [(e["path"], e["reason"]) for e in walked["errors"]] == [(str(not_regular / "folder.jpg"), NOT_REGULAR["folder.jpg"])]
    photo = (service["allowed"] / "photos" / "coffee.png").read_bytes()
    stored = upload(service, {"coffee.png": photo}, "hostile-fifo", timeout=30)
    assert stored.status_code == 200 and stored.json()["embedded"] + stored.json()["skipped_existing"] == 1


def test_a_fifo_in_a_ray_job_fails_alone(service, not_regular):
    """`"prune": true` runs a Ray job: the FIFO named is refused there as in the app, and the job ends."""
    response = post_ingest(service, [not_regular / "fifo.jpg"], "hostile-fifo-job", wait=False, prune=True)
    assert response.status_code == 202, response.text
    done = wait_job(service, response.json()["job_id"], timeout=240)
    assert (done["status"], done["failed"]) == ("SUCCEEDED", 1), done
    assert done["errors"][0]["reason"] == NOT_REGULAR["fifo.jpg"]
    assert done["route"]["kind"] == "ray_job"


def ingress_pid(ray_head) -> int:
    from ray.util.state import list_actors

    actors = list_actors(address=ray_head["dashboard"], filters=[("state", "=", "ALIVE")], detail=True, limit=1000)
    return next(a.pid for a in actors if "Ingress" in (a.class_name or ""))


def test_bad_thumbnail_requests_leak_no_file_descriptor(service, ray_head):
    """A recorded file replaced by a symlink to a folder, asked for hundreds of times: each answer is a 410,
    and the Ingress replica holds no more descriptors after than before."""
    import psutil

    folder = service["allowed"] / "hostile" / "fds"
    folder.mkdir(parents=True)
    photo = folder / "coffee.png"
    shutil.copy(service["allowed"] / "photos" / "coffee.png", photo)
    done = post_ingest(service, [photo], "hostile-fds").json()
    assert done["embedded"] + done["skipped_existing"] == 1
    record_id = hashlib.sha256(photo.read_bytes()).hexdigest()
    photo.unlink()
    os.symlink(folder, photo)
    ingress = psutil.Process(ingress_pid(ray_head))
    url = f"{service['url']}/thumbnails/hostile-fds/{record_id}"
    requests.get(url, headers=auth(service), timeout=30)
    before = ingress.num_fds()
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda _: requests.get(url, headers=auth(service), timeout=30).status_code, range(300)))
    assert codes == [410] * 300
    assert ingress.num_fds() <= before + 5  # a few for connections in flight, not one per request


@pytest.fixture(scope="module")
def large(service):
    """A one-colour PNG of a few kilobytes that decodes to more pixels than the app's previews take, stored."""
    folder = service["allowed"] / "hostile" / "large"
    folder.mkdir(parents=True)
    side = int((PREVIEW_MAX_PIXELS * 2) ** 0.5)
    Image.new("L", (side, side), 200).save(folder / "large.png")
    done = post_ingest(service, [folder], "hostile-large").json()
    assert done["embedded"] + done["skipped_existing"] == 1, done
    return {"path": folder / "large.png", "id": hashlib.sha256((folder / "large.png").read_bytes()).hexdigest()}


def test_previews_refuse_a_picture_too_large_to_decode_for_them(service, large):
    thumbnail = requests.get(f"{service['url']}/thumbnails/hostile-large/{large['id']}", headers=auth(service), timeout=30)
    assert thumbnail.status_code == 422 and "PREVIEW_MAX_PIXELS" in thumbnail.json()["detail"]
    with open(large["path"], "rb") as f:
        search = requests.post(f"{service['url']}/search", headers=auth(service), timeout=30,
                               files={"file": ("large.png", f)}, data={"collection": "hostile-large"})
    assert search.status_code == 422 and "PREVIEW_MAX_PIXELS" in search.json()["detail"]
    with open(large["path"], "rb") as f:
        caption = requests.post(f"{service['url']}/caption", headers=auth(service), timeout=30, files={"file": ("large.png", f)})
    assert caption.status_code == 422 and "PREVIEW_MAX_PIXELS" in caption.json()["detail"]


def test_work_and_answers_are_bounded(service):
    search = requests.post(f"{service['url']}/search", headers=auth(service), timeout=30,
                           json={"collection": "hostile-large", "text": "a cat " * 400})
    assert search.status_code == 422 and search.json()["detail"][0]["loc"] == ["body", "text"]
    too_low = requests.get(f"{service['url']}/collections/hostile-large/similar", params={"threshold": "-1"},
                           headers=auth(service), timeout=30)
    assert too_low.status_code == 422 and too_low.json()["detail"][0]["loc"] == ["query", "threshold"]
    many = [f"/photos/{i}.jpg" for i in range(1001)]
    refused = post_ingest(service, many, "hostile-paths")
    assert refused.status_code == 422 and "at most 1000 distinct paths" in refused.json()["detail"][0]["msg"]

    folder = service["allowed"] / "hostile" / "similar"
    write_many(str(folder), 10)
    assert post_ingest(service, [folder], "hostile-similar").json()["embedded"] == 10
    found = requests.get(f"{service['url']}/collections/hostile-similar/similar", params={"threshold": "0.5"},
                         headers=auth(service), timeout=60).json()
    pairs = sum(len(group["scores"]) for group in found["near"])
    assert found["truncated"] is True and pairs == SIMILAR_MAX_PAIRS  # 45 pairs are that close: the strongest kept
    scores = [s["score"] for group in found["near"] for s in group["scores"]]
    assert min(scores) >= 0.5


def test_a_ray_jobs_paths_do_not_go_through_its_command_line(service):
    """600 folders named, each 8 times more (taken once), as a Ray job: more than a command line holds."""
    root = service["allowed"] / "hostile" / "folders"
    for i in range(600):
        (root / f"{i:03d}-{'x' * 240}").mkdir(parents=True)
    write_many(str(root / f"007-{'x' * 240}"), 2)
    paths = [str(folder) for folder in sorted(root.iterdir())]
    assert sum(len(path) + 1 for path in paths) > 131072  # more than one argument of a command line may hold
    response = post_ingest(service, paths * 9, "hostile-folders", wait=False, prune=True)
    assert response.status_code == 202, response.text
    done = wait_job(service, response.json()["job_id"], timeout=300)
    assert (done["status"], done["embedded"]) == ("SUCCEEDED", 2), done


def test_a_job_outlives_its_client_and_a_failed_upload_leaves_no_file(service):
    """A client that gives up waiting (its read times out while the job runs) leaves the job running to its end."""
    photos = service["allowed"] / "hostile" / "gone"
    write_many(str(photos), 16)
    with pytest.raises(requests.exceptions.ReadTimeout):
        post_ingest(service, [photos], "hostile-gone", timeout=(10, 0.05))

    def finished():
        jobs = requests.get(f"{service['url']}/ingest", headers=auth(service), timeout=30).json()["jobs"]
        mine = [job for job in jobs if job["collection"] == "hostile-gone"]
        return mine[0] if mine and mine[0]["status"] in ("SUCCEEDED", "FAILED", "STOPPED") else None

    done = wait_for(finished, timeout=180, interval=1, what="the job of the client that left")
    assert (done["status"], done["embedded"]) == ("SUCCEEDED", 16), done

    zeros = np.zeros(1 << 20, np.uint8).tobytes()
    failed = upload(service, {"x.jpg": zeros}, "hostile-gone").json()
    assert (failed["failed"], failed["errors"][0]["reason"]) == (1, "not a recognised image format"), failed
    kept = service["work"] / "uploads" / f"{hashlib.sha256(zeros).hexdigest()}.jpg"
    assert not kept.exists()


def test_answers_say_what_the_caller_needs_and_no_more(service, large):
    missing = requests.post(f"{service['url']}/search", headers=auth(service), json={"collection": "no-such-one", "text": "x"},
                            timeout=30)
    assert missing.status_code == 404 and missing.json()["detail"] == "no collection 'no-such-one'"
    listing = requests.get(f"{service['url']}/collections/no-such-one/photos", headers=auth(service), timeout=30)
    assert listing.status_code == 404 and str(service["work"]) not in listing.text and "hostile" not in listing.text
    long_name = "a" * 10_000
    thumb = requests.get(f"{service['url']}/thumbnails/{long_name}/{large['id']}", headers=auth(service), timeout=30)
    assert thumb.status_code == 404 and len(thumb.text) < 200
    for bad in ("a..b", "1.2.3.4"):
        answer = post_ingest(service, [service["allowed"] / "photos"], bad)
        assert answer.status_code == 422 and answer.json()["detail"][0]["loc"] == ["body", "collection"], answer.text
    # A recorded file replaced by a link to a larger one: 410, and nothing of what lies there now.
    folder = service["allowed"] / "hostile" / "replaced"
    folder.mkdir(parents=True)
    shutil.copy(service["allowed"] / "photos" / "coffee.png", folder / "photo.png")
    assert post_ingest(service, [folder], "hostile-replaced").json()["status"] == "SUCCEEDED"
    record_id = hashlib.sha256((folder / "photo.png").read_bytes()).hexdigest()
    (folder / "photo.png").unlink()
    os.symlink(large["path"], folder / "photo.png")
    gone = requests.get(f"{service['url']}/thumbnails/hostile-replaced/{record_id}", headers=auth(service), timeout=30)
    assert gone.status_code == 410 and str(os.path.getsize(large["path"])) not in gone.text
    # Job ids are checked against their form.
    real = post_ingest(service, [folder], "hostile-replaced").json()["job_id"]
    for bad in (f"{real}%3F", "ingest-nope", "x" * 300):
        assert requests.get(f"{service['url']}/ingest/{bad}", headers=auth(service), timeout=30).status_code == 404
        assert requests.delete(f"{service['url']}/ingest/{bad}", headers=auth(service), timeout=30).status_code == 404


def test_the_app_is_up_after_it_all(service):
    assert requests.get(f"{service['url']}/healthz", timeout=10).status_code == 200
    found = requests.post(f"{service['url']}/search", headers=auth(service), json={"collection": "hostile-similar", "text": "x"},
                          timeout=30)
    assert found.status_code == 200 and len(found.json()["results"]) == 5
