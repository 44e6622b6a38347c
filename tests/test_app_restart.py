"""The Serve app started again (deleted, then `serve run` of the same config) while an ingestion runs in it:
the jobs it ran are still listed after, a finished one as it ended, and the one the restart cut off says so, its
records stored before the cut kept."""

from __future__ import annotations

import requests
from conftest import wait_for
from serve_app import _get, auth, serve_cli, wait_job

from samples.sample_photos import write_many


def test_jobs_are_listed_across_a_restart_of_the_app(service, ray_head, tmp_path):
    url, headers = service["url"], auth(service)
    (first,) = write_many(str(tmp_path / "first"), 1, seed=81)
    with open(first, "rb") as data:
        done = requests.post(f"{url}/ingest/upload", headers=headers, params={"wait": "true"}, timeout=300,
                             files={"files": ("first.jpg", data, "image/jpeg")}, data={"collection": "restarted"})
    assert done.status_code == 200 and done.json()["status"] == "SUCCEEDED", done.text
    finished = done.json()["job_id"]

    # Sixteen photos with every enrichment asked for: their records are stored at once, then each enrichment's
    # deployment starts from zero, one after the other: the job runs on for many seconds.
    photos = write_many(str(tmp_path / "many"), 16, size=256, seed=82)
    files = [("files", (f"many-{number}.jpg", open(path, "rb").read(), "image/jpeg")) for number, path in enumerate(photos)]
    started = requests.post(f"{url}/ingest/upload", headers=headers, timeout=300, files=files,
                            data={"collection": "restarted", "caption": "true", "read_text": "true", "find_faces": "true"})
    assert started.status_code == 202, started.text
    running = started.json()["job_id"]

    def stored() -> dict | None:
        status = requests.get(f"{url}/ingest/{running}", headers=headers, timeout=10).json()
        return status if status["embedded"] == 16 else None

    assert wait_for(stored, timeout=120, what="the 16 records stored")["status"] == "RUNNING"
    listed = {job["job_id"]: job["status"] for job in requests.get(f"{url}/ingest", headers=headers, timeout=10).json()["jobs"]}
    assert (listed[finished], listed[running]) == ("SUCCEEDED", "RUNNING")

    from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

    serve = ServeSubmissionClient(ray_head["dashboard"])
    serve.delete_applications()  # every replica of the app goes, its ingress with the runs it held
    wait_for(lambda: not serve.get_serve_details().get("applications"), timeout=120, what="the app deleted")
    port = url.rsplit(":", 1)[1]  # Serve itself went with its last app: started again as the session started it
    restarted = serve_cli("start", "--address", ray_head["address"], "--http-host", "127.0.0.1", "--http-port", port,
                          env=service["env"])
    assert restarted.returncode == 0, restarted.stderr[-2000:]
    again = serve_cli("run", str(service["work"] / "serve_config.yaml"), "--address", ray_head["address"],
                      "--non-blocking", env=service["env"])
    assert again.returncode == 0, again.stderr[-3000:]
    wait_for(lambda: _get(f"{url}/healthz") == 200, timeout=180, what="the Serve app, started again")

    jobs = {job["job_id"]: job for job in requests.get(f"{url}/ingest", headers=headers, timeout=30).json()["jobs"]}
    assert (jobs[finished]["status"], jobs[finished]["embedded"]) == ("SUCCEEDED", 1)
    cut = wait_job(service, running, timeout=60)
    assert cut["status"] == "FAILED" and "cut off by a restart of the app" in cut["message"], cut
    assert jobs[running]["status"] == "FAILED"
    kept = requests.get(f"{url}/collections/restarted", headers=headers, timeout=60).json()
    assert kept["records"] == 17  # what was stored before the cut stays
