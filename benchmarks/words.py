"""Text in photos and places (issue 30), measured on this machine:

    python -m benchmarks.words                 # appended to RESULTS.md
    python -m benchmarks.words --no-record

- OCR: 12-MP photos with signs drawn in at several letter sizes (samples.text_photos), read by the text
  enrichment's own model on one core (decoded as the pipeline decodes them): photos per second per core.
- What downscaling before detection costs: the same photos fitted to a long side of 800 to 2,000 pixels
  (the pipeline's is `enrichments.TEXT_SIDE`), the share of the signs' words found, and the seconds.
- Place lookup: microseconds per record, over random positions and positions in cities.
- A bulk run (a Ray Data job on a local Ray, `--inline-max-files 0`) of N 12-MP photos, with and without
  `--read-text`: the embedding stage's seconds, and the text's after it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.run import ROOT, _append, machine, seeded_model
from ray_pipeline.core import defaults
from ray_pipeline.core.geometry import InputGeometry
from ray_pipeline.files.decode import decode_file
from ray_pipeline.files.reading import read_file
from ray_pipeline.model.text_reader import TextReader
from ray_pipeline.records.enrichments import TEXT_SIDE, words_of
from ray_pipeline.records.places import gazetteer, place_of
from ray_pipeline.steps.summary import summary_in
from samples.sample_photos import real_photos, write_jpeg
from samples.text_photos import Sign, with_signs

LETTERS = (30, 60, 120)  # letter heights on a 4,000-pixel-wide photo: a far sign, a near one, a poster
SIGNS = ["BAKERY OPEN 7AM", "Rue de Rivoli 12", "PHARMACIE", "SALE 50 PERCENT", "Platform 9", "EXIT"]
SUBJECTS = ("coffee", "chelsea", "astronaut", "rocket")


def write_photos(folder: Path, count: int) -> dict[Path, set[str]]:
    """`count` 12-MP JPEGs (4,000 x 3,000), each with three signs of different sizes: {path: the words drawn}."""
    photos, written = real_photos(), {}
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        texts = [SIGNS[(i + j) % len(SIGNS)] for j in range(3)]
        picture = with_signs(photos[SUBJECTS[i % len(SUBJECTS)]], [Sign(t, h) for t, h in zip(texts, LETTERS)], width=4000)
        picture = picture[:3000] if picture.shape[0] >= 3000 else np.pad(picture, ((0, 3000 - picture.shape[0]), (0, 0), (0, 0)), mode="edge")
        picture = picture.copy()
        picture[-1, : i + 1] = 0  # each photo its own bytes: the signs and subjects come round again
        path = folder / f"sign-{i:03d}.jpg"
        write_jpeg(str(path), picture, quality=90)
        written[path] = {word for text in texts for word in words_of(text)}
    return written


def ocr_figures(photos: dict[Path, set[str]]) -> dict:
    reader = TextReader(threads=1)
    figures = {}
    for side in sorted({800, 1000, 1200, 1400, 1600, 2000, TEXT_SIDE}):
        geometry = InputGeometry(side, side, "fit")
        found = wanted = 0
        started = time.perf_counter()
        for path, words in photos.items():
            picture = decode_file(read_file(str(path)), geometry, defaults.MAX_PIXELS).pixels
            read = set(words_of(" ".join(reader.read(picture))))
            found, wanted = found + len(words & read), wanted + len(words)
        seconds = (time.perf_counter() - started) / len(photos)
        figures[f"long side {side}"] = {"seconds_per_photo": round(seconds, 2), "photos_per_s_per_core": round(1 / seconds, 2),
                                        "words_found": f"{found}/{wanted} ({100 * found / wanted:.0f}%)"}
        print(side, figures[f"long side {side}"], flush=True)
    return figures


def place_figures() -> dict:
    gazetteer()  # loaded once per process
    rng = np.random.default_rng(0)
    anywhere = rng.uniform([-60, -180], [70, 180], (20_000, 2))
    in_cities = np.array([(38.72, -9.14), (48.86, 2.35), (40.71, -74.0), (35.68, 139.65)])[rng.integers(0, 4, 20_000)]
    in_cities = in_cities + rng.uniform(-0.1, 0.1, in_cities.shape)
    figures = {}
    for name, positions in (("random positions", anywhere), ("in big cities", in_cities)):
        started = time.perf_counter()
        for lat, lon in positions:
            place_of(float(lat), float(lon))
        figures[f"place lookup, {name}, µs"] = round(1e6 * (time.perf_counter() - started) / len(positions), 1)
    started = time.perf_counter()
    gazetteer.cache_clear()
    gazetteer()
    figures["loading GeoNames' cities, s"] = round(time.perf_counter() - started, 2)
    print(figures, flush=True)
    return figures


def bulk_figures(photos: list[Path], model_args: list[str], work: Path, option: str = "--read-text",
                 count: str = "text_read") -> dict:
    """The same photos through a Ray Data job on a local Ray, without and with the enrichment's `option`; `count`:
    the summary's count of what it made."""
    figures = {}
    manifest = work / "photos.txt"
    manifest.write_text("\n".join(map(str, photos)) + "\n")
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    env["XDG_CACHE_HOME"] = str(work / "cache")
    for label, extra in ((f"without {option}", []), (f"with {option}", [option])):
        args = ["ingest", "--manifest", str(manifest), "--collection", "bulk", "--chroma-path", str(work / label.replace(" ", "")),
                "--inline-max-files", "0", *model_args, *extra]
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "ray_pipeline", *args], env=env, cwd=ROOT, capture_output=True,
                              text=True, timeout=3600)
        wall = time.perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(done.stderr[-3000:])
        summary = summary_in(done.stdout)
        figures[label] = {"wall_s": round(wall, 1), "embedded": summary["embedded"], count: summary.get(count),
                          "stage_seconds": summary["stage_seconds"], "route": summary["route"]["kind"]}
        print(label, figures[label], flush=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=12, help="12-MP photos with signs (default 12)")
    parser.add_argument("--bulk", type=int, default=48, help="photos of the bulk run (default 48; 0: none)")
    parser.add_argument("--no-record", action="store_true", help="print, do not append to RESULTS.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="words") as scratch:
        work = Path(scratch)
        photos = write_photos(work / "photos", max(args.photos, args.bulk))
        figures = {"machine": machine(), **(ocr_figures(dict(list(photos.items())[: args.photos])) if args.photos else {}),
                   **place_figures()}
        if args.bulk:
            _, _, model_args = seeded_model(ROOT / "benchmarks" / "corpus" / "models", "ViT-B-32")
            figures["bulk run"] = bulk_figures(list(photos)[: args.bulk], model_args, work)
    text = f"\n### benchmarks.words: text in photos and places\n\n```\n{figures}\n```\n"
    print(text)
    if not args.no_record:
        _append(text)


if __name__ == "__main__":
    main()
