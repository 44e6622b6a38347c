"""The warm path of the Serve app, over real HTTP: small ingestions run in the app itself (no Ray job, no
new actor) and are found by search when the response returns; larger ones stay Ray jobs; the Embedder,
shared by search and ingestion, scales as the Serve config's `deployments:` says; losing it costs one
request at most and never leaves half a record."""

from __future__ import annotations

import os
import shutil
import signal
import threading

import requests
from conftest import wait_for
from photo_cases import sha256_of
from PIL import Image, ImageOps
from serve_app import EMBED_MAX_REPLICAS, IDLE_SECONDS, INLINE_MAX_FILES, auth, wait_job

from samples.sample_photos import write_many


def post_ingest(service, paths, collection, wait=True, **body):
    return requests.post(f"{service['url']}/ingest", headers=auth(service), params={"wait": "true"} if wait else None,
                         json={"paths": [str(p) for p in paths], "collection": collection, **body}, timeout=300)


def search(service, collection, k=10, text=None, photo=None):
    if photo is None:
        return requests.post(f"{service['url']}/search", headers=auth(service), timeout=60,
                             json={"collection": collection, "text": text, "k": k})
    with open(photo, "rb") as f:
        return requests.post(f"{service['url']}/search", headers=auth(service), timeout=60,
                             files={"file": (os.path.basename(photo), f)}, data={"collection": collection, "k": str(k)})


def ray_job(ray_head, job_id):
    """The job as the Job Submission API knows it, or None when it is not a Ray job."""
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(ray_head["dashboard"]).get_job_info(job_id)
    except RuntimeError:
        return None


def records(service, collection) -> list[dict]:
    """Every record of the collection, read through the API (the embedded folder is the app's)."""
    found = search(service, collection, k=1000, text="x")
    assert found.status_code == 200, found.text
    return found.json()["results"]


def test_an_upload_is_searchable_when_the_response_returns(service, ray_head):
    photo = service["allowed"] / "photos" / "chelsea_rotated.JPG"
    with open(photo, "rb") as f:
        response = requests.post(f"{service['url']}/ingest/upload", headers=auth(service), params={"wait": "true"},
                                 files=[("files", ("cat.jpg", f))], data={"collection": "warm-upload"}, timeout=120)
    assert response.status_code == 200, response.text
    done = response.json()
    assert (done["status"], done["embedded"], done["failed"], done["files"]) == ("SUCCEEDED", 1, 0, 1)
    best = search(service, "warm-upload", k=1, photo=photo).json()["results"][0]  # at once: no polling
    assert best["id"] == sha256_of(photo) and best["score"] > 0.999
    upright = ImageOps.exif_transpose(Image.open(photo)).size
    assert (best["metadata"]["width"], best["metadata"]["height"]) == upright  # as a job stores it

    status = requests.get(f"{service['url']}/ingest/{done['job_id']}", headers=auth(service), timeout=10).json()
    assert status == {key: value for key, value in done.items() if key != "files"}
    listed = requests.get(f"{service['url']}/ingest", headers=auth(service), timeout=30).json()["jobs"]
    assert status in listed
    assert ray_job(ray_head, done["job_id"]) is None  # it ran in the app: no Ray job was started


