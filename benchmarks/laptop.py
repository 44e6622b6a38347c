"""A laptop with no cluster: one cold command against the model alone, at every size.

    python -m benchmarks.laptop                                   # appended to RESULTS.md
    python -m benchmarks.laptop --sizes 200 --no-record           # a quick look
    python -m benchmarks.laptop --source /tmp/before --label "before (ee00b97)"

Each command runs as a user runs it, from a cold shell (a new process, no RAY_ADDRESS, a fresh embedded
Chroma, an empty cache folder), timed from its start to its exit:
- `ingest` of N 12-MP JPEGs of the benchmark corpus (a manifest of them), for each N of --sizes, and of the
  64 24-MP DNGs (half with a preview);
- the same `ingest` again on the unchanged files;
- `search` by text, twice: the first of a model (it may export the text tower), then from a cold shell.
The model alone is the pipeline's own `LocalEmbedder` on pre-decoded pixels, batch 32, warmed up, in the
precision the command ran in: the least any pipeline could take for the same photos on this machine.

`--source DIR` runs the command of another checkout (a `git worktree` of an older commit) with this venv.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.corpus import build_corpus
from benchmarks.run import ROOT, _append, machine, seeded_model
from ray_pipeline.steps.summary import summary_in

BATCH = 32


def model_alone_rate(resolved, precision: str, images: int = 256) -> float:
    """Images per second of the model alone, in this precision."""
    from ray_pipeline.model.embedders import LocalEmbedder

    embedder = LocalEmbedder(resolved, "cpu", precision=precision)
    pixels = np.random.default_rng(0).integers(0, 256, (BATCH, *resolved.geometry.pixel_shape), dtype=np.uint8)
    embedder.embed(pixels)  # warm-up
    started = time.perf_counter()
    for _ in range(images // BATCH):
        embedder.embed(pixels)
    return images // BATCH * BATCH / (time.perf_counter() - started)


def run(source: Path, args: list[str], cache: Path) -> tuple[float, str, str]:
    """(wall seconds, stdout, stderr) of `python -m ray_pipeline ARGS` from a cold shell."""
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    env.update(PYTHONPATH=str(source), XDG_CACHE_HOME=str(cache))
    started = time.perf_counter()
    completed = subprocess.run([sys.executable, "-m", "ray_pipeline", *args], env=env, cwd=source, capture_output=True,
                               text=True, timeout=3600)
    wall = time.perf_counter() - started
    if completed.returncode != 0:
        raise RuntimeError(f"{args[0]} failed ({completed.returncode}):\n{completed.stderr[-3000:]}")
    return wall, completed.stdout, completed.stderr


def ingest(source: Path, paths: list[str], model_args: list[str], work: Path, name: str, extra: list[str]) -> dict:
    manifest = work / f"{name}.txt"
    manifest.write_text("\n".join(paths) + "\n")
    args = ["ingest", "--manifest", str(manifest), "--collection", name, "--chroma-path", str(work / name), *model_args, *extra]
    wall, stdout, _ = run(source, args, work / "cache")
    summary = summary_in(stdout)
    assert summary is not None and summary["embedded"] == len(paths), summary
    again, stdout, _ = run(source, args, work / "cache")
    assert summary_in(stdout)["embedded"] == 0
    actors = summary.get("actors") or {}
    return {"files": len(paths), "seconds": round(wall, 1), "rerun_seconds": round(again, 2),
            "route": (summary.get("route") or {}).get("kind", "ray_data"), "precision": actors.get("precision", "fp32"),
            "stage_seconds": summary["stage_seconds"]}


def searches(source: Path, work: Path, collection: str) -> dict:
    args = ["search", "a dog on the beach", "--collection", collection, "--chroma-path", str(work / collection), "-k", "5"]
    first, _, _ = run(source, args, work / "cache")
    cold, _, _ = run(source, args, work / "cache")
    return {"first_search_seconds": round(first, 2), "cold_search_seconds": round(cold, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default=str(ROOT), help="the checkout whose command is run (default: this one)")
    parser.add_argument("--label", default="after", help="how RESULTS.md names this run")
    parser.add_argument("--sizes", default="200,2000", help="JPEG counts (default 200,2000)")
    parser.add_argument("--dngs", type=int, default=64)
    parser.add_argument("--extra", default="", help="options added to each ingest (say --inline-max-files 0)")
    parser.add_argument("--corpus", default=str(ROOT / "benchmarks" / "corpus"))
    parser.add_argument("--no-record", action="store_true", help="print, do not append to RESULTS.md")
    args = parser.parse_args()
    source = Path(args.source).resolve()
    sizes = [int(size) for size in args.sizes.split(",") if size]
    files = build_corpus(args.corpus, max(sizes, default=0), args.dngs)
    resolved, _, model_args = seeded_model(Path(args.corpus) / "models", "ViT-B-32")
    rates = {precision: round(model_alone_rate(resolved, precision), 2) for precision in ("fp32", "bf16")}
    print("model alone, images/s:", rates, flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="laptop") as scratch:
        work = Path(scratch)
        batches = [(f"jpeg-{size}", files["jpeg"][:size]) for size in sizes]
        batches += [(f"dng-{args.dngs}", files["dng"][: args.dngs])] if args.dngs else []
        for name, paths in batches:
            row = {"corpus": name, **ingest(source, paths, model_args, work, name, args.extra.split())}
            if name == batches[0][0]:
                row.update(searches(source, work, name))
            alone = len(paths) / rates[row["precision"] if row["precision"] in rates else "fp32"]
            row.update(model_alone_seconds=round(alone, 1), ratio=round(alone / row["seconds"], 2))
            print(json.dumps(row), flush=True)
            rows.append(row)
    text = report(args.label, machine(), rates, rows, args.extra)
    print(text)
    if not args.no_record:
        _append(text)


def report(label: str, facts: dict, rates: dict, rows: list[dict], extra: str) -> str:
    lines = [f"\n### A laptop with no cluster, {label}: `python -m benchmarks.laptop{' --extra ' + repr(extra) if extra else ''}`",
             "", f"- Machine: {facts['cpu']}; {facts['memory']}; GPU: {facts['gpu']}.", f"- {facts['versions']}.",
             f"- Model: ViT-B-32 (seeded random weights), batch {BATCH}; the model alone: {rates['fp32']} images/s in "
             f"fp32, {rates['bf16']} in bf16.", "",
             "| corpus | route | precision | cold command, s | model alone, s | ratio | re-run, s | stage seconds |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['corpus']} | {r['route']} | {r['precision']} | {r['seconds']} | {r['model_alone_seconds']} | "
              f"{r['ratio']} | {r['rerun_seconds']} | {r['stage_seconds']} |" for r in rows]
    first = rows[0] if rows else {}
    if "cold_search_seconds" in first:
        lines += ["", f"Search by text of {first['corpus']}: the first {first['first_search_seconds']} s, then from a cold "
                      f"shell {first['cold_search_seconds']} s."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
