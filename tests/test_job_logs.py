"""A job's live log over HTTP (`GET /ingest/{job_id}/logs?offset=`): an app run's lines (started, its counts
chunk by chunk, each failed file with its reason, its end), read on from where the last answer ended; and a Ray
job's own log."""

from __future__ import annotations

import requests
from serve_app import INLINE_MAX_FILES, auth, wait_job

from samples.sample_photos import write_many


def logs(service, job_id: str, offset: int = 0) -> dict:
    answer = requests.get(f"{service['url']}/ingest/{job_id}/logs", params={"offset": offset}, headers=auth(service),
                          timeout=60)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_an_app_runs_log_has_its_counts_failures_and_end(service, tmp_path):
    photos = write_many(str(tmp_path), 2, seed=91)
    files = [("files", (f"photo{i}.jpg", open(path, "rb").read(), "image/jpeg")) for i, path in enumerate(photos)]
    files.append(("files", ("broken.jpg", b"\xff\xd8 not a photo at all", "image/jpeg")))
    response = requests.post(f"{service['url']}/ingest/upload", headers=auth(service), params={"wait": "true"},
                             files=files, data={"collection": "logged"}, timeout=300)
    assert response.status_code == 200, response.text
    job_id = response.json()["job_id"]
    wait_job(service, job_id)
    first = logs(service, job_id)
    text = "\n".join(first["lines"])
    assert first["status"] == "SUCCEEDED" and first["offset"] == len(first["lines"])
    assert "started in the app: collection logged" in first["lines"][0]
    assert "embedded 2" in text and "failed: " in text and "broken" not in text  # the stored copy's name
    assert first["lines"][-1].endswith("SUCCEEDED")
    assert logs(service, job_id, first["offset"])["lines"] == []  # nothing new since
    assert logs(service, job_id, 1)["lines"] == first["lines"][1:]
    unknown = requests.get(f"{service['url']}/ingest/ingest-0000000000000000/logs", headers=auth(service), timeout=60)
    assert unknown.status_code == 404


def test_a_ray_jobs_log_is_its_own(service):
    folder = service["allowed"] / "logged-job"
    write_many(str(folder), INLINE_MAX_FILES + 1, seed=92)
    response = requests.post(f"{service['url']}/ingest", headers=auth(service), timeout=60,
                             json={"paths": [str(folder)], "collection": "logged-job"})
    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    done = wait_job(service, job_id, timeout=600)
    assert done["route"]["kind"] == "ray_job" and done["status"] == "SUCCEEDED", done
    read = logs(service, job_id)
    assert any('"collection": "logged-job"' in line for line in read["lines"])  # the summary line, last
    assert logs(service, job_id, read["offset"])["lines"] == []
