"""The decode cost of one camera-sized photo, by format: what a CPU actor (or the warm path) spends on a
file before the model sees it: decoding at the model's input size, turning it upright, reading its EXIF.

    python -m benchmarks.decode_cost [--files 8] [--size 224] [--repeats 3] [--no-record]

From the benchmark corpus (`benchmarks/corpus.py`): 12-MP JPEGs, 24-MP DNGs with and without a
preview, 12-MP HEICs with a 320 x 240 thumbnail (as iPhones write them) and without, and 12-MP AVIFs.
Each file's bytes are read once, decoded once to warm up, then `--repeats` times; the figures are the
median wall and CPU milliseconds per file (libheif decodes a HEIC's tiles on several threads, so its
CPU time can pass its wall time) and the photos one core decodes per second.
"""

from __future__ import annotations

import argparse
import statistics
import time

from benchmarks.corpus import build_corpus
from benchmarks.run import ROOT, report
from ray_pipeline.core import defaults
from ray_pipeline.core.geometry import InputGeometry
from ray_pipeline.files.decode import decode_file
from ray_pipeline.files.reading import read_file


def cost(paths: list[str], geometry: InputGeometry, repeats: int) -> dict:
    walls, cpus = [], []
    for path in paths:
        file = read_file(path)
        decode_file(file, geometry, defaults.MAX_PIXELS)
        for _ in range(repeats):
            wall, cpu = time.perf_counter(), time.process_time()
            decode_file(file, geometry, defaults.MAX_PIXELS)
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
    cpu_s = statistics.median(cpus)
    return {"files": len(paths), "median_ms": round(1000 * statistics.median(walls), 1),
            "median_cpu_ms": round(1000 * cpu_s, 1), "photos_per_s_per_core": round(1 / cpu_s, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=8, help="files of each kind (default 8)")
    parser.add_argument("--size", type=int, default=224, help="the model's input side (ViT-B-32: 224)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-record", action="store_true", help="print, do not append to RESULTS.md")
    args = parser.parse_args()
    n = args.files
    files = build_corpus(str(ROOT / "benchmarks" / "corpus"), jpegs=n, dngs=2 * n, heics=2 * n, avifs=n)
    kinds = {
        "JPEG 12 MP": files["jpeg"][:n],
        "DNG 24 MP, with a preview": [p for p in files["dng"] if "_preview" in p][:n],
        "DNG 24 MP, no preview": [p for p in files["dng"] if "_preview" not in p][:n],
        "HEIC 12 MP, with a 320x240 thumbnail": [p for p in files["heic"] if "_thumbnail" in p][:n],
        "HEIC 12 MP, no thumbnail": [p for p in files["heic"] if "_thumbnail" not in p][:n],
        "AVIF 12 MP": files["avif"][:n],
    }
    geometry = InputGeometry(args.size, args.size)
    figures = {"model input": f"{args.size}x{args.size}"}
    for kind, paths in kinds.items():
        figures[kind] = cost(paths, geometry, args.repeats)
        print(kind, figures[kind], flush=True)
    report("benchmarks.decode_cost: decode cost per photo, by format", figures, record=not args.no_record)


if __name__ == "__main__":
    main()
