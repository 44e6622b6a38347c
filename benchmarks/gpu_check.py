"""The GPU check: one command that, on a fresh GPU machine with the repository copied in, checks the GPU
path against the CPU and measures it, in about 8 minutes.

    python -m benchmarks.gpu_check                                   # CUDA, ViT-B-32: appends to RESULTS.md
    python -m benchmarks.gpu_check --device cpu --model tiny --jpegs 8 --dngs 4 --no-record   # the CPU in its place

1. setup: the packages it needs are imported (`--wheels DIR` installs the project from wheels first, for a
   machine that reaches no package index); the machine, the GPU and the versions are recorded;
2. corpus: 12 MP JPEGs and 24 MP DNGs, half with a preview (benchmarks.corpus, on every core);
3. vectors: the image tower on the device, compiled and eager, against the CPU's eager vectors of the
   same decoded pictures (cosine >= 0.999);
4. pipeline: `python -m ray_pipeline ingest --device DEVICE` on the JPEGs, then on the DNGs with a
   preview: images/s end to end (Ray's start and the model's compile included), and from the stages'
   busy seconds and the actor plan, the rate each stage could sustain, which says what bounds it; a
   sample of the stored vectors is checked against the CPU's too;
5. the Embedder's model (what the Serve deployment holds): pictures/s in batches of 64, ms per text;
6. the captioner (BLIP at blip-image-captioning-base's sizes, seeded): captions/s in batches of 8;
7. the GPU's memory peak (nvidia-smi, sampled through the whole check).

Weights are seeded random ones of the real architectures (no model hub is needed): speed and agreement
do not depend on what the weights learnt. A part that fails is reported with its reason and the others
still run; parts that would start after `--minutes` are skipped, said so. One JSON line on stdout, and
unless `--no-record`, a section in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
NEEDED = ("ray", "chromadb", "open_clip", "rawpy", "pillow_heif", "transformers", "psutil", "tifffile", "skimage",
          "sklearn")
MIN_COSINE = 0.999
SAMPLE = 16  # pictures of each kind in the vector checks
EMBEDDER_BATCH = 64  # as serve_deployments.embedder.GPU_BATCH
CAPTION_BATCH = 8  # as serve_deployments.captioner.MAX_BATCH


def setup(wheels: str | None) -> dict:
    """Install from `wheels` when given, then say which needed packages are missing (the parts that need
    them fail with that reason) and what the machine is."""
    if wheels:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--find-links", wheels, str(ROOT)],
                       check=True)
    missing = [name for name in NEEDED if importlib.util.find_spec(name) is None]
    import torch

    return {
        "python": sys.version.split()[0], "torch": torch.__version__, "cores": os.cpu_count(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
        "gpu_memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 1024**3, 1)
        if torch.cuda.is_available() else 0,
        "missing": missing,
    }


class GpuMemory:
    """The peak of the GPU's used memory over a stretch of time (nvidia-smi, every half second), whoever
    uses it: the pipeline's actors run in other processes."""

    def __init__(self):
        self.peak_mib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.5):
            try:
                used = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                                      capture_output=True, text=True, timeout=10).stdout.split()
            except (OSError, subprocess.TimeoutExpired):
                return  # no nvidia-smi (the CPU in the GPU's place): nothing to sample
            self.peak_mib = max([self.peak_mib, *(int(u) for u in used if u.isdigit())])

    def __enter__(self) -> GpuMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


def decoded(paths: list[str], geometry) -> np.ndarray:
    """The pictures as every path decodes them (the file's journey)."""
    from ray_pipeline.core import defaults
    from ray_pipeline.files.decode import decode_file
    from ray_pipeline.files.reading import read_file

    return np.stack([decode_file(read_file(path), geometry, defaults.MAX_PIXELS).pixels for path in paths])


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def check_vectors(resolved, device: str, pictures: np.ndarray, reference: np.ndarray) -> dict:
    """The device's vectors, compiled and eager, against the CPU's: the lowest cosine of each."""
    from ray_pipeline.model.embedders import LocalEmbedder

    found = {}
    for compile in ("on", "off"):
        started = time.perf_counter()
        embedder = LocalEmbedder(resolved, device, compile, batch_size=EMBEDDER_BATCH)
        vectors = embedder.embed(pictures)
        lowest = float(cosines(vectors, reference).min())
        found[f"compile_{compile}"] = {"min_cosine": round(lowest, 6), "ok": lowest >= MIN_COSINE,
                                       "load_and_encode_s": round(time.perf_counter() - started, 1)}
    return found


