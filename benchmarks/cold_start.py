"""Cold runs: what one `ingest` command costs before and after its work, as a timeline, and what a
small job costs on a running cluster.

    python -m benchmarks.cold_start                  # both parts, appended to RESULTS.md
    python -m benchmarks.cold_start --no-record --runs 1
    python -m benchmarks.cold_start --source /tmp/before --label "before (8779b2e)" --modes default

Part 1, `make demo`'s ingestion: the six sample photos, ViT-B-32 with seeded random weights
(`--allow-random-weights`, as offline), a fresh embedded Chroma, no Ray cluster running. Each mode runs
`--runs` times; the median run's timeline comes from the moments its output lines arrived.
Part 2, 32 12-MP JPEGs and 16 24-MP DNGs (half with a preview) of the benchmark corpus: the command on
a running `ray start --head`, against the earlier system's loop in one process (full-size decoding one
file after another, then batched embedding), on the same ViT-B-32 checkpoint.

`--source DIR` runs the command of another checkout (a `git worktree` of an older commit, say) with
this venv, to measure before and after on the same machine.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.corpus import build_corpus
from benchmarks.run import ROOT, _append, earlier_approach, machine, seeded_model
from ray_pipeline.cluster.runtime import token_for_new_head
from ray_pipeline.steps.summary import summary_in

# (event, the output line that marks it); events are listed in the order they happen, which differs
# between the paths (the in-process path starts no Ray; the Ray path loads the model while Ray starts).
MARKERS = [
    ("OpenCLIP imported, hub tried", re.compile(r"cannot load pretrained weights")),
    ("model built (driver)", re.compile(r"RANDOM WEIGHTS: the vectors of")),
    ("Ray joined or started", re.compile(r"running on ")),
    ("Ray Data plan submitted", re.compile(r"Starting execution of Dataset")),
    ("actors started; files read, decoded, embedded", re.compile(r"execution finished")),
    ("records written, summary printed", re.compile(r'^\{"collection"')),
]
MODES = {
    "default": [],  # as `make demo` runs it: in this process when no cluster runs (a local Ray before)
    "ray": ["--inline-max-files", "0"],  # through a local Ray, as any larger job without a cluster
}


def timed_lines(command: list[str], env: dict, cwd: str) -> tuple[float, list[tuple[float, str]], int]:
    """(wall seconds, [(seconds since start, line)] of stdout and stderr as they arrived, exit code)."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)
    lines: list[tuple[float, str]] = []

    def read(stream) -> None:
        for line in stream:
            lines.append((time.perf_counter() - started, line.rstrip("\n")))

    readers = [threading.Thread(target=read, args=(s,)) for s in (process.stdout, process.stderr)]
    for reader in readers:
        reader.start()
    code = process.wait()
    wall = time.perf_counter() - started
    for reader in readers:
        reader.join()
    return wall, sorted(lines), code


def timeline(wall: float, lines: list[tuple[float, str]]) -> list[tuple[str, float, float]]:
    """[(event, seconds since start, seconds since the event before)] up to the process's exit."""
    events = sorted((at, event) for event, marker in MARKERS
                    if (at := next((t for t, line in lines if marker.search(line)), None)) is not None)
    events.append((wall, "process exited"))
    return [(event, at, at - (events[i - 1][0] if i else 0.0)) for i, (at, event) in enumerate(events)]


def ingest_command(paths: list[str], chroma: str, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "ray_pipeline", "ingest", *paths, "--collection", "cold", "--chroma-path", chroma, *extra]


