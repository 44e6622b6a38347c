"""Filtered search at 10^5 records, warm: the time of one search by text with each kind of filter (the
text embedded by ViT-B-32 on the CPU, then Chroma's query with its `where`), and of listings.

    python -m benchmarks.filtered_search [--records 100000] [--queries 40] [--no-record]

The collection is built once in benchmarks/corpus/ (kept for later runs): random unit vectors of
ViT-B-32's width, with the metadata a library of that size holds: 15 years of capture dates, eight
cameras, folders by year, month and event, GPS on 60% of the photos, 10% RAW, captions on 30%. The
filter keys are made by the product's own `derived_keys`. Each query is timed from the text to the
page of results, in this process, after a warm-up.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import time

import numpy as np

from benchmarks.run import ROOT, report, seeded_model
from ray_pipeline.model.clip import ModelSpec
from ray_pipeline.model.embedders import LocalEmbedder
from ray_pipeline.records.enrichments import derived_keys, document_of
from ray_pipeline.records.filters import SearchFilters
from ray_pipeline.records.store import opened_for_writing, opened_here
from ray_pipeline.records.target import StoreTarget
from ray_pipeline.search.query import newest_first, text_top_k, top_k

CAMERAS = [("FUJIFILM", "X100V"), ("FUJIFILM", "X-T5"), ("Canon", "EOS R5"), ("Canon", "EOS 5D Mark IV"),
           ("NIKON CORPORATION", "NIKON Z 6_2"), ("SONY", "ILCE-7M4"), ("Apple", "iPhone 15"), ("Google", "Pixel 8")]
WORDS = ["beach", "sunset", "dog", "cat", "street", "mountain", "city", "night", "portrait", "market", "snow", "river"]
QUERIES = ["a dog on the beach", "city lights at night", "a portrait of a woman", "snow on the mountains"]


def metadata_of(i: int, rng: np.random.Generator) -> tuple[dict, str | None]:
    taken = dt.datetime(2010, 1, 1) + dt.timedelta(seconds=int(rng.integers(0, 15 * 365 * 86400)))
    make, model = CAMERAS[int(rng.integers(len(CAMERAS)))]
    raw = rng.random() < 0.1
    path = f"/photos/{taken.year}/{taken.month:02d}/event-{int(rng.integers(40)):02d}/IMG_{i:07d}.{'dng' if raw else 'jpg'}"
    metadata = {"path": path, "filename": path.rsplit("/", 1)[1], "format": "dng" if raw else "jpg", "is_raw": raw,
                "file_size": int(rng.integers(10**6, 3 * 10**7)), "width": 6000, "height": 4000,
                "camera_make": make, "camera_model": model, "datetime_original": taken.isoformat(),
                "iso": int(rng.choice([100, 200, 400, 800, 1600, 3200, 6400])),
                "exposure_time": float(rng.choice([1 / 2000, 1 / 500, 1 / 125, 1 / 30, 1 / 4])),
                "focal_length": float(rng.choice([16, 23, 35, 50, 85, 135]))}
    if rng.random() < 0.6:
        metadata.update(gps_lat=float(rng.uniform(-60, 70)), gps_lon=float(rng.uniform(-180, 180)))
    caption = None
    if rng.random() < 0.3:
        caption = " ".join(["a", *rng.choice(WORDS, size=3, replace=False)])
        metadata["caption"] = caption
    return {**metadata, **derived_keys(metadata)}, caption


def build(target: StoreTarget, records: int, dimension: int, collection_metadata: dict) -> None:
    with opened_for_writing(target, collection_metadata) as store:
        if store.count() >= records:
            return
        rng = np.random.default_rng(0)
        for start in range(store.count(), records, store.max_batch):
            ids = [f"{i:064x}" for i in range(start, min(records, start + store.max_batch))]
            vectors = rng.normal(size=(len(ids), dimension)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            made = [metadata_of(int(i, 16), rng) for i in ids]
            store.collection.upsert(ids=ids, embeddings=vectors, metadatas=[m for m, _ in made],
                                    documents=[document_of(m) if c else "" for m, c in made])
            print(f"built {start + len(ids)} records", flush=True)


def timed(call, runs: int) -> dict:
    call()  # warm-up
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        seconds.append(time.perf_counter() - started)
    seconds.sort()
    return {"p50_ms": round(1000 * statistics.median(seconds), 1), "p95_ms": round(1000 * seconds[int(0.95 * (runs - 1))], 1)}


FILTERS = {
    "no filter": {},
    "camera model": {"camera_model": "X100V"},
    "capture year": {"date_from": "2019-01-01", "date_to": "2019-12-31"},
    "capture dates, 10 weeks": {"date_from": "2019-06-10", "date_to": "2019-08-18"},
    "open-ended date": {"date_from": "2023-01-01"},
    "GPS box (Europe)": {"gps_box": "35,-10,60,30"},
    "folder (one year)": {"folder": "/photos/2019"},
    "ISO range": {"iso_min": 800, "iso_max": 3200},
    "RAW": {"raw": True},
    "caption words": {"caption_words": "beach sunset"},
    "camera and year (the issue's example)": {"camera_model": "X100V", "date_from": "2019-01-01", "date_to": "2019-12-31"},
    "combined: camera, year, GPS": {"camera_make": "Canon", "date_from": "2019-01-01", "date_to": "2021-12-31", "has_gps": True},
    "rare: one camera, one month": {"camera_model": "Pixel 8", "date_from": "2020-06-01", "date_to": "2020-06-30"},
    "has GPS": {"has_gps": True},
    "has caption": {"has_caption": True},
    "focal length range": {"focal_min": 35, "focal_max": 85},
    "two: ISO range and GPS box": {"iso_min": 800, "iso_max": 3200, "gps_box": "35,-10,60,30"},
    "two: RAW and open-ended date": {"raw": True, "date_from": "2023-01-01"},
    "two: has GPS and caption words": {"has_gps": True, "caption_words": "beach"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=40, help="timed searches per filter (default 40)")
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--no-record", action="store_true", help="print, do not append to RESULTS.md")
    args = parser.parse_args()
    corpus = ROOT / "benchmarks" / "corpus"
    resolved, _, model_args = seeded_model(corpus / "models", "ViT-B-32")
    embedder = LocalEmbedder(ModelSpec(model_args[1], None, model_args[3]), texts=True)
    target = StoreTarget(f"filtered-{args.records}", path=str(corpus / "filters-chroma"))
    started = time.perf_counter()
    build(target, args.records, resolved.embedding_dim, resolved.collection_metadata())
    # Built once; a later layout is given to the records on this first open for writing (the layout upgrade).
    figures = {"records": args.records, "k": args.k, "build_or_upgrade_s": round(time.perf_counter() - started, 1)}
    with opened_here(target) as store:
        for name, given in FILTERS.items():
            filters = SearchFilters.parse(given)
            queries = iter(QUERIES * args.queries)
            search = timed(lambda: top_k(store, embedder.embed_texts([next(queries)])[0], args.k, filters), args.queries)
            vectors = iter(embedder.embed_texts(QUERIES).tolist() * args.queries)
            store_part = timed(lambda: top_k(store, np.array(next(vectors), np.float32), args.k, filters), args.queries)
            matches = len(store.matching_ids(filters.where(), filters.where_document())) if given else args.records
            figures[f"search, {name}"] = {**search, "store_p50_ms": store_part["p50_ms"], "matching": matches}
            print(name, figures[f"search, {name}"], flush=True)
        figures["text embedding alone"] = timed(lambda: embedder.embed_texts([QUERIES[0]]), args.queries)
        for mode in ("both", "words"):  # the query's words in the records' documents, fused with the vector
            for name in ("no filter", "camera model"):
                filters = SearchFilters.parse(FILTERS[name])
                queries = iter(QUERIES * args.queries)

                def search() -> None:
                    text = next(queries)
                    text_top_k(store, embedder.embed_texts([text])[0], text, args.k, filters, mode=mode)

                figures[f"search by text, mode {mode}, {name}"] = timed(search, args.queries)
                print("words", mode, name, figures[f"search by text, mode {mode}, {name}"], flush=True)
        for name in ("rare: one camera, one month", "folder (one year)", "no filter", "has GPS"):
            filters = SearchFilters.parse(FILTERS[name])
            figures[f"listing newest first, {name}"] = timed(lambda: newest_first(store, args.k, filters), 3 if not FILTERS[name] else 10)
            print("listing", name, figures[f"listing newest first, {name}"], flush=True)
    report(f"benchmarks.filtered_search: {args.records} records, warm", figures, record=not args.no_record)


if __name__ == "__main__":
    main()