def pipeline(kind: str, paths: list[str], device: str, model_args: list[str], work: Path) -> dict:
    """One ingestion as users run it, on its own local Ray; the rate each stage could sustain is its
    pictures over its busy seconds shared among its actors."""
    from benchmarks.run import pipeline_cli

    batch = 256 if device == "cuda" else 32
    run = pipeline_cli(paths, [*model_args, "--device", device], batch, str(work / f"chroma-{kind}"), kind)
    summary, stages, actors = run["summary"], run["stages"], run["summary"].get("actors") or {}
    shares = {"read": actors.get("decode_actors", 1), "decode": actors.get("decode_actors", 1),
              "embed": max(actors.get("embed_actors", [1, 1])), "write": 1}
    capacity = {stage: round(summary["embedded"] / (seconds / shares[stage]), 1) if seconds else None
                for stage, seconds in stages.items()}
    bound = min((stage for stage in capacity if capacity[stage]), key=lambda stage: capacity[stage], default=None)
    return {"files": len(paths), "embedded": summary["embedded"], "wall_s": round(run["seconds"], 1),
            "images_per_s": round(summary["embedded"] / run["seconds"], 1), "stage_seconds": stages,
            "stage_capacity_per_s": capacity, "bounded_by": bound, "actors": actors, "driver_peak_mb": run["peak_mb"]}


def stored_agree(chroma: Path, collection: str, resolved) -> dict:
    """A sample of the records the pipeline stored on the device against the CPU's vectors of their files."""
    import chromadb

    from ray_pipeline.core.paths import recorded_path
    from ray_pipeline.model.embedders import LocalEmbedder

    found = chromadb.PersistentClient(path=str(chroma)).get_collection(collection).get(
        include=["embeddings", "metadatas"], limit=SAMPLE)
    files = [recorded_path(metadata) or "" for metadata in found["metadatas"]]
    reference = LocalEmbedder(resolved, "cpu").embed(decoded(files, resolved.geometry))
    lowest = float(cosines(np.asarray(found["embeddings"]), reference).min())
    return {"records": len(files), "min_cosine": round(lowest, 6), "ok": lowest >= MIN_COSINE}


def embedder(spec, device: str, pictures: np.ndarray) -> dict:
    """The Serve Embedder's model in this process: pictures/s in its batches, ms per text query."""
    from ray_pipeline.model.embedders import LocalEmbedder

    started = time.perf_counter()
    embedder = LocalEmbedder(spec, device, compile="auto", batch_size=EMBEDDER_BATCH, texts=True)
    loaded = time.perf_counter() - started
    batch = np.resize(pictures, (EMBEDDER_BATCH, *pictures.shape[1:]))
    embedder.embed(batch)
    rounds = 10
    started = time.perf_counter()
    for _ in range(rounds):
        embedder.embed(batch)
    images_s = time.perf_counter() - started
    embedder.embed_texts(["a warm-up"])
    started = time.perf_counter()
    for i in range(20):
        embedder.embed_texts([f"a photo of a cat number {i}"])
    return {"load_s": round(loaded, 1), "images_per_s": round(rounds * EMBEDDER_BATCH / images_s, 1),
            "ms_per_text": round((time.perf_counter() - started) / 20 * 1000, 2)}


def captioner(device: str, pictures: np.ndarray, work: Path, base: bool) -> dict:
    """BLIP as the Captioner runs it: captions/s in its batches."""
    from ray_pipeline.model.blip import BlipCaptioner
    from samples.models import save_blip

    blip = BlipCaptioner(str(save_blip(work / "blip", base=base)), device)
    batch = list(np.resize(pictures, (CAPTION_BATCH, *pictures.shape[1:])))  # its processor resizes them
    blip.caption(batch)
    rounds = 3
    started = time.perf_counter()
    for _ in range(rounds):
        blip.caption(batch)
    return {"captions_per_s": round(rounds * CAPTION_BATCH / (time.perf_counter() - started), 1)}


