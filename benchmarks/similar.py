"""What `similar` costs: the pairs of 10^4 and 10^5 vectors of ViT-B-32's size (512), in this process and as
Ray tasks on a local Ray, and the whole command over the 10^5-record collection that
benchmarks.filtered_search builds (reading every vector from Chroma included).

    python -m benchmarks.similar [--sizes 10000,100000] [--no-record]

The vectors are random unit vectors with near-duplicates planted (a vector plus a little noise), so the
number of pairs found is known: every planted pair, and nothing else at cosine >= 0.95.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks.run import ROOT, report
from ray_pipeline.records.store import opened_here
from ray_pipeline.records.target import StoreTarget
from ray_pipeline.search import similar

DIMENSIONS = 512
PLANTED = 100  # near-duplicate pairs planted in each size


def planted_vectors(count: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(count, DIMENSIONS)).astype(np.float32)
    copies = rng.choice(count, size=(PLANTED, 2), replace=False)
    vectors[copies[:, 1]] = vectors[copies[:, 0]] + rng.normal(scale=0.1, size=(PLANTED, DIMENSIONS)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def timed(pairs, vectors: np.ndarray) -> dict:
    started = time.perf_counter()
    found = pairs(vectors, similar.DEFAULT_THRESHOLD)
    return {"seconds": round(time.perf_counter() - started, 1), "pairs": len(found)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000", help="vector counts (default 10000,100000)")
    parser.add_argument("--no-record", action="store_true", help="print, do not append to RESULTS.md")
    args = parser.parse_args()
    figures: dict = {"threshold": similar.DEFAULT_THRESHOLD, "block": similar.BLOCK, "planted_pairs": PLANTED}
    for count in (int(size) for size in args.sizes.split(",")):
        vectors = planted_vectors(count)
        figures[f"{count} vectors, in this process"] = timed(similar.pairs_here, vectors)
        figures[f"{count} vectors, Ray tasks"] = timed(similar.pairs_on_ray, vectors)
        print(count, figures[f"{count} vectors, in this process"], figures[f"{count} vectors, Ray tasks"], flush=True)
    target = StoreTarget("filtered-100000", path=str(ROOT / "benchmarks" / "corpus" / "filters-chroma"))
    with opened_here(target) as store:
        if store is not None:  # built by benchmarks.filtered_search
            started = time.perf_counter()
            ids, _, _ = store.vectors()
            read = time.perf_counter() - started
            found = similar.find_similar(store, similar.DEFAULT_THRESHOLD, pairs=similar.pairs_on_ray)
            figures["the command over 10^5 records"] = {"records": len(ids), "reading_vectors_s": round(read, 1),
                                                         "seconds": round(time.perf_counter() - started, 1),
                                                         "groups": len(found.near)}
    report("benchmarks.similar: the pairs of near-duplicate photos", figures, record=not args.no_record)


if __name__ == "__main__":
    main()
