"""A re-run of a library with failed files in it, and nothing new: with no Ray cluster running, and on
a running `ray start --head`.

    python -m benchmarks.rerun_failures --no-record
    python -m benchmarks.rerun_failures --source /tmp/before --label "before (d048010)"

The library: 200 12-MP JPEGs of the benchmark corpus, a corrupt JPEG and a dangling symlink, ingested
once with the tiny model; then `--runs` re-runs of the same command, timed from start to exit. The
same library without its two bad files is the baseline. `--source DIR` runs the command of another
checkout (a `git worktree` of an older commit) with this venv.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.cold_start import RayHead
from benchmarks.corpus import build_corpus
from benchmarks.run import ROOT, report, seeded_model
from ray_pipeline.steps.summary import summary_in


def timed(command: list[str], env: dict, cwd: Path) -> tuple[float, dict]:
    started = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=900)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    return wall, summary_in(done.stdout)


def reruns(source: Path, library: Path, chroma: Path, model_args: list[str], env: dict, runs: int) -> dict:
    command = [sys.executable, "-m", "ray_pipeline", "ingest", str(library), "--collection", "reruns",
               "--chroma-path", str(chroma), *model_args]
    timed(command, env, source)  # the first ingestion
    walls, summary = [], {}
    for _ in range(runs):
        wall, summary = timed(command, env, source)
        walls.append(wall)
    return {"median_s": round(statistics.median(walls), 2), "walls_s": [round(w, 2) for w in walls],
            "failed": summary["failed"], "skipped_existing": summary["skipped_existing"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", type=Path, default=ROOT)
    parser.add_argument("--label", default="this checkout")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-record", action="store_true")
    args = parser.parse_args()
    corpus = ROOT / "benchmarks" / "corpus"
    jpegs = build_corpus(str(corpus), jpegs=200, dngs=0)["jpeg"]
    _, _, model_args = seeded_model(corpus / "models", "tiny")
    base = {key: value for key, value in os.environ.items() if key not in ("RAY_ADDRESS",)}
    base["PYTHONPATH"] = str(args.source)
    figures = {"label": args.label}
    with tempfile.TemporaryDirectory(prefix="reruns") as work:
        work = Path(work)
        clean, failing = work / "clean", work / "failing"
        for library in (clean, failing):
            library.mkdir()
            for path in jpegs:
                os.symlink(path, library / os.path.basename(path))
        (failing / "corrupt.jpg").write_bytes(Path(jpegs[0]).read_bytes()[:5000])
        os.symlink(work / "gone.jpg", failing / "dangling.jpg")
        for name, library in (("clean", clean), ("with 2 failed files", failing)):
            figures[f"no cluster, {name}"] = reruns(args.source, library, work / f"chroma-{library.name}-local",
                                                    model_args, base, args.runs)
            print(name, figures[f"no cluster, {name}"], flush=True)
        head = RayHead(args.source)
        try:
            for name, library in (("clean", clean), ("with 2 failed files", failing)):
                figures[f"running head, {name}"] = reruns(args.source, library, work / f"chroma-{library.name}-head",
                                                          model_args, {**base, **head.env}, args.runs)
                print(name, figures[f"running head, {name}"], flush=True)
        finally:
            head.stop()
            shutil.rmtree(work, ignore_errors=True)
    report(f"benchmarks.rerun_failures, {args.label}", figures, record=not args.no_record)


if __name__ == "__main__":
    main()
