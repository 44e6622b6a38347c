"""`watch`, timed: how soon a photo copied into a watched folder is stored and searchable, and whether a
burst of many new files is absorbed with none lost.

    python -m benchmarks.watch                                  # ViT-B-32: 20 copies, one at a time
    python -m benchmarks.watch --model tiny --copies 0 --burst 10000
    python -m benchmarks.watch --no-record                      # print, leave RESULTS.md alone

The watch runs as a user starts it on a laptop: `python -m ray_pipeline watch FOLDER` with no Ray
cluster running (it starts its own), embedded Chroma, the default `--settle 2`, file events from
inotify. A copy is a 12 MP JPEG of the corpus written beside the folder, then renamed into it: the
copy is complete at the rename. It is searchable once its record (id: the SHA-256 of its bytes) is in
the collection, as read by another process polling every 50 ms. The burst: BURST small distinct JPEGs
renamed into the folder one after the other as fast as the disk takes them, then the time until all
are stored, and a check that every one of them is, once each.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.corpus import build_corpus
from benchmarks.run import ROOT, report, seeded_model
from ray_pipeline.steps.summary import summary_in
from samples.sample_photos import real_photos

POLL_S = 0.05


class Watch:
    def __init__(self, folder: Path, work: Path, model_args: list[str]):
        self.chroma, self.log = work / "chroma", work / "watch.err"
        env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
        with open(work / "watch.out", "w") as out, open(self.log, "w") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "ray_pipeline", "watch", str(folder), "--collection", "watched",
                 "--chroma-path", str(self.chroma), *model_args],
                env={**env, "PYTHONPATH": str(ROOT)}, cwd=work, stdout=out, stderr=err)
        self.out = work / "watch.out"
        self._wait(lambda: "ready: changes are embedded" in self.log.read_text(), 600, "the watch to be ready")
        self._collection = None

    def _wait(self, predicate, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            if self.process.poll() is not None:
                raise RuntimeError(f"the watch ended: {self.log.read_text()[-3000:]}")
            time.sleep(POLL_S)
        raise TimeoutError(f"{what}: {self.log.read_text()[-3000:]}")

    def collection(self):
        import chromadb

        if self._collection is None:
            self._collection = chromadb.PersistentClient(path=str(self.chroma)).get_collection("watched")
        return self._collection

    def stored(self, record_id: str) -> bool:
        return bool(self.collection().get(ids=[record_id], include=[])["ids"])

    def stop(self) -> dict:
        self.process.send_signal(signal.SIGINT)
        self.process.wait(timeout=120)
        return summary_in(self.out.read_text())


def copy_latencies(watch: Watch, folder: Path, staging: Path, sources: list[str], copies: int) -> list[float]:
    latencies = []
    for i in range(copies):
        staged = staging / f"copy{i}.jpg"
        shutil.copyfile(sources[i % len(sources)], staged)
        with open(staged, "ab") as f:  # one byte more after the JPEG's end: a new content, the same photo
            f.write(bytes([i % 256]))
        record_id = hashlib.sha256(staged.read_bytes()).hexdigest()
        os.replace(staged, folder / f"copy{i}.jpg")
        copied = time.monotonic()
        watch._wait(lambda: watch.stored(record_id), 120, f"copy {i}")
        latencies.append(time.monotonic() - copied)
        time.sleep(0.5)  # one copy at a time, as a person adds photos
    return latencies


def burst(watch: Watch, folder: Path, staging: Path, count: int) -> dict:
    photos = list(real_photos().values())
    rng = np.random.default_rng(0)
    ids = set()
    for i in range(count):  # small, distinct pictures: the burst is about files, not pixels
        picture = photos[i % len(photos)]
        top, left = rng.integers(0, 200, 2)
        crop = np.ascontiguousarray(picture[top:top + 96, left:left + 96])
        path = staging / f"b{i:05d}.jpg"
        Image.fromarray(crop).save(path, "JPEG", quality=80, comment=str(i).encode())
        ids.add(hashlib.sha256(path.read_bytes()).hexdigest())
    assert len(ids) == count
    target = folder / "burst"
    target.mkdir()
    started = time.monotonic()
    for path in sorted(staging.glob("b*.jpg")):
        os.replace(path, target / path.name)
    moved = time.monotonic() - started
    before = watch.collection().count()
    watch._wait(lambda: watch.collection().count() >= before + count, 3600, "the burst")
    absorbed = time.monotonic() - started
    stored = set()
    collection = watch.collection()
    for offset in range(0, collection.count(), 5000):
        stored.update(collection.get(include=[], limit=5000, offset=offset)["ids"])
    return {"files": count, "moved_in_s": round(moved, 1), "all_stored_after_s": round(absorbed, 1),
            "lost": len(ids - stored), "records": collection.count(), "files_per_s": round(count / absorbed, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="ViT-B-32", help="ViT-B-32 (default) or tiny")
    parser.add_argument("--copies", type=int, default=20)
    parser.add_argument("--burst", type=int, default=0)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    corpus = ROOT / "benchmarks" / "corpus"
    sources = build_corpus(str(corpus), jpegs=20, dngs=0)["jpeg"]
    _, _, model_args = seeded_model(corpus / "models", args.model)
    with tempfile.TemporaryDirectory(prefix="watch-bench") as work:
        work = Path(work)
        folder, staging = work / "photos", work / "staging"
        folder.mkdir()
        staging.mkdir()
        shutil.copyfile(sources[0], folder / "first.jpg")
        started = time.monotonic()
        watch = Watch(folder, work, model_args)
        ready = time.monotonic() - started
        try:
            latencies = copy_latencies(watch, folder, staging, sources, args.copies)
            absorbed = burst(watch, folder, staging, args.burst) if args.burst else None
            summary = watch.stop()
        finally:
            if watch.process.poll() is None:
                watch.process.kill()
        log = watch.log.read_text()
    batches = re.findall(r"(\d+) changed, (\d+) gone", log)
    bursts = [int(files) for files in re.findall(r"a burst of (\d+) files", log)]
    figures = {"model": args.model, "ready_s": round(ready, 1), "summary": summary,
               "batches": {"warm": len(batches) - len(bursts), "ray_data_jobs": bursts}}
    if latencies:
        figures["copy_to_searchable_s"] = {"n": len(latencies), **{f"p{q}": round(float(np.percentile(latencies, q)), 2)
                                                                   for q in (50, 90, 100)}}
    if absorbed:
        figures["burst"] = absorbed
    report("benchmarks.watch", figures, record=not args.no_record)


if __name__ == "__main__":
    main()
