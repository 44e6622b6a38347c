"""The Serve application deployed once per test session on the session's Ray head (`serve start` + `serve run`,
real HTTP on loopback), with the helpers the Serve, web page and notebook tests share."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import yaml
from conftest import ROOT, free_port, wait_for

from samples.models import save_blip
from samples.sample_photos import write_library, write_many

IDLE_SECONDS = 8
MAX_UPLOAD = 4 * 1024**2
INLINE_MAX_FILES = 16  # folders of more files are ingested as Ray jobs
EMBED_MAX_REPLICAS = 1  # the Serve config's `deployments:` entry says 4; this test's says 1
PREVIEW_MAX_PIXELS = 4_000_000  # small, so that a picture over it is small too
SIMILAR_MAX_PAIRS = 40  # over the pairs of tests/test_similar.py's near-copies (30), under those of 10 photos (45)


def serve_cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).with_name("serve")), *args], env=env, capture_output=True,
                          text=True, timeout=300, cwd=ROOT)


@pytest.fixture(scope="session")
def service(ray_head, tiny_model, tmp_path_factory):
    work = tmp_path_factory.mktemp("serve")
    allowed = work / "allowed"
    write_library(str(allowed / "photos"))
    write_many(str(allowed / "many"), 200)
    (work / "outside").mkdir()
    (work / "outside" / "secret.jpg").write_bytes((allowed / "photos" / "astronaut.jpg").read_bytes())
    os.symlink(work / "outside", allowed / "escape")
    (allowed / "mixed").mkdir()
    (allowed / "mixed" / "coffee.png").write_bytes((allowed / "photos" / "coffee.png").read_bytes())
    os.symlink(work / "outside" / "secret.jpg", allowed / "mixed" / "leak.jpg")  # a file link leaving the roots
    token = secrets.token_urlsafe(24)
    (work / "token").write_text(token)
    settings = {  # the app's settings, as the cluster's Serve config sets them (the token from a file)
        "INGEST_API_TOKEN_FILE": str(work / "token"),
        "INGEST_ALLOWED_ROOTS": str(allowed),
        "INGEST_UPLOAD_DIR": str(work / "uploads"),
        "INGEST_INLINE_MAX_FILES": str(INLINE_MAX_FILES),
        "CHROMA_PATH": str(work / "chroma"),
        "CLIP_MODEL": tiny_model["config"],
        "CLIP_CHECKPOINT": tiny_model["checkpoint"],
        # a second model, of other weights, for collections created or reindexed with it
        "CLIP_EXTRA_MODELS": f"{tiny_model['config']}@{tiny_model['other_checkpoint']}",
        "EMBED_EXTRA_IDLE_SECONDS": str(IDLE_SECONDS),
        "BLIP_MODEL": str(save_blip(work / "blip")),
        "INGEST_MAX_UPLOAD_BYTES": str(MAX_UPLOAD),
        "PREVIEW_MAX_PIXELS": str(PREVIEW_MAX_PIXELS),
        "SIMILAR_MAX_PAIRS": str(SIMILAR_MAX_PAIRS),
    }
    port = free_port()
    env = {**os.environ, **ray_head["env"], "PYTHONPATH": str(ROOT), **settings}
    started = serve_cli("start", "--address", ray_head["address"], "--http-host", "127.0.0.1", "--http-port", str(port), env=env)
    assert started.returncode == 0, started.stderr[-2000:]
    config = serve_config(settings, work / "serve_config.yaml")
    deployed = serve_cli("run", str(config), "--address", ray_head["address"], "--non-blocking", env=env)
    assert deployed.returncode == 0, deployed.stderr[-3000:]
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: _get(f"{url}/healthz") == 200, timeout=180, what="the Serve app")
    yield {"url": url, "token": token, "work": work, "allowed": allowed, "env": env, "logs": deployed.stderr}
    serve_cli("shutdown", "--address", ray_head["dashboard"], "-y", env=env)


def serve_config(settings: dict, path: Path) -> Path:
    """cluster/serve_config.yaml with this test's settings, and its `deployments:` scaling made small: the
    captioner, the text reader and the face finder go back to zero after IDLE_SECONDS, one Embedder replica at most."""
    config = yaml.safe_load((ROOT / "cluster" / "serve_config.yaml").read_text())
    (application,) = config["applications"]
    application["runtime_env"] = {"env_vars": settings}
    scaling = {d["name"]: d["autoscaling_config"] for d in application["deployments"]}
    scaling["Embedder"].update(max_replicas=EMBED_MAX_REPLICAS)
    for to_zero in ("Captioner", "TextReader", "FaceFinder"):
        scaling[to_zero].update(max_replicas=1, downscale_delay_s=IDLE_SECONDS, downscale_to_zero_delay_s=IDLE_SECONDS,
                                look_back_period_s=IDLE_SECONDS)
    path.write_text(yaml.safe_dump({"applications": config["applications"]}))
    return path


def _get(url: str) -> int:
    try:
        return requests.get(url, timeout=5).status_code
    except requests.RequestException:
        return 0


def running_replicas(service, ray_head, deployment: str) -> int:
    status = serve_cli("status", "--address", ray_head["dashboard"], env=service["env"])
    deployments = yaml.safe_load(status.stdout)["applications"]["default"]["deployments"]
    return deployments[deployment]["replica_states"].get("RUNNING", 0)


def auth(service) -> dict:
    return {"Authorization": f"Bearer {service['token']}"}


def wait_job(service, job_id: str, timeout: float = 300) -> dict:
    def finished():
        status = requests.get(f"{service['url']}/ingest/{job_id}", headers=auth(service), timeout=10).json()
        return status if status["status"] in ("SUCCEEDED", "FAILED", "STOPPED") else None

    return wait_for(finished, timeout=timeout, interval=1, what=f"job {job_id}")


SHOOTS_COLLECTION = "shoots"


@pytest.fixture(scope="session")
def shoots(service):
    """The search-filter library (photo_cases.SHOOTS) inside the allowed roots, ingested by the app with
    captions; {"folder", "records": {name: record as a listing gives it}}."""
    from photo_cases import SHOOTS, sha256_of, write_shoots

    folder = service["allowed"] / "shoots"
    write_shoots(folder)
    response = requests.post(f"{service['url']}/ingest", headers=auth(service), params={"wait": "true"}, timeout=600,
                             json={"paths": [str(folder)], "collection": SHOOTS_COLLECTION, "caption": True})
    assert response.status_code == 200, response.text  # stored; the captions come next
    done = wait_job(service, response.json()["job_id"])
    assert (done["status"], done["embedded"], done["failed"], done["captioned"]) == ("SUCCEEDED", len(SHOOTS), 0, len(SHOOTS)), done
    listed = requests.get(f"{service['url']}/collections/{SHOOTS_COLLECTION}/photos", headers=auth(service),
                          params={"k": 100}, timeout=60)
    assert listed.status_code == 200, listed.text
    by_id = {result["id"]: result for result in listed.json()["results"]}
    return {"folder": folder, "records": {shoot.name: by_id[sha256_of(folder / shoot.name)] for shoot in SHOOTS}}
