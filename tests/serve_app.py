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
from conftest import ROOT, free_port, save_tiny_blip, wait_for

from samples.sample_photos import write_library, write_many

IDLE_SECONDS = 8
MAX_UPLOAD = 4 * 1024**2


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
    port = free_port()
    env = {
        **os.environ, **ray_head["env"], "PYTHONPATH": str(ROOT),
        "INGEST_API_TOKEN": token,
        "INGEST_ALLOWED_ROOTS": str(allowed),
        "INGEST_UPLOAD_DIR": str(work / "uploads"),
        "CHROMA_PATH": str(work / "chroma"),
        "CLIP_MODEL": tiny_model["config"],
        "CLIP_CHECKPOINT": tiny_model["checkpoint"],
        "BLIP_MODEL": str(save_tiny_blip(work / "blip")),
        "CAPTION_MAX_REPLICAS": "1",
        "CAPTION_IDLE_SECONDS": str(IDLE_SECONDS),
        "INGEST_MAX_UPLOAD_BYTES": str(MAX_UPLOAD),
    }
    started = serve_cli("start", "--address", ray_head["address"], "--http-host", "127.0.0.1", "--http-port", str(port), env=env)
    assert started.returncode == 0, started.stderr[-2000:]
    deployed = serve_cli("run", "serve_deployments.app:app", "--address", ray_head["address"], "--non-blocking", env=env)
    assert deployed.returncode == 0, deployed.stderr[-3000:]
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: _get(f"{url}/healthz") == 200, timeout=120, what="the Serve app")
    yield {"url": url, "token": token, "work": work, "allowed": allowed, "env": env, "logs": deployed.stderr}
    serve_cli("shutdown", "--address", ray_head["dashboard"], "-y", env=env)


def _get(url: str) -> int:
    try:
        return requests.get(url, timeout=5).status_code
    except requests.RequestException:
        return 0


def auth(service) -> dict:
    return {"Authorization": f"Bearer {service['token']}"}


def wait_job(service, job_id: str, timeout: float = 300) -> dict:
    def finished():
        status = requests.get(f"{service['url']}/ingest/{job_id}", headers=auth(service), timeout=10).json()
        return status if status["status"] in ("SUCCEEDED", "FAILED", "STOPPED") else None

    return wait_for(finished, timeout=timeout, interval=1, what=f"job {job_id}")