def demo_runs(source: Path, mode: str, runs: int, work: Path) -> dict:
    """`make demo`'s ingestion, `runs` times with a fresh Chroma each; the median run and all walls."""
    photos = work / "demo_photos"
    if not photos.exists():
        subprocess.run([sys.executable, "-m", "samples.sample_photos", str(photos)], check=True, cwd=ROOT,
                       capture_output=True)
    env = {key: value for key, value in os.environ.items() if key not in ("RAY_ADDRESS", "RAY_AUTH_MODE")}
    env["PYTHONPATH"] = str(source)
    measured = []
    for run in range(runs):
        chroma = work / f"chroma-{mode}-{run}"
        shutil.rmtree(chroma, ignore_errors=True)
        command = ingest_command([str(photos)], str(chroma), ["--allow-random-weights", *MODES[mode]])
        wall, lines, code = timed_lines(command, env, str(source))
        if code != 0:
            raise RuntimeError(f"the demo ingestion failed ({code}):\n" + "\n".join(line for _, line in lines[-20:]))
        summary = summary_in("\n".join(line for _, line in lines))
        assert summary["embedded"] == 6, summary
        measured.append({"wall": wall, "timeline": timeline(wall, lines), "summary": summary})
        print(f"[demo, {mode}] run {run + 1}: {wall:.1f} s", flush=True)
    median = sorted(measured, key=lambda m: m["wall"])[len(measured) // 2]
    return {**median, "walls": [round(m["wall"], 1) for m in measured]}


class RayHead:
    """A `ray start --head` of its own (its own temp folder and ports), with `source` on the workers' path."""

    def __init__(self, source: Path):
        self.temp = tempfile.mkdtemp(prefix="rbh", dir="/tmp")
        self.port = _free_port()
        self.env = {**os.environ, "RAY_AUTH_MODE": "token", "PYTHONPATH": str(source), **token_for_new_head(self.temp)}
        ray = str(Path(sys.executable).with_name("ray"))
        dashboard_port = _free_port()
        self.dashboard = f"http://127.0.0.1:{dashboard_port}"
        subprocess.run([ray, "start", "--head", f"--port={self.port}", "--num-cpus", str(os.cpu_count()),
                        f"--temp-dir={self.temp}", "--disable-usage-stats", f"--dashboard-port={dashboard_port}",
                        f"--dashboard-agent-listen-port={_free_port()}", f"--ray-client-server-port={_free_port()}"],
                       check=True, env=self.env, capture_output=True)
        self.env["RAY_ADDRESS"] = f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        subprocess.run([str(Path(sys.executable).with_name("ray")), "stop", "--force"], env=self.env, capture_output=True)
        shutil.rmtree(self.temp, ignore_errors=True)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cluster_runs(source: Path, paths: list[str], model_args: list[str], runs: int, work: Path) -> dict:
    """The command on a running head, `runs` times with a fresh Chroma each; the median run."""
    head = RayHead(source)
    measured = []
    try:
        for run in range(runs):
            chroma = work / f"chroma-cluster-{run}"
            wall, lines, code = timed_lines(ingest_command(paths, str(chroma), model_args), head.env, str(source))
            if code != 0:
                raise RuntimeError(f"the job failed ({code}):\n" + "\n".join(line for _, line in lines[-20:]))
            summary = summary_in("\n".join(line for _, line in lines))
            assert summary["embedded"] == len(paths), summary
            measured.append({"wall": wall, "timeline": timeline(wall, lines), "summary": summary})
            print(f"[48 photos on a running head] run {run + 1}: {wall:.1f} s", flush=True)
    finally:
        head.stop()
    median = sorted(measured, key=lambda m: m["wall"])[len(measured) // 2]
    return {**median, "walls": [round(m["wall"], 1) for m in measured]}


def report(label: str, facts: dict, demo: dict[str, dict], cluster: dict | None, loop: dict | None) -> str:
    lines = [f"\n### Cold runs, {label}: `python -m benchmarks.cold_start`", "",
             f"- Machine: {facts['cpu']}; {facts['memory']}; GPU: {facts['gpu']}.", f"- {facts['versions']}."]
    for mode, run in demo.items():
        lines += ["", f"`make demo`'s ingestion ({mode}): median {run['wall']:.1f} s of {run['walls']} (job's own "
                      f"`seconds` {run['summary']['seconds']}, stage seconds {run['summary']['stage_seconds']})", "",
                  "| event | at s | since the one before, s |", "|---|---|---|"]
        lines += [f"| {event} | {at:.1f} | {since:.1f} |" for event, at, since in run["timeline"]]
    if cluster is not None:
        lines += ["", f"32 JPEGs (12 MP) and 16 DNGs (24 MP) on a running `ray start --head`: median "
                      f"{cluster['wall']:.1f} s of {cluster['walls']}; the earlier system's loop in one process: "
                      f"{loop['seconds']:.1f} s; ratio {loop['seconds'] / cluster['wall']:.2f}x", "",
                  "| event | at s | since the one before, s |", "|---|---|---|"]
        lines += [f"| {event} | {at:.1f} | {since:.1f} |" for event, at, since in cluster["timeline"]]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default=str(ROOT), help="the checkout whose command is run (default: this one)")
    parser.add_argument("--label", default="after", help="how RESULTS.md names this run")
    parser.add_argument("--modes", default="default,ray", help="demo modes: default (as make demo), ray (--inline-max-files 0)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--corpus", default=str(ROOT / "benchmarks" / "corpus"))
    parser.add_argument("--no-cluster", action="store_true", help="part 1 only")
    parser.add_argument("--no-record", action="store_true", help="print, do not append to RESULTS.md")
    args = parser.parse_args()
    source = Path(args.source).resolve()
    with tempfile.TemporaryDirectory(prefix="cold") as scratch:
        work = Path(scratch)
        demo = {mode: demo_runs(source, mode, args.runs, work) for mode in args.modes.split(",") if mode}
        cluster = loop = None
        if not args.no_cluster:
            files = build_corpus(args.corpus, 32, 16)
            paths = files["jpeg"][:32] + files["dng"][:16]
            _, model, model_args = seeded_model(Path(args.corpus) / "models", "ViT-B-32")
            cluster = cluster_runs(source, paths, model_args, args.runs, work)
            print("[48 photos] the earlier system's loop ...", flush=True)
            loop = statistics.median_high([earlier_approach(paths, model, 32)["seconds"] for _ in range(args.runs)])
            loop = {"seconds": loop}
    text = report(args.label, machine(), demo, cluster, loop)
    print(text)
    if not args.no_record:
        _append(text)


if __name__ == "__main__":
    main()
