"""The warm path, timed: uploads and searches against the running Serve app, with ViT-B-32 on this
machine's CPUs, and the HTTP load test while a Ray job ingests.

    python -m benchmarks.warm                 # appends to RESULTS.md
    python -m benchmarks.warm --uploads 10 --no-record

The app is deployed as `cluster/serve_config.yaml` says (its `deployments:` scaling included) on a `ray
start --head` of its own, with embedded Chroma and a seeded ViT-B-32 checkpoint. Measured:
- one 12 MP JPEG per request, `POST /ingest/upload?wait=true`, each a photo not stored yet: the time
  until the answer, when the photo is stored and searchable (checked by a search by that photo);
- 32 such photos in one request;
- `POST /search` by text, and by a 12 MP photo, one at a time;
- `benchmarks.http_load.hammer` (200 requests from 8 threads, status and text search) while a Ray job
  ingests 200 small JPEGs, as tests/test_serve.py does with the tiny model.
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests
import yaml

from benchmarks.cold_start import RayHead, _free_port
from benchmarks.corpus import build_corpus
from benchmarks.http_load import hammer
from benchmarks.run import ROOT, _append, machine, seeded_model
from samples.sample_photos import write_many


def percentiles(values: list[float]) -> dict:
    return {f"p{q}": round(float(np.percentile(values, q)), 1) for q in (50, 95, 99)}


class App:
    """The Serve app on its own head, reached over HTTP with its token."""

    def __init__(self, work: Path, corpus: Path, model_args: list[str], source: Path = ROOT, env: dict | None = None):
        self.head = RayHead(source)
        token = secrets.token_urlsafe(24)
        (work / "token").write_text(token)
        self.headers = {"Authorization": f"Bearer {token}"}
        settings = {
            "INGEST_API_TOKEN_FILE": str(work / "token"),
            "INGEST_ALLOWED_ROOTS": f"{corpus}:{work / 'library'}",
            "INGEST_UPLOAD_DIR": str(work / "uploads"),
            "CHROMA_PATH": str(work / "chroma"),
            "CLIP_MODEL": model_args[1],
            "CLIP_CHECKPOINT": model_args[3],
            "PYTHONPATH": str(source),  # the replicas import the app from this checkout
            **(env or {}),
        }
        config = yaml.safe_load((ROOT / "cluster" / "serve_config.yaml").read_text())
        config["applications"][0]["runtime_env"] = {"env_vars": settings}
        (work / "serve_config.yaml").write_text(yaml.safe_dump({"applications": config["applications"]}))
        port = _free_port()
        serve = str(Path(sys.executable).with_name("serve"))
        # From the checkout measured: Ray puts a driver's working folder first on its workers' path.
        subprocess.run([serve, "start", "--address", self.head.env["RAY_ADDRESS"], "--http-host", "127.0.0.1",
                        "--http-port", str(port)], check=True, env=self.head.env, capture_output=True, cwd=source)
        subprocess.run([serve, "run", str(work / "serve_config.yaml"), "--address", self.head.env["RAY_ADDRESS"],
                        "--non-blocking"], check=True, env=self.head.env, capture_output=True, cwd=source)
        self.url = f"http://127.0.0.1:{port}"
        self.token = token
        deadline = time.monotonic() + 300
        while not self._up():
            if time.monotonic() > deadline:
                raise RuntimeError("the Serve app did not come up in 300 s")
            time.sleep(1)

    def _up(self) -> bool:
        try:
            return requests.get(f"{self.url}/healthz", timeout=5).status_code == 200
        except requests.RequestException:
            return False

    def upload(self, paths: list[str], collection: str) -> tuple[float, dict]:
        files = [("files", (os.path.basename(p), open(p, "rb"))) for p in paths]
        started = time.perf_counter()
        response = requests.post(f"{self.url}/ingest/upload", params={"wait": "true"}, headers=self.headers,
                                 files=files, data={"collection": collection}, timeout=600)
        seconds = time.perf_counter() - started
        for _, (_, f) in files:
            f.close()
        response.raise_for_status()
        return seconds, response.json()

    def search(self, collection: str, text: str | None = None, photo: str | None = None) -> tuple[float, dict]:
        started = time.perf_counter()
        if photo is None:
            response = requests.post(f"{self.url}/search", headers=self.headers, timeout=60,
                                     json={"collection": collection, "text": text, "k": 5})
        else:
            with open(photo, "rb") as f:
                response = requests.post(f"{self.url}/search", headers=self.headers, timeout=60,
                                         files={"file": (os.path.basename(photo), f)}, data={"collection": collection, "k": "5"})
        seconds = time.perf_counter() - started
        response.raise_for_status()
        return seconds, response.json()

    def stop(self) -> None:
        self.head.stop()


def measure(app: App, jpegs: list[str], uploads: int, work: Path) -> dict:
    figures = {}
    app.upload(jpegs[-1:], "warm-up")  # the first request of each replica pays its own warm-up
    app.search("warm-up", text="warm up")
    seconds, found = [], 0
    for path in jpegs[:uploads]:
        took, job = app.upload([path], "warm-single")
        assert (job["status"], job["embedded"]) == ("SUCCEEDED", 1), job
        seconds.append(took * 1000)
        best = app.search("warm-single", photo=path)[1]["results"][0]
        found += best["score"] > 0.999  # searchable the moment the answer came
    figures["single"] = {**percentiles(seconds), "found": found, "count": uploads}
    print(f"[warm] one 12 MP upload: {figures['single']}", flush=True)

    batch = jpegs[len(jpegs) - 33 : len(jpegs) - 1]
    took, job = app.upload(batch, "warm-batch")
    assert job["embedded"] == len(batch), job
    figures["batch"] = {"count": len(batch), "seconds": round(took, 2), "job_seconds": job["end_time"] - job["start_time"]}
    print(f"[warm] {len(batch)} photos in one request: {figures['batch']}", flush=True)

    figures["text"] = percentiles([app.search("warm-single", text=f"a photo of a cat, number {i}")[0] * 1000 for i in range(50)])
    figures["image"] = percentiles([app.search("warm-single", photo=jpegs[i % uploads])[0] * 1000 for i in range(50)])
    print(f"[warm] search by text {figures['text']}, by a 12 MP photo {figures['image']}", flush=True)

    library = work / "library" / "many"
    write_many(str(library), 200)
    job_id = requests.post(f"{app.url}/ingest", headers=app.headers, json={"paths": [str(library)], "collection": "loaded"},
                           timeout=60).json()["job_id"]
    while requests.get(f"{app.url}/ingest/{job_id}", headers=app.headers, timeout=30).json()["status"] != "RUNNING":
        time.sleep(0.2)
    figures["load"] = hammer(app.url, app.token, job_id, "warm-single", total=200, threads=8, time_limit_s=300)
    print(f"[warm] under load while a Ray job ingests: {figures['load']}", flush=True)
    return figures


def report(facts: dict, figures: dict, model: str) -> str:
    single, batch, load = figures["single"], figures["batch"], figures["load"]
    return "\n".join([
        f"\n### Warm path: `python -m benchmarks.warm --model {model}`", "",
        f"- Machine: {facts['cpu']}; {facts['memory']}; GPU: {facts['gpu']}.", f"- {facts['versions']}.",
        f"- The Serve app as `cluster/serve_config.yaml` deploys it, embedded Chroma, {model} (seeded checkpoint) "
        "on the CPU; one `ray start --head` on this machine.", "",
        "| measure | figure |", "|---|---|",
        f"| one 12 MP JPEG uploaded with `?wait=true`, stored and searchable ({single['count']} uploads, "
        f"{single['found']} found first by a search at once) | p50 {single['p50']} ms, p95 {single['p95']} ms |",
        f"| {batch['count']} such photos in one request | {batch['seconds']} s |",
        f"| search by text | p50 {figures['text']['p50']} ms, p95 {figures['text']['p95']} ms |",
        f"| search by a 12 MP photo | p50 {figures['image']['p50']} ms, p95 {figures['image']['p95']} ms |",
        f"| under load ({load['requests']} requests, {load['threads']} threads, codes {load['codes']}) while a Ray job "
        f"ingests 200 JPEGs: status | p50 {load['status']['p50']} ms, p99 {load['status']['p99']} ms |",
        f"| the same: search by text | p50 {load['search']['p50']} ms, p99 {load['search']['p99']} ms |",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default=str(ROOT / "benchmarks" / "corpus"))
    parser.add_argument("--uploads", type=int, default=50)
    parser.add_argument("--model", default="ViT-B-32", help="an OpenCLIP architecture, or tiny (the tests' model, as "
                                                            "the HTTP load test of tests/test_serve.py uses)")
    parser.add_argument("--no-record", action="store_true", help="print, do not append to RESULTS.md")
    args = parser.parse_args()
    corpus = Path(args.corpus)
    jpegs = build_corpus(str(corpus), max(64, args.uploads + 33), 0)["jpeg"]
    _, _, model_args = seeded_model(corpus / "models", args.model)
    with tempfile.TemporaryDirectory(prefix="warm") as scratch:
        work = Path(scratch)
        app = App(work, corpus, model_args)
        try:
            figures = measure(app, jpegs, args.uploads, work)
        finally:
            app.stop()
    text = report(machine(), figures, args.model)
    print(text)
    if not args.no_record:
        _append(text)


if __name__ == "__main__":
    main()
