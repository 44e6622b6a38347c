"""People (issue 31), measured on this machine:

    python -m benchmarks.people [--photos 12] [--bulk 48] [--faces 100000] [--records 100000] [--no-record]

- Faces: 12-MP photos (4,000 x 3,000) each holding faces of the two people of `samples.face_photos` pasted in at
  150 to 600 pixels, looked at by the face enrichment's own models (dlib's HOG detector, landmarks, descriptor) as
  the pipeline decodes them, fitted to long sides of 1,000 to 3,000 pixels: the faces found, and photos per second.
- A bulk run (a Ray Data job on a local Ray, `--inline-max-files 0`) with and without `--find-faces`: the
  embedding stage's seconds, and the faces' after it.
- Grouping `--faces` faces of 2,000 people (descriptors in the shape of dlib's) as `people regroup` runs it on a
  local Ray with its graph made by Ray tasks: the command's seconds.
- The `person` filter on the 10^5 records of `benchmarks.filtered_search` (people added to 40% of them, 2,000
  named people): a search by vector and a listing, p50 and p95.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import chromadb
import numpy as np
from PIL import Image
from skimage import data

from benchmarks.filtered_search import timed
from benchmarks.run import ROOT, machine, report, seeded_model
from benchmarks.words import bulk_figures
from ray_pipeline.core import defaults
from ray_pipeline.core.geometry import InputGeometry
from ray_pipeline.files.decode import decode_file
from ray_pipeline.files.reading import read_file
from ray_pipeline.model.faces import FaceFinder
from ray_pipeline.records.enrichments import FACE_SIDE
from ray_pipeline.records.filters import SearchFilters
from ray_pipeline.records.people import FACES, NAME, NAME_KEY, PERSON, PHOTO, PeopleBook
from ray_pipeline.records.store import opened_here
from ray_pipeline.records.target import StoreTarget
from ray_pipeline.search.query import newest_first, top_k
from ray_pipeline.steps.summary import summary_in
from samples.face_photos import grace_hopper
from samples.sample_photos import write_jpeg

FACE_SIZES = (150, 220, 320, 450, 600)  # the faces' sides in a 4,000-pixel-wide photo: a group far off to a portrait
PEOPLE = 2000


def heads() -> list[np.ndarray]:
    """The two people's heads, cut with the margin a face needs to be found (the face about half the cut)."""
    eileen, grace = data.astronaut(), grace_hopper()
    return [eileen[40:260, 140:310], grace[90:420, 120:420]]


def write_photos(folder: Path, count: int) -> tuple[list[Path], int]:
    """`count` 12-MP JPEGs, each with two or three heads of different sizes pasted on a photo without faces."""
    folder.mkdir(parents=True, exist_ok=True)
    background = Image.fromarray(data.coffee()).resize((4000, 3000))
    cut = heads()
    paths, faces = [], 0
    for i in range(count):
        canvas = background.copy()
        sizes = [FACE_SIZES[(i + j) % len(FACE_SIZES)] for j in range(2 + i % 2)]
        left = 100
        for j, size in enumerate(sizes):
            head = Image.fromarray(cut[(i + j) % 2])
            scale = 2 * size / head.width  # the face is about half its head's cut
            canvas.paste(head.resize((round(head.width * scale), round(head.height * scale))), (left, 300 + 200 * j))
            left += round(head.width * scale) + 150
        picture = np.asarray(canvas).copy()
        picture[-1, : i + 1] = 0  # each photo its own bytes
        path = folder / f"faces-{i:03d}.jpg"
        write_jpeg(str(path), picture, quality=90)
        paths.append(path)
        faces += len(sizes)
    return paths, faces


def face_figures(photos: list[Path], faces: int) -> dict:
    finder = FaceFinder()
    figures = {}
    for side in sorted({1000, 1400, 2000, 2600, 3000, FACE_SIDE}):
        geometry = InputGeometry(side, side, "fit")
        found = 0
        started = time.perf_counter()
        for path in photos:
            found += len(finder.find(decode_file(read_file(str(path)), geometry, defaults.MAX_PIXELS).pixels).faces)
        seconds = (time.perf_counter() - started) / len(photos)
        figures[f"long side {side}"] = {"seconds_per_photo": round(seconds, 2), "photos_per_s": round(1 / seconds, 2),
                                        "faces_found": f"{found}/{faces}"}
        print(side, figures[f"long side {side}"], flush=True)
    return figures