class Parts:
    """The check's parts, each timed and kept apart: a failure is its reason, and past the deadline a
    part is skipped."""

    def __init__(self, minutes: float):
        self.deadline = time.monotonic() + minutes * 60
        self.figures: dict = {}

    def run(self, name: str, part, *args):
        if time.monotonic() > self.deadline:
            self.figures[name] = {"skipped": "past the check's --minutes"}
            return None
        started = time.perf_counter()
        try:
            value = part(*args)
        except Exception as exc:  # one part's failure costs only that part
            traceback.print_exc()
            self.figures[name] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
            return None
        print(f"[gpu_check] {name}: {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
        if isinstance(value, dict):
            self.figures[name] = value
        return value


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda", help="cpu: the CPU in the GPU's place")
    parser.add_argument("--model", default="ViT-B-32", help="an OpenCLIP architecture, or tiny (default ViT-B-32)")
    parser.add_argument("--jpegs", type=int, default=512, help="12 MP JPEGs (default 512)")
    parser.add_argument("--dngs", type=int, default=64, help="24 MP DNGs, half with a preview (default 64)")
    parser.add_argument("--corpus", default=str(ROOT / "benchmarks" / "corpus"), help="where the corpus is kept")
    parser.add_argument("--wheels", help="install the project from these wheels first (no package index needed)")
    parser.add_argument("--minutes", type=float, default=8.0, help="parts that would start later are skipped")
    parser.add_argument("--no-record", action="store_true", help="print, do not append to RESULTS.md")
    args = parser.parse_args(argv)
    parts = Parts(args.minutes)
    with GpuMemory() as gpu, tempfile.TemporaryDirectory(prefix="gpu-check-") as scratch:
        work = Path(scratch)
        parts.run("setup", setup, args.wheels)
        _measure(parts, args, work)
    parts.figures["gpu_memory_peak_mib"] = gpu.peak_mib
    line = {"device": args.device, "model": args.model, **parts.figures}
    print(json.dumps(line), flush=True)
    if not args.no_record:
        _record(line)
    return line


def _measure(parts: Parts, args, work: Path) -> None:
    from benchmarks.corpus import build_corpus
    from benchmarks.run import seeded_model
    from ray_pipeline.model.clip import ModelSpec

    files = parts.run("corpus", lambda: build_corpus(args.corpus, args.jpegs, args.dngs, workers=os.cpu_count() or 1))
    if files is not None:
        parts.figures["corpus"] = {kind: len(paths) for kind, paths in files.items() if paths}
    model = parts.run("model", lambda: seeded_model(Path(args.corpus) / "models", args.model))
    if files is None or model is None:
        return
    resolved, _, model_args = model
    previews = [path for path in files["dng"] if path.endswith("_preview.dng")]
    sample = files["jpeg"][:SAMPLE] + files["dng"][:SAMPLE]
    pictures = decoded(sample, resolved.geometry)
    from ray_pipeline.model.embedders import LocalEmbedder

    reference = LocalEmbedder(resolved, "cpu").embed(pictures)
    parts.run("vectors", check_vectors, resolved, args.device, pictures, reference)
    parts.run("pipeline_jpeg", pipeline, "jpeg", files["jpeg"], args.device, model_args, work)
    parts.run("pipeline_jpeg_vectors", stored_agree, work / "chroma-jpeg", "jpeg", resolved)
    parts.run("pipeline_dng_preview", pipeline, "dng", previews, args.device, model_args, work)
    spec = ModelSpec(model_args[1], None, model_args[3])
    parts.run("embedder", embedder, spec, args.device, pictures)
    parts.run("captioner", captioner, args.device, pictures, work, args.model != "tiny")


def _record(line: dict) -> None:
    from benchmarks.run import _append

    _append(f"\n#### GPU check ({time.strftime('%Y-%m-%d')}, device {line['device']}, "
            f"{(line.get('setup') or {}).get('gpu', '?')}, {os.cpu_count()} cores)\n\n```json\n{json.dumps(line, indent=1)}\n```")


if __name__ == "__main__":
    main()
