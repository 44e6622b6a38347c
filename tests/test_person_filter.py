"""The `person` filter on a real embedded Chroma, without Ray: a person's photos read by id from their faces (a
person in few photos) and Chroma's own `$contains` (a person in many) give the same pages, by vector and newest
first, alone and beside other filters; names and ids alike; several people mean all of them."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from ray_pipeline.model.faces import Face, FacesFound
from ray_pipeline.records.enrichments import derived_keys
from ray_pipeline.records.filters import SearchFilters
from ray_pipeline.records.store import opened_for_writing
from ray_pipeline.records.target import StoreTarget
from ray_pipeline.search import people as people_search
from ray_pipeline.search.query import newest_first, top_k

pytestmark = pytest.mark.unit


def unit(vector: np.ndarray) -> np.ndarray:
    return (vector / np.linalg.norm(vector)).astype(np.float32)


def face_of(person: int) -> Face:
    descriptor = np.zeros(128, np.float32)
    descriptor[person] = 1.0  # people 1.41 apart: never joined
    return Face((0.1, 0.1, 0.3, 0.3), 1.0, descriptor)


@pytest.fixture
def store(tmp_path):
    rng = np.random.default_rng(3)
    ids = [hashlib.sha256(f"photo {i}".encode()).hexdigest() for i in range(40)]
    metadatas = [{**m, **derived_keys(m)} for m in (
        {"path": f"/photos/{i:02d}.jpg", "camera_model": "X100V" if i % 3 else "EOS R5",
         "datetime_original": f"20{10 + i % 12:02d}-05-0{1 + i % 9}T10:00:00"} for i in range(40))]
    with opened_for_writing(StoreTarget("people", path=str(tmp_path)), {"model": "m", "weights": "w"}) as opened:
        opened.upsert(ids, np.stack([unit(rng.normal(size=16)) for _ in ids]), metadatas)
        # Person 0 in every second photo, person 1 in every third, person 2 in photo 5 alone.
        opened.store_faces({photo: FacesFound([face_of(p) for p, every in ((0, 2), (1, 3)) if i % every == 0]
                                              + ([face_of(2)] if i == 5 else []))
                            for i, photo in enumerate(ids)})
        listed = {len(opened.faces_of(person.id)): person.id for person in opened.people()}
        opened.name_person(listed[14], "Ben")
        yield opened, ids, listed


@pytest.mark.parametrize("given", [{"person": "Ben"}, {"person": "ben,{20}"}, {"person": "{1}"},
                                   {"person": "{20}", "camera_model": "X100V"}, {"person": "{14}", "date_from": "2015-01-01"}])
def test_read_by_id_or_by_chromas_filter_the_same_pages(store, given, monkeypatch):
    opened, ids, listed = store
    filters = SearchFilters.parse({key: value.format(*[listed.get(n, "") for n in range(21)]) if key == "person" else value
                                   for key, value in given.items()})
    vector = unit(np.arange(16, dtype=np.float32))
    direct = (top_k(opened, vector, 50, filters).results, newest_first(opened, 50, filters).results)
    monkeypatch.setattr(people_search, "PEOPLE_DIRECT", 0)  # every person "in too many photos": Chroma's `$contains`
    by_chroma = (top_k(opened, vector, 50, filters).results, newest_first(opened, 50, filters).results)
    assert [r["id"] for r in direct[0]] == [r["id"] for r in by_chroma[0]]
    assert [r["score"] for r in direct[0]] == pytest.approx([r["score"] for r in by_chroma[0]], abs=1e-4)
    assert [r["id"] for r in direct[1]] == [r["id"] for r in by_chroma[1]]
    wanted = [i for n, i in enumerate(ids) if all(
        (person == listed[20] and n % 2 == 0) or (person == listed[14] and n % 3 == 0) or (person == listed[1] and n == 5)
        for person in opened.resolve_people(filters.person or []))
        and ("camera_model" not in given or n % 3) and ("date_from" not in given or 10 + n % 12 >= 15)]
    assert sorted(r["id"] for r in direct[0]) == sorted(wanted) and wanted
