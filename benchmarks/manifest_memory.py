"""The driver's memory as a Parquet manifest grows: 10^4 to 10^7 rows, streamed by Ray Data.

    python -m benchmarks.manifest_memory [--rows 10000,100000,1000000,10000000] [--no-record]

The manifests are synthetic: each row names one of a few real photos, ingested once before the runs, so
every run lists N rows and settles them all (a path listed twice is taken once) without reading a
photo: what grows with N is the listing alone. Each run is the CLI as a user runs it, on its own local
Ray; its peak resident memory is the driver's own (the command's process, not Ray's workers), from
`wait4`. A text manifest of the same rows, which the driver reads itself, is measured beside it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.run import ROOT, report
from ray_pipeline.steps.summary import summary_in

ROW_GROUP = 1_000_000  # rows written at a time: the benchmark's own memory stays small too


@dataclass(frozen=True)
class DriverRun:
    returncode: int
    stdout: str
    stderr: str
    peak_mib: float  # the command's own process: its peak resident set
    seconds: float


# The command as `python -m ray_pipeline` runs it (its `main`), saying its own process's peak resident
# memory (VmHWM) as it ends: not its children's (a local Ray's processes), which `wait4` would mix in.
MEASURED = ("import sys\n"
            "from ray_pipeline.cli import main\n"
            "code = main(sys.argv[1:])\n"
            "hwm = open('/proc/self/status').read().split('VmHWM:')[1].split()[0]\n"
            "print(f'driver peak kB: {hwm}', file=sys.stderr, flush=True)\n"
            "sys.exit(code)\n")


def run_measured(args: list[str], env: dict | None = None, timeout: float = 1800) -> DriverRun:
    """`python -m ray_pipeline ARGS`, with the peak resident memory of its own process."""
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", MEASURED, *args], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **(env or {})}, timeout=timeout)
    peaks = [line for line in done.stderr.splitlines() if line.startswith("driver peak kB: ")]
    peak_mib = int(peaks[-1].rsplit(" ", 1)[1]) / 1024 if peaks else float("nan")
    return DriverRun(done.returncode, done.stdout, done.stderr, peak_mib, time.monotonic() - started)


def write_manifest(path: Path, photos: list[str], rows: int) -> None:
    """A Parquet manifest of `rows` rows, each naming one of `photos` in turn."""
    with pq.ParquetWriter(path, pa.schema([("path", pa.string())])) as writer:
        for start in range(0, rows, ROW_GROUP):
            count = min(ROW_GROUP, rows - start)
            writer.write_table(pa.table({"path": [photos[(start + i) % len(photos)] for i in range(count)]}))


def write_text_manifest(path: Path, photos: list[str], rows: int) -> None:
    with open(path, "w") as f:
        for i in range(rows):
            f.write(photos[i % len(photos)] + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="10000,100000,1000000,10000000")
    parser.add_argument("--text-rows", default="10000,1000000", help="the same, as a text manifest the driver reads")
    parser.add_argument("--no-record", action="store_true", help="print only; do not append to RESULTS.md")
    args = parser.parse_args()
    from samples.models import save_tiny_clip
    from samples.sample_photos import write_library

    work = Path(tempfile.mkdtemp(prefix="manifest-memory-"))
    write_library(str(work / "photos"))
    photos = sorted(str(p) for p in (work / "photos").iterdir())
    (work / "model").mkdir()
    config, checkpoint = save_tiny_clip(work / "model", seed=0)
    store = ["--collection", "manifest-memory", "--chroma-path", str(work / "chroma"), "--model", str(config),
             "--checkpoint", str(checkpoint)]
    env = {"RAY_ADDRESS": ""}  # its own local Ray, as on a laptop
    first = run_measured(["ingest", *photos, *store], env)
    assert first.returncode == 0, first.stderr[-2000:]
    rows = []
    for kind, sizes in (("parquet", args.rows), ("text", args.text_rows)):
        for count in (int(n) for n in sizes.split(",") if n):
            manifest = work / f"m{count}.{'parquet' if kind == 'parquet' else 'txt'}"
            (write_manifest if kind == "parquet" else write_text_manifest)(manifest, photos, count)
            run = run_measured(["ingest", "--manifest", str(manifest), *store], env)
            summary = summary_in(run.stdout) or {}
            assert run.returncode == 0 and summary.get("skipped_existing") == len(photos), run.stderr[-3000:]
            rows.append({"manifest": kind, "rows": count, "peak_mib": round(run.peak_mib), "seconds": round(run.seconds, 1)})
            print(rows[-1], flush=True)
            manifest.unlink()
    report("Driver memory by manifest size (`python -m benchmarks.manifest_memory`)", {"runs": rows}, not args.no_record)


if __name__ == "__main__":
    main()