def descriptors(count: int, seed: int = 0) -> np.ndarray:
    """Descriptors of PEOPLE people in the shape of dlib's: one person's within about 0.3, two about 1.4 apart."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(PEOPLE, 128)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    noise = rng.normal(size=(count, 128)).astype(np.float32)
    noise *= 0.15 / np.linalg.norm(noise, axis=1, keepdims=True)
    return centres[rng.integers(0, PEOPLE, count)] + noise


def grouping_figures(count: int, work: Path) -> dict:
    """`people regroup` of `count` faces none of which has a person yet, its graph by Ray tasks on a local Ray."""
    folder = work / "grouping"
    target = StoreTarget("grouping", path=str(folder))
    client = chromadb.PersistentClient(str(folder))
    client.create_collection("grouping", embedding_function=None)
    book = PeopleBook.of(client, target, client.get_max_batch_size(), create=True)
    assert book is not None
    vectors = descriptors(count)
    batch = client.get_max_batch_size()
    for start in range(0, count, batch):
        ids = [f"photo{i:07d}:0" for i in range(start, min(count, start + batch))]
        book._faces.upsert(ids=ids, embeddings=vectors[start : start + len(ids)],
                           metadatas=[{PHOTO: face_id[:-2], PERSON: "", "score": 1.0} for face_id in ids])
    del client, book
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "ray_pipeline", "people", "regroup", "--in-process-max", "0",
                           "--collection", "grouping", "--chroma-path", str(folder)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    summary = summary_in(done.stdout)
    figures = {"faces": count, "people made": summary["people"], "people in the data": PEOPLE,
               "command wall s": round(time.perf_counter() - started, 1), "summary": summary}
    print(figures, flush=True)
    return figures


def person_filter_figures(queries: int) -> dict:
    """The `person` filter on the filtered-search corpus of 10^5 records, people added to 40% of it once."""
    corpus = ROOT / "benchmarks" / "corpus"
    resolved, _, _ = seeded_model(corpus / "models", "ViT-B-32")
    target = StoreTarget("filtered-100000", path=str(corpus / "filters-chroma"))
    rng = np.random.default_rng(1)
    popularity = 1.0 / np.arange(1, PEOPLE + 1)  # a few people in many photos, most in few
    popularity /= popularity.sum()
    person_ids = [f"person-{i:012x}" for i in range(PEOPLE)]
    with opened_here(target) as store:
        assert store is not None, "run benchmarks.filtered_search first: it builds the corpus"
        collection = store.collection  # type: ignore[attr-defined]
        book = PeopleBook.of(store.client, target, store.max_batch, create=True)  # type: ignore[attr-defined]
        print("people", book._people.count(), "faces", book._faces.count(), flush=True)
        if not book._people.get(ids=[person_ids[-1]])["ids"]:
            started = time.perf_counter()
            book._people.upsert(ids=person_ids, embeddings=[[1.0]] * PEOPLE,
                                metadatas=[{NAME: f"Person {i}", NAME_KEY: f"person {i}", FACES: 1} for i in range(PEOPLE)])
            ids = store.matching_ids(None, None)
            chosen = [i for i in ids if rng.random() < 0.4]
            for start in range(0, len(chosen), store.max_batch):
                part = chosen[start : start + store.max_batch]
                collection.update(ids=part, metadatas=[{"people": sorted({person_ids[int(p)] for p in rng.choice(
                    PEOPLE, size=int(rng.integers(1, 4)), p=popularity)})} for _ in part])
            print(f"people added to {len(chosen)} records in {time.perf_counter() - started:.0f} s", flush=True)
        if not book._faces.get(limit=1)["ids"]:  # the faces those people's photos hold
            started = time.perf_counter()
            faces = [(f"{photo}:{j}", person, photo) for photo, metadata in store.matching(None, None).items()
                     for j, person in enumerate(metadata.get("people") or [])]
            vectors = descriptors(len(faces), seed=2)
            for start in range(0, len(faces), store.max_batch):
                part = faces[start : start + store.max_batch]
                book._faces.upsert(ids=[face for face, _, _ in part], embeddings=vectors[start : start + len(part)],
                                   metadatas=[{PHOTO: photo, PERSON: person, "score": 1.0} for _, person, photo in part])
            print(f"{len(faces)} faces added in {time.perf_counter() - started:.0f} s", flush=True)
        book._recount(person_ids)  # each person's count of faces, as the product keeps it
        vector = rng.normal(size=resolved.embedding_dim).astype(np.float32)
        vector /= np.linalg.norm(vector)
        figures = {}
        for name, given in (("the most photographed person, by id", [person_ids[0]]),
                            ("a person in about 40 photos, by name", ["Person 500"]),
                            ("a rare person, by name", ["Person 1999"]),
                            ("two people together, by name", ["Person 0", "Person 1"])):
            filters = SearchFilters.parse({"person": given})
            matching = len(store.matching_ids(SearchFilters(person=store.resolve_people(given)).where(), None))
            figures[f"search, {name}"] = {**timed(lambda: top_k(store, vector, 20, filters), queries), "matching": matching}
            figures[f"listing, {name}"] = timed(lambda: newest_first(store, 20, filters), max(3, queries // 4))
            print(name, figures[f"search, {name}"], figures[f"listing, {name}"], flush=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=12, help="12-MP photos with faces (default 12)")
    parser.add_argument("--bulk", type=int, default=48, help="photos of the bulk run (default 48; 0: none)")
    parser.add_argument("--faces", type=int, default=100_000, help="faces to group (default 10^5; 0: none)")
    parser.add_argument("--queries", type=int, default=40, help="timed searches per person filter (default 40; 0: none)")
    parser.add_argument("--no-record", action="store_true", help="print, do not append to RESULTS.md")
    args = parser.parse_args()
    figures: dict = {"machine": machine()}
    with tempfile.TemporaryDirectory(prefix="people") as scratch:
        work = Path(scratch)
        photos, faces = write_photos(work / "photos", max(args.photos, args.bulk))
        if args.photos:
            shown = photos[: args.photos]
            figures["faces"] = face_figures(shown, sum(2 + i % 2 for i in range(len(shown))))
        if args.bulk:
            _, _, model_args = seeded_model(ROOT / "benchmarks" / "corpus" / "models", "ViT-B-32")
            figures["bulk run"] = bulk_figures(photos[: args.bulk], model_args, work, "--find-faces", "faces")
        if args.faces:
            figures["grouping"] = grouping_figures(args.faces, work)
    if args.queries:
        figures["person filter at 10^5 records"] = person_filter_figures(args.queries)
    report("benchmarks.people: faces, grouping, the person filter", figures, record=not args.no_record)


if __name__ == "__main__":
    main()
