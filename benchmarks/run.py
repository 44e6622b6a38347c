"""Times this pipeline against the earlier system's approach, Ray's reference pattern and the model alone,
on the same model and images, and appends the figures to benchmarks/RESULTS.md.

    python -m benchmarks.run                       # the full run (about 15 minutes on 2 cores)
    python -m benchmarks.run --jpegs 24 --dngs 8 --scaling 100,1000 --no-record   # a quick look

(a) earlier: full-size RAW demosaic and full JPEG decode one image after another, OpenCLIP's own
    preprocess on the full picture, then batched embedding (what the earlier system did, minus its PNG
    and base64 round trip);
(b) reference: Ray Data's `read_images` (JPEG) or `read_binary_files` + a full rawpy demosaic (DNG),
    preprocess in `map_batches`, then a `map_batches` embedding actor pool;
(c) pipeline: `python -m ray_pipeline ingest` as users run it, into a fresh embedded Chroma;
(d) ceiling: the pipeline's LocalEmbedder alone on pre-decoded pixels at the same batch size.

Every approach starts from files on disk (hot in the page cache after the corpus build) and its own
Ray where it uses one, so each figure includes the startup a user waits for.
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

from benchmarks.corpus import build_corpus
from ray_pipeline.steps.summary import summary_in
from samples.models import save_checkpoint, save_tiny_clip
from samples.sample_photos import write_many

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
SMALL_RUN = 8  # files in the short runs that measure each approach's startup


class PeakMemory:
    """Peak proportional set size (MB) of a process and all its descendants (Ray's workers included),
    above what they held when sampling started; PSS counts shared pages (the object store) once.

    Reading a process's PSS makes the kernel walk its page tables, about 16 ms for a Ray worker that maps
    the object store: sampled every 0.25 s, a dozen workers kept one of two cores busy and slowed the
    measured run by 15%. Every 2 s it costs a few percent of one core."""

    def __init__(self, pid: int | None = None, interval: float = 2.0):
        self.pid, self.interval = pid or os.getpid(), interval
        self.peak = self.baseline = 0.0
        self._stop = threading.Event()

    def _total(self) -> float:
        try:
            root = psutil.Process(self.pid)
            processes = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return 0.0
        total = 0
        for process in processes:
            try:
                total += process.memory_full_info().pss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return total / 1024**2

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self._total())

    def __enter__(self) -> PeakMemory:
        self.baseline = self.peak = self._total()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def mb(self) -> int:
        return round(self.peak - self.baseline)


def machine() -> dict:
    import chromadb
    import open_clip
    import PIL
    import rawpy
    import ray
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    return {
        "cpu": f"{cpu}, {os.cpu_count()} logical cores",
        "memory": f"{psutil.virtual_memory().total / 1024**3:.0f} GiB",
        "gpu": gpu,
        "versions": f"Python {platform.python_version()}, torch {torch.__version__}, Ray {ray.__version__}, "
                    f"open_clip {open_clip.__version__}, chromadb {chromadb.__version__}, rawpy {rawpy.__version__}, "
                    f"Pillow {PIL.__version__}",
    }


def _rate(count: int, seconds: float) -> float:
    return round(count / seconds, 2) if seconds else 0.0


# (a) ------------------------------------------------------------------------------------------------

def earlier_approach(paths: list[str], model, batch_size: int) -> dict:
    """One image after another at full size, then batched embedding (in this process, all cores)."""
    import rawpy
    import torch
    from PIL import Image

    network, preprocess = model
    stages = {"read": 0.0, "decode": 0.0, "preprocess": 0.0, "embed": 0.0}
    pending: list = []
    started = time.perf_counter()

    def embed() -> None:
        tick = time.perf_counter()
        with torch.inference_mode():
            network.encode_image(torch.stack(pending))
        stages["embed"] += time.perf_counter() - tick
        pending.clear()

    with PeakMemory() as memory:
        for path in paths:
            tick = time.perf_counter()
            data = Path(path).read_bytes()
            stages["read"] += time.perf_counter() - tick
            tick = time.perf_counter()
            if path.lower().endswith(".dng"):
                with rawpy.imread(io.BytesIO(data)) as raw:
                    picture = Image.fromarray(raw.postprocess(use_camera_wb=True))
            else:
                picture = Image.open(io.BytesIO(data)).convert("RGB")
            stages["decode"] += time.perf_counter() - tick
            tick = time.perf_counter()
            pending.append(preprocess(picture))
            stages["preprocess"] += time.perf_counter() - tick
            if len(pending) == batch_size:
                embed()
        if pending:
            embed()
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "stages": stages, "peak_mb": memory.mb}


# (b) ------------------------------------------------------------------------------------------------

class _ReferenceEmbedder:
    """The embedding actor of Ray's batch-inference example: the model once per actor."""

    def __init__(self, resolved):
        from ray_pipeline.model.clip import load

        self.network = load(resolved)

    def __call__(self, batch: dict) -> dict:
        import torch

        tick = time.perf_counter()
        with torch.inference_mode():
            vectors = self.network.encode_image(torch.from_numpy(np.stack(batch["image"])))
        spent = (time.perf_counter() - tick) / len(vectors)
        return {"embedding": vectors.numpy(), "embed_seconds": np.full(len(vectors), spent),
                "preprocess_seconds": batch["preprocess_seconds"]}


def _reference_preprocess(resolved):
    """map_batches function: decoded pictures (or DNG bytes, demosaiced here) -> OpenCLIP tensors."""

    def preprocess(batch: dict) -> dict:
        import rawpy
        from open_clip.transform import PreprocessCfg, image_transform_v2
        from PIL import Image

        transform = image_transform_v2(PreprocessCfg(**resolved.preprocess), is_train=False)
        tick = time.perf_counter()
        pictures = []
        for item in batch["bytes"] if "bytes" in batch else batch["image"]:
            if "bytes" in batch:
                with rawpy.imread(io.BytesIO(item)) as raw:
                    item = raw.postprocess(use_camera_wb=True)
            pictures.append(transform(Image.fromarray(item)).numpy())
        spent = (time.perf_counter() - tick) / max(1, len(pictures))
        return {"image": np.stack(pictures), "preprocess_seconds": np.full(len(pictures), spent)}

    return preprocess


def reference_pattern(paths: list[str], raw: bool, resolved, batch_size: int) -> dict:
    import ray

    started = time.perf_counter()
    with PeakMemory() as memory:
        # A temp folder of its own: the CLI run next must not find this instance's address while it stops.
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False,
                 _temp_dir=tempfile.mkdtemp(prefix="rb", dir="/tmp"))
        try:
            cpus = int(ray.cluster_resources()["CPU"])
            source = ray.data.read_binary_files(paths) if raw else ray.data.read_images(paths, mode="RGB")
            embedded = (
                # Half a CPU per preprocess task: resources unlike the actor's keep Ray Data from fusing
                # the preprocessing into the single embedding actor, so it runs in parallel tasks.
                source.map_batches(_reference_preprocess(resolved), batch_size=16, num_cpus=0.5)
                .map_batches(_ReferenceEmbedder, fn_constructor_kwargs={"resolved": resolved}, batch_size=batch_size,
                             compute=ray.data.ActorPoolStrategy(size=1), num_cpus=max(1, cpus // 2))
            )
            stages = {"preprocess": 0.0, "embed": 0.0}  # read_images decodes inside its read tasks: not timed apart
            count = 0
            for batch in embedded.iter_batches(batch_size=None):
                count += len(batch["embedding"])
                stages["embed"] += float(batch["embed_seconds"].sum())
                stages["preprocess"] += float(batch["preprocess_seconds"].sum())
        finally:
            ray.shutdown()
    assert count == len(paths), f"reference pattern embedded {count} of {len(paths)}"
    return {"seconds": time.perf_counter() - started, "stages": stages, "peak_mb": memory.mb}


# (c) ------------------------------------------------------------------------------------------------

def pipeline_cli(paths: list[str], model_args: list[str], batch_size: int, chroma: str, collection: str) -> dict:
    """`python -m ray_pipeline ingest --manifest` as a user runs it; its own local Ray (no RAY_ADDRESS), even
    for the few files of a startup run (`--inline-max-files 0`): this measures the bulk path."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as manifest:
        manifest.write("\n".join(paths) + "\n")
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    env["PYTHONPATH"] = str(ROOT)
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "ray_pipeline", "ingest", "--manifest", manifest.name, "--collection", collection,
         "--chroma-path", chroma, "--batch-size", str(batch_size), "--inline-max-files", "0", *model_args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
    )
    with PeakMemory(process.pid) as memory:
        stdout, stderr = process.communicate()
    seconds = time.perf_counter() - started
    os.unlink(manifest.name)
    if process.returncode != 0:
        raise RuntimeError(f"the pipeline failed ({process.returncode}):\n{stderr[-3000:]}")
    summary = summary_in(stdout)
    if summary is None:
        raise RuntimeError(f"the pipeline printed no summary:\n{stderr[-3000:]}")
    if summary["failed"]:
        raise RuntimeError(f"the pipeline failed on {summary['failed']} files:\n{stderr[-3000:]}")
    return {"seconds": seconds, "job_seconds": summary["seconds"], "stages": summary["stage_seconds"],
            "peak_mb": memory.mb, "summary": summary}


# (d) ------------------------------------------------------------------------------------------------

def model_ceiling(resolved, count: int, batch_size: int) -> dict:
    """The pipeline's own embedder on pre-decoded pixels: the most any pipeline could do with this model."""
    from ray_pipeline.model.embedders import LocalEmbedder

    embedder = LocalEmbedder(resolved, "cpu")
    shape = resolved.geometry.pixel_shape
    pixels = np.random.default_rng(0).integers(0, 256, (batch_size, *shape), dtype=np.uint8)
    embedder.embed(pixels)  # warm-up
    started = time.perf_counter()
    with PeakMemory() as memory:
        for _ in range(max(1, count // batch_size)):
            embedder.embed(pixels)
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "images": max(1, count // batch_size) * batch_size, "stages": {"embed": seconds},
            "peak_mb": memory.mb}


# ----------------------------------------------------------------------------------------------------

def seeded_model(folder: Path, name: str):
    """(resolved, (network, preprocess), CLI arguments) for a seeded random `name` (an OpenCLIP name or "tiny")."""
    from open_clip.transform import PreprocessCfg, image_transform_v2

    from ray_pipeline.model.clip import ModelSpec, load, resolve

    folder.mkdir(parents=True, exist_ok=True)
    if name == "tiny":
        config, checkpoint = save_tiny_clip(folder, seed=0)
        architecture = str(config)
    else:
        checkpoint, architecture = folder / f"{name}-seed0.pt", name
        if not checkpoint.exists():
            save_checkpoint(folder, name, seed=0)
    resolved, _ = resolve(ModelSpec(architecture, None, str(checkpoint)))
    network = load(resolved)
    preprocess = image_transform_v2(PreprocessCfg(**resolved.preprocess), is_train=False)
    return resolved, (network, preprocess), ["--model", architecture, "--checkpoint", str(checkpoint)]


def compare(kind: str, paths: list[str], models, batch_size: int, work: Path) -> dict:
    resolved, model, model_args = models
    rows = {}
    print(f"[{kind}] (a) earlier approach on {len(paths)} files ...", flush=True)
    rows["a"] = earlier_approach(paths, model, batch_size)
    print(f"[{kind}] (b) Ray reference pattern ...", flush=True)
    rows["b"] = reference_pattern(paths, kind == "dng", resolved, batch_size)
    print(f"[{kind}] (c) this pipeline's CLI, then the same command again ...", flush=True)
    rows["c"] = pipeline_cli(paths, model_args, batch_size, str(work / f"chroma-{kind}"), f"bench-{kind}")
    rows["c re-run"] = pipeline_cli(paths, model_args, batch_size, str(work / f"chroma-{kind}"), f"bench-{kind}")
    assert rows["c"]["summary"]["embedded"] == len(set(paths)), rows["c"]["summary"]
    assert rows["c re-run"]["summary"]["embedded"] == 0, rows["c re-run"]["summary"]
    print(f"[{kind}] (d) the model alone ...", flush=True)
    rows["d"] = model_ceiling(resolved, max(len(paths), 4 * batch_size), batch_size)
    for row in rows.values():
        row.setdefault("images", len(paths))
        row["images_per_s"] = _rate(row["images"], row["seconds"])
    # Startup (Ray, actors, model loading) is paid once per run: the same approaches on the first few
    # files give it, and the rest of the time is what each further image costs.
    few = paths[:SMALL_RUN]
    print(f"[{kind}] (a), (b), (c) again on {len(few)} files, for their startup cost ...", flush=True)
    small = {"a": earlier_approach(few, model, batch_size), "b": reference_pattern(few, kind == "dng", resolved, batch_size),
             "c": pipeline_cli(few, model_args, batch_size, str(work / f"chroma-{kind}-few"), f"bench-{kind}")}
    for key, row in small.items():
        rows[key]["marginal_per_s"] = _rate(len(paths) - len(few), rows[key]["seconds"] - row["seconds"])
    rows["d"]["marginal_per_s"] = rows["d"]["images_per_s"]  # warmed up before timing: no startup in it
    return rows


def scaling(counts: list[int], corpus: Path, work: Path, batch_size: int) -> list[dict]:
    """The pipeline (tiny model) on 100, 1000, 10000 ... small JPEGs (kept in `corpus`): time and memory."""
    _, _, model_args = seeded_model(corpus / "models", "tiny")
    results = []
    for count in counts:
        folder = corpus / f"small-{count}"
        paths = sorted(str(p) for p in folder.glob("*.jpg")) if folder.exists() else []
        if len(paths) != count:
            paths = write_many(str(folder), count, size=256, seed=count)
        print(f"[scaling] {count} small JPEGs, then again ...", flush=True)
        run = pipeline_cli(paths, model_args, batch_size, str(work / f"chroma-small-{count}"), "bench-small")
        rerun = pipeline_cli(paths, model_args, batch_size, str(work / f"chroma-small-{count}"), "bench-small")
        assert rerun["summary"]["embedded"] == 0, rerun["summary"]  # random crops may repeat: duplicates
        results.append({"images": count, **run, "images_per_s": _rate(count, run["seconds"]),
                        "rerun_seconds": rerun["seconds"], "rerun_peak_mb": rerun["peak_mb"]})
    return results


def _line(points: list[tuple[int, float]]) -> tuple[float, float]:
    """Least-squares (slope, intercept) of seconds against images."""
    slope, intercept = np.polyfit([x for x, _ in points], [y for _, y in points], 1)
    return float(slope), float(intercept)


def _stages(row: dict) -> str:
    return ", ".join(f"{k} {v:.1f}" for k, v in row["stages"].items())


def report_header(args, facts: dict) -> str:
    today = datetime.date.today().isoformat()
    return "\n".join([
        f"## Run of {today}: `python -m benchmarks.run {' '.join(sys.argv[1:])}`".rstrip(), "",
        f"- Machine: {facts['cpu']}; {facts['memory']}; GPU: {facts['gpu']}.", f"- {facts['versions']}.",
        f"- Model: {args.model} (seeded random weights, same checkpoint for every approach), batch {args.batch_size}.",
        ""])


NAMES = {"a": "(a) earlier approach", "b": "(b) Ray reference", "c": "(c) this pipeline (CLI)",
         "c re-run": "(c) re-run, all stored", "d": "(d) model alone"}


def report_comparison(kind: str, rows: dict) -> str:
    lines = [f"### {kind.upper()} corpus: {rows['c']['images']} files", "",
             "| approach | images/s end to end | images/s after startup | seconds | stage seconds (summed over workers) | peak MB |",
             "|---|---|---|---|---|---|"]
    for key, row in rows.items():
        lines.append(f"| {NAMES[key]} | {row['images_per_s']} | {row.get('marginal_per_s', '')} | {row['seconds']:.1f} | "
                     f"{_stages(row)} | {row['peak_mb']} |")
    ratios = {measure: ", ".join(f"c/{key} = {rows['c'][measure] / rows[key][measure]:.2f}" for key in "abd")
              for measure in ("images_per_s", "marginal_per_s")}
    lines += ["", f"Ratios end to end: {ratios['images_per_s']}; after startup: {ratios['marginal_per_s']}. "
              f"Re-run: {rows['c']['seconds'] / rows['c re-run']['seconds']:.1f}x faster than the first run "
              f"({rows['c re-run']['seconds']:.1f} s, nearly all of it startup).", ""]
    return "\n".join(lines)


def report_scaling(scaled: list[dict]) -> str:
    lines = ["### Scaling: small JPEGs (256 px), tiny model", "",
             "| images | seconds | images/s | job seconds | peak MB | re-run seconds | re-run peak MB |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['images']} | {r['seconds']:.1f} | {r['images_per_s']} | {r['job_seconds']} | {r['peak_mb']} | "
              f"{r['rerun_seconds']:.1f} | {r['rerun_peak_mb']} |" for r in scaled]
    if len(scaled) >= 2:
        slope, intercept = _line([(r["images"], r["seconds"]) for r in scaled])
        re_slope, re_intercept = _line([(r["images"], r["rerun_seconds"]) for r in scaled])
        worst = max(abs(r["seconds"] - (slope * r["images"] + intercept)) / r["seconds"] for r in scaled)
        lines += ["", f"Straight-line fit, first runs: {1000 * slope:.2f} ms per image + {intercept:.1f} s fixed "
                  f"(largest deviation from the line {100 * worst:.0f}% of a run's time); re-runs: "
                  f"{1000 * re_slope:.2f} ms per image + {re_intercept:.1f} s fixed. Per image, a re-run costs "
                  + (f"1/{slope / re_slope:.0f} of a first run." if re_slope > 0 else "too little to measure.")]
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", default=str(ROOT / "benchmarks" / "corpus"), help="where the corpus is built and kept")
    parser.add_argument("--jpegs", type=int, default=200, help="12-megapixel JPEGs (default 200)")
    parser.add_argument("--dngs", type=int, default=64, help="24-megapixel DNGs, half with a preview (default 64)")
    parser.add_argument("--model", default="ViT-B-32", help="an OpenCLIP architecture, or tiny (default ViT-B-32)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--scaling", default="100,1000,10000", help="sizes of the scaling series ('' for none)")
    parser.add_argument("--only", choices=["jpeg", "dng", "scaling"], action="append", help="run only these parts")
    parser.add_argument("--no-record", action="store_true", help="print, do not append to RESULTS.md")
    args = parser.parse_args()
    corpus = Path(args.corpus)
    parts = args.only or ["jpeg", "dng", "scaling"]
    files = build_corpus(str(corpus), args.jpegs, args.dngs)
    facts = machine()
    header = report_header(args, facts)
    print(header)
    record = (lambda text: None) if args.no_record else _append
    record("\n" + header)
    with tempfile.TemporaryDirectory(prefix="bench") as scratch:
        work = Path(scratch)
        if "jpeg" in parts or "dng" in parts:
            models = seeded_model(corpus / "models", args.model)
            for kind in ("jpeg", "dng"):
                if kind in parts and files[kind]:
                    text = report_comparison(kind, compare(kind, files[kind], models, args.batch_size, work))
                    print(text)
                    record(text)
        counts = [int(n) for n in args.scaling.split(",") if n] if "scaling" in parts else []
        if counts:
            text = report_scaling(scaling(counts, corpus, work, args.batch_size))
            print(text)
            record(text)


def _append(text: str) -> None:
    """Each part goes to RESULTS.md as soon as it is measured: a later failure loses no figures."""
    with RESULTS.open("a", encoding="utf-8") as results:
        results.write(text + "\n")


def report(title: str, figures: dict, record: bool) -> None:
    """The figures as one JSON line, and with `record`, as a JSON block under `title` in RESULTS.md,
    with the date and the machine."""
    print(json.dumps(figures))
    if record:
        _append(f"\n#### {title} ({time.strftime('%Y-%m-%d')}, {machine()['cpu']})\n\n```json\n"
                f"{json.dumps(figures, indent=1)}\n```")


if __name__ == "__main__":
    main()