def test_a_small_folder_runs_warm_with_each_failure_and_copy_counted(service):
    folder = service["allowed"] / "warm-folder"
    folder.mkdir()
    for name in ("astronaut.jpg", "flower.dng", "coffee.png"):
        shutil.copy(service["allowed"] / "photos" / name, folder / name)
    shutil.copy(folder / "coffee.png", folder / "coffee again.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    response = post_ingest(service, [folder], "warm-folder")
    assert response.status_code == 200, response.text
    done = response.json()
    assert (done["status"], done["discovered"], done["embedded"], done["duplicates"], done["failed"]) == ("SUCCEEDED", 5, 3, 1, 1)
    assert [e["path"] for e in done["errors"]] == [str(folder / "broken.jpg")] and done["errors"][0]["reason"]
    assert {r["id"] for r in records(service, "warm-folder")} == {sha256_of(folder / n) for n in ("astronaut.jpg", "flower.dng", "coffee.png")}

    again = post_ingest(service, [folder], "warm-folder").json()
    assert (again["embedded"], again["skipped_existing"], again["duplicates"], again["failed"]) == (0, 3, 1, 1)
    wrong = requests.post(f"{service['url']}/ingest", headers=auth(service), params={"wait": "true"}, timeout=30,
                          json={"paths": [str(folder)], "collection": "x"})
    assert wrong.status_code == 422 and "collection" in wrong.text


def test_over_the_inline_limit_an_ingestion_is_a_ray_job(service, ray_head):
    folder = service["allowed"] / "over-the-limit"
    write_many(str(folder), INLINE_MAX_FILES + 1)
    response = post_ingest(service, [folder], "over-the-limit")  # ?wait=true: a Ray job answers at once all the same
    assert response.status_code == 202, response.text
    done = wait_job(service, response.json()["job_id"])
    assert (done["status"], done["embedded"]) == ("SUCCEEDED", INLINE_MAX_FILES + 1)
    assert ray_job(ray_head, done["job_id"]).status.value == "SUCCEEDED"  # on the dashboard's Jobs page


def test_two_warm_ingestions_of_the_same_files_store_each_content_once(service):
    folder = service["allowed"] / "twice"
    write_many(str(folder), INLINE_MAX_FILES, seed=7)
    answers = []
    threads = [threading.Thread(target=lambda: answers.append(post_ingest(service, [folder], "twice"))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [a.status_code for a in answers] == [200, 200]
    for done in (a.json() for a in answers):
        assert done["status"] == "SUCCEEDED" and done["embedded"] + done["skipped_existing"] == INLINE_MAX_FILES
    stored = records(service, "twice")
    assert sorted(r["id"] for r in stored) == sorted({sha256_of(p) for p in folder.iterdir()})


def test_the_serve_configs_scaling_takes_effect(service, ray_head):
    """The `deployments:` entries of the Serve config (cluster/serve_config.yaml, made small by the test)
    replace the code's scaling; the captioner's scale-to-zero tests rely on it too."""
    from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

    deployments = ServeSubmissionClient(ray_head["dashboard"]).get_serve_details()["applications"]["default"]["deployments"]
    embedder = deployments["Embedder"]["deployment_config"]["autoscaling_config"]
    captioner = deployments["Captioner"]["deployment_config"]["autoscaling_config"]
    assert (embedder["min_replicas"], embedder["max_replicas"]) == (1, EMBED_MAX_REPLICAS)  # the code's default is 2
    assert (captioner["min_replicas"], captioner["downscale_to_zero_delay_s"]) == (0, IDLE_SECONDS)  # the code's is 300
    # Embedder-1: the second model's (CLIP_EXTRA_MODELS), at zero replicas until a collection of it is used
    assert set(deployments) == {"Ingress", "Embedder", "Embedder-1", "InlineIngest", "Captioner", "TextReader", "FaceFinder"}


def embedder_pid(ray_head) -> int | None:
    from ray.util.state import list_actors

    actors = list_actors(address=ray_head["dashboard"], filters=[("state", "=", "ALIVE")], detail=True, limit=1000)
    return next((a.pid for a in actors if "Embedder" in (a.class_name or "")), None)


def test_a_lost_embedder_costs_one_request_at_most_and_leaves_no_half_record(service, ray_head):
    folder = service["allowed"] / "embedder-lost"
    write_many(str(folder), INLINE_MAX_FILES, seed=11)
    pid = wait_for(lambda: embedder_pid(ray_head), timeout=60, what="the Embedder")
    answer = {}
    request = threading.Thread(target=lambda: answer.update(response=post_ingest(service, [folder], "embedder-lost")))
    request.start()
    os.kill(pid, signal.SIGKILL)  # while the request reads, or embeds, or just after it
    request.join()
    response = answer["response"]
    assert response.status_code in (200, 503), response.text  # retried on a new replica, or a clear refusal
    if response.status_code == 503:
        assert "Embedder was lost" in response.json()["detail"]

    stored = records(service, "embedder-lost")  # search works again: a new replica answers
    assert {r["id"] for r in stored} <= {sha256_of(p) for p in folder.iterdir()}
    for result in stored:  # every record whole: its file's path and metadata, a unit vector
        assert result["path"].startswith(str(folder)) and result["metadata"]["file_size"] > 0
    again = post_ingest(service, [folder], "embedder-lost").json()
    assert again["status"] == "SUCCEEDED" and again["embedded"] + again["skipped_existing"] == INLINE_MAX_FILES
    assert len(records(service, "embedder-lost")) == INLINE_MAX_FILES


def test_stopping_a_warm_job(service):
    folder = service["allowed"] / "warm-stop"
    write_many(str(folder), INLINE_MAX_FILES, seed=13)
    job_id = post_ingest(service, [folder], "warm-stop", wait=False).json()["job_id"]
    stopped = requests.delete(f"{service['url']}/ingest/{job_id}", headers=auth(service), timeout=30).json()

    def ended():
        status = requests.get(f"{service['url']}/ingest/{job_id}", headers=auth(service), timeout=10).json()
        return status if status["status"] != "RUNNING" else None

    final = wait_for(ended, timeout=120, what="the job's end")
    # Asked in time, the job stops before its next chunk of files; too late, it has already succeeded.
    assert final["status"] == ("STOPPED" if stopped["stopped"] else "SUCCEEDED"), (stopped, final)
    written = len(records(service, "warm-stop")) if final["embedded"] else 0
    assert written == final["embedded"]  # the counts say what was written, whole
    assert requests.delete(f"{service['url']}/ingest/{job_id}", headers=auth(service), timeout=30).json()["stopped"] is False


class Opened:
    """The files opened under a folder while inside, as the kernel tells (inotify, through watchdog): how a
    test sees that a file was not read."""

    def __init__(self, folder):
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer

        self.paths: list[str] = []
        seen = self.paths

        class Handler(FileSystemEventHandler):
            def on_opened(self, event):
                seen.append(os.fsdecode(event.src_path))

        self.observer = Observer()
        self.observer.schedule(Handler(), str(folder), recursive=True)

    def __enter__(self):
        self.observer.start()
        return self

    def __exit__(self, *exc):
        import time

        time.sleep(0.5)  # the last events reach the observer
        self.observer.stop()
        self.observer.join(timeout=10)


def test_an_inline_ingestion_remembers_a_broken_file_and_reports_it_unread_next_time(service):
    """The warm route runs the one sequence after the files as every route does: a corrupt file is remembered,
    and the next ingestion of the folder reports it failed, with its reason, without opening it."""
    folder = service["allowed"] / "remembered"
    folder.mkdir()
    shutil.copy(service["allowed"] / "photos" / "coffee.png", folder / "coffee.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not the rest of a JPEG")
    with Opened(folder) as first_opens:
        first = post_ingest(service, [folder], "remembered")
    assert first.status_code == 200, first.text
    done = first.json()
    assert (done["status"], done["embedded"], done["failed"]) == ("SUCCEEDED", 1, 1), done
    assert done["route"]["kind"] == "warm" and "in the app" in done["route"]["reason"]
    assert str(folder / "broken.jpg") in first_opens.paths  # the detector sees a read
    with Opened(folder) as second_opens:
        again = post_ingest(service, [folder], "remembered").json()
    assert (again["embedded"], again["skipped_existing"], again["failed"]) == (0, 1, 1), again
    assert again["errors"] == done["errors"] and again["errors"][0]["path"] == str(folder / "broken.jpg")
    assert second_opens.paths == []  # neither the stored photo nor the broken file was opened
