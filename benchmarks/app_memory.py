"""The app's memory under a hostile client, measured: the peak resident memory of its `Ingress` and `Embedder`
replicas while the cases of issue 28 are replayed against it over HTTP.

    python -m benchmarks.app_memory                           # this checkout; appends to RESULTS.md
    python -m benchmarks.app_memory --source /tmp/old --no-record   # another checkout (a `git worktree`)

The cases: a one-colour 15000 x 15000 PNG (a few hundred kilobytes, 225 megapixels) stored, then 8 thumbnail
requests of it at once, and 12 searches by it at once; 8 thumbnails at once of a 6000 x 6000 PNG (under the
previews' limit: what many decodes at once cost); and `similar` on a collection of 999 records at the
lowest threshold the app takes (-1 before issue 28). The app runs as `cluster/serve_config.yaml` deploys it,
with ViT-B-32 (seeded weights) on the CPU, on a `ray start --head` of its own.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
from PIL import Image

from benchmarks.run import ROOT, _append, machine, seeded_model
from benchmarks.warm import App
from samples.sample_photos import write_many

SIDE = 15_000
ALLOWED_SIDE = 6_000  # 36 megapixels: under the previews' limit, so decoded, two at a time


class Peak:
    """The peak resident memory (RSS) of a process while inside, sampled every 20 ms, above what it held at the start."""

    def __init__(self, pid: int):
        import psutil

        self.process = psutil.Process(pid)
        self.start = self.peak = self.process.memory_info().rss
        self._done = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._done.wait(0.02):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> Peak:
        self._sampler.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._sampler.join()

    def figures(self) -> dict:
        return {"start_gb": round(self.start / 1e9, 2), "peak_gb": round(self.peak / 1e9, 2)}


def replica_pids(app: App) -> dict[str, int]:
    # This process asks the head's state API: with the head's token (Ray reads these once, at its first use).
    os.environ.update({key: app.head.env[key] for key in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH") if key in app.head.env})
    from ray.util.state import list_actors

    actors = list_actors(address=app.head.dashboard, filters=[("state", "=", "ALIVE")], detail=True, limit=1000)
    return {name: next(a.pid for a in actors if f":{name}" in (a.class_name or "")) for name in ("Ingress", "Embedder")}


def at_once(count: int, request) -> dict:
    """`request` sent `count` times at once: the status codes' counts, the seconds the slowest took, and the
    first answer's detail where it is not a 200."""
    started = time.perf_counter()
    with ThreadPoolExecutor(count) as pool:
        answers = list(pool.map(lambda _: request(), range(count)))
    codes = [answer.status_code for answer in answers]
    told = next((answer.json().get("detail") for answer in answers if answer.status_code != 200), None)
    return {"codes": {code: codes.count(code) for code in set(codes)}, "seconds": round(time.perf_counter() - started, 1),
            **({"detail": str(told)[:200]} if told else {})}


def measure(app: App, work: Path) -> dict:
    library = work / "library"
    big = library / "big" / "flat.png"
    big.parent.mkdir(parents=True)
    Image.new("RGB", (SIDE, SIDE), (90, 140, 200)).save(big)
    medium = library / "big" / "medium.png"
    Image.new("RGB", (ALLOWED_SIDE, ALLOWED_SIDE), (200, 120, 40)).save(medium)
    stored = requests.post(f"{app.url}/ingest", headers=app.headers, params={"wait": "true"}, timeout=900,
                           json={"paths": [str(big.parent)], "collection": "big"}).json()
    ids = {Path(r["path"]).name: r["id"] for r in requests.post(f"{app.url}/search", headers=app.headers, timeout=120,
                                                                json={"collection": "big", "text": "x"}).json()["results"]}
    record_id = ids["flat.png"]
    pids = replica_pids(app)
    figures: dict = {"png_kb": big.stat().st_size // 1024, "stored": stored.get("embedded")}

    with Peak(pids["Ingress"]) as ingress:
        answers = at_once(8, lambda: requests.get(f"{app.url}/thumbnails/big/{record_id}", headers=app.headers, timeout=600))
    figures["thumbnails x8"] = {**answers, "Ingress": ingress.figures()}
    print(f"[memory] {figures['thumbnails x8']}", flush=True)

    with Peak(pids["Ingress"]) as ingress:
        answers = at_once(8, lambda: requests.get(f"{app.url}/thumbnails/big/{ids['medium.png']}", headers=app.headers,
                                                  timeout=600))
    figures["thumbnails of a 36 MP PNG x8"] = {**answers, "Ingress": ingress.figures()}
    print(f"[memory] {figures['thumbnails of a 36 MP PNG x8']}", flush=True)

    def by_photo():
        with open(big, "rb") as f:
            return requests.post(f"{app.url}/search", headers=app.headers, timeout=600, files={"file": ("flat.png", f)},
                                 data={"collection": "big"})

    with Peak(pids["Embedder"]) as embedder:
        answers = at_once(12, by_photo)
    figures["searches by photo x12"] = {**answers, "Embedder": embedder.figures()}
    print(f"[memory] {figures['searches by photo x12']}", flush=True)

    write_many(str(library / "many"), 999)
    job = requests.post(f"{app.url}/ingest", headers=app.headers, timeout=60,
                        json={"paths": [str(library / "many")], "collection": "many"}).json()["job_id"]
    while (status := requests.get(f"{app.url}/ingest/{job}", headers=app.headers, timeout=60).json())["status"] in (
            "PENDING", "RUNNING"):
        time.sleep(2)
    figures["999 records"] = {key: status[key] for key in ("status", "embedded", "message")}
    for threshold in ("-1", "0.5"):
        with Peak(pids["Ingress"]) as ingress:
            started = time.perf_counter()
            answer = requests.get(f"{app.url}/collections/many/similar", params={"threshold": threshold},
                                  headers=app.headers, timeout=900)
            seconds = round(time.perf_counter() - started, 1)
        figures[f"similar at {threshold}"] = {"code": answer.status_code, "answer_mb": round(len(answer.content) / 1e6, 2),
                                              "seconds": seconds, "truncated": answer.json().get("truncated"),
                                              "Ingress": ingress.figures()}
        print(f"[memory] similar at {threshold}: {figures[f'similar at {threshold}']}", flush=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default=str(ROOT), help="the checkout whose app is measured (default: this one)")
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--no-record", action="store_true", help="print, do not append to RESULTS.md")
    args = parser.parse_args()
    _, _, model_args = seeded_model(ROOT / "benchmarks" / "corpus" / "models", args.model)
    with tempfile.TemporaryDirectory(prefix="app-memory") as scratch:
        work = Path(scratch)
        app = App(work, work / "library", model_args, source=Path(args.source))
        try:
            figures = measure(app, work)
        finally:
            app.stop()
    text = (f"\n#### The app's memory under a hostile client: `python -m benchmarks.app_memory` ({time.strftime('%Y-%m-%d')}, "
            f"{machine()['cpu']}; source {args.source})\n\n```json\n{json.dumps(figures, indent=1)}\n```")
    print(text)
    if not args.no_record:
        _append(text)


if __name__ == "__main__":
    main()
