"""The fast ways a search and a listing ask Chroma give exactly what the plain `where` gives: a filter checked
on a record in hand (`admits`) agrees with Chroma's on every record, each step of `nearest` finds Chroma's own
answer, and a listing walked back month by month is the whole collection's order, page after page. Without Ray,
on a real embedded Chroma of a few hundred records with a library's metadata."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from ray_pipeline.records.enrichments import derived_keys
from ray_pipeline.records.filters import SearchFilters
from ray_pipeline.records.store import opened_for_writing
from ray_pipeline.records.target import StoreTarget
from ray_pipeline.search import nearest as nearest_module
from ray_pipeline.search import newest as newest_module
from ray_pipeline.search.query import newest_first, top_k

pytestmark = pytest.mark.unit

RECORDS = 600
DIMENSION = 16
CAMERAS = [("FUJIFILM", "X100V"), ("Canon", "EOS R5"), ("Apple", "iPhone 15")]
CITIES = [(38.7223, -9.1393), (48.8566, 2.3522), (40.7128, -74.0060)]


def metadata_of(i: int, rng: np.random.Generator) -> dict:
    """A record as ingestion writes it: dates over 2009 to 2024 with empty years, some dated wrong (next year,
    1820), some undated; GPS on most, across the 180th meridian too; captions on some."""
    year = int(rng.choice([2009, 2011, 2012, 2020, 2024]))
    taken = dt.datetime(year, 1, 1) + dt.timedelta(seconds=int(rng.integers(0, 360 * 86400)))
    if i % 97 == 0:
        taken = dt.datetime(dt.date.today().year + 1, 3, 1, 12)  # a camera clock set wrong
    if i % 89 == 0:
        taken = dt.datetime(1820, 5, 1)
    make, model = CAMERAS[i % len(CAMERAS)]
    raw = rng.random() < 0.15
    metadata = {"path": f"/photos/{year}/e{i % 7}/IMG_{i:05d}.{'dng' if raw else 'jpg'}", "format": "dng" if raw else "jpg",
                "is_raw": raw, "camera_make": make, "camera_model": model,
                "iso": int(rng.choice([100, 200, 400, 800, 1600, 3200])), "focal_length": float(rng.choice([23, 35, 50]))}
    if i % 53 != 0:
        metadata["datetime_original"] = taken.isoformat()
    if rng.random() < 0.7:
        metadata.update(gps_lat=float(rng.uniform(-60, 70)), gps_lon=float(rng.uniform(-180, 180)))
        if i % 4 == 0:  # in a city: Lisbon, Paris or New York, within a few km of its centre
            lat, lon = CITIES[i % 3]
            metadata.update(gps_lat=lat + float(rng.uniform(-0.03, 0.03)), gps_lon=lon + float(rng.uniform(-0.03, 0.03)))
    metadata = {**metadata, **derived_keys(metadata)}
    if rng.random() < 0.3:
        metadata["caption"] = " ".join(["a", *rng.choice(["beach", "dog", "city", "night", "snow"], 2, replace=False)])
    return metadata


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    rng = np.random.default_rng(3)
    target = StoreTarget("plans", path=str(tmp_path_factory.mktemp("plans") / "chroma"))
    with opened_for_writing(target, {"model": "plans", "weights": "test", "embedding_dim": DIMENSION}) as opened:
        vectors = rng.normal(size=(RECORDS, DIMENSION)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        ids, metadatas = [f"{i:064x}" for i in range(RECORDS)], [metadata_of(i, rng) for i in range(RECORDS)]
        opened.upsert(ids, vectors, [{k: v for k, v in m.items() if k != "caption"} for m in metadatas])
        opened.enrich({i: {"caption": m["caption"]} for i, m in zip(ids, metadatas) if "caption" in m})  # as captions come
        yield opened


FILTERS = [
    {"iso_min": 400, "iso_max": 1600}, {"has_gps": True}, {"has_gps": False}, {"has_caption": True},
    {"gps_box": "35,-10,60,30"}, {"gps_box": "-20,170,40,-150"}, {"gps_box": "-90,-180,90,180"}, {"gps_box": "10.5,20.5,10.9,20.9"},
    {"camera_model": "X100V"}, {"camera_make": "Canon", "has_gps": True}, {"camera_model": "X100V", "iso_min": 800},
    {"date_from": "2012-01-01", "date_to": "2020-06-30"}, {"date_from": "2020-01-01"}, {"date_to": "2011-12-31"},
    {"raw": True, "gps_box": "-60,-180,0,0"}, {"folder": "/photos/2012", "focal_max": 30}, {"format": "dng", "has_caption": False},
    {"caption_words": "dog"}, {"caption_words": "beach", "iso_max": 400}, {"camera_make": "Apple", "gps_box": "0,0,70,180", "iso_min": 200},
    {"place": "paris"}, {"place": "United States", "iso_min": 800}, {"place": "lisbon", "date_from": "2020-01-01"},
]


@pytest.mark.parametrize("given", FILTERS)
def test_a_filter_checked_on_a_record_agrees_with_chromas_where(store, given):
    filters = SearchFilters.parse(given)
    matching = set(store.matching_ids(filters.where(), filters.where_document()))
    records = store.matching(None, None)
    assert {i for i, metadata in records.items() if filters.admits(metadata)} == matching
    narrowed, exact = filters.narrowing()
    assert set(store.matching_ids(narrowed, filters.where_document())) >= matching  # lets through more, never fewer
    assert exact == (narrowed == filters.where())


@pytest.mark.parametrize("step", ["no filter, checked here", "a faster where, checked here", "the exact where"])
@pytest.mark.parametrize("given", FILTERS)
def test_each_step_of_a_filtered_search_finds_chromas_own_answer(store, given, step, monkeypatch):
    """Each step forced in turn (the steps before it asked for too few to be sure): the same records, in the
    same order, as Chroma's query with the exact where."""
    if step != "no filter, checked here":
        monkeypatch.setattr(nearest_module, "PROBE", 1)
        monkeypatch.setattr(nearest_module, "PROBE_FACTOR", 1)
    if step == "a faster where, checked here":
        monkeypatch.setattr(nearest_module, "NARROW_FACTOR", 1)  # asked for 10, then widened to 20, 40, ...
        monkeypatch.setattr(nearest_module, "WIDEN", 2)
    if step == "the exact where":
        monkeypatch.setattr(nearest_module, "NARROW_FACTOR", 1)
        monkeypatch.setattr(nearest_module, "NARROW_MAX", 1)
    filters = SearchFilters.parse(given)
    rng = np.random.default_rng(len(str(given)))
    for _ in range(3):
        vector = rng.normal(size=DIMENSION).astype(np.float32)
        expected = store.query(vector, 10, filters.where(), filters.where_document())["ids"][0]
        assert [result["id"] for result in top_k(store, vector, 10, filters, collapse=False).results] == expected


@pytest.mark.parametrize("given", [{}, {"camera_model": "X100V"}, {"has_gps": True, "iso_min": 400}, {"caption_words": "city"}])
def test_a_listing_walked_back_month_by_month_is_the_whole_order(store, given, monkeypatch):
    """Read whole, then walked (more records match than are read whole): the same order, page after page,
    the camera clocks set a year ahead first, 1820's and the undated last."""
    filters = SearchFilters.parse(given)
    whole = newest_first(store, RECORDS, filters, collapse=False)
    assert whole.total == len(whole.results) > 20
    ids = [result["id"] for result in whole.results]
    assert whole.results[0]["metadata"]["taken_at"] > dt.datetime.now().timestamp() or given
    monkeypatch.setattr(newest_module, "WHOLE", 10)
    pages = [newest_first(store, 25, filters, offset=offset, collapse=False) for offset in range(0, len(ids) + 25, 25)]
    assert [result["id"] for page in pages for result in page.results] == ids
    assert pages[0].total is None  # walked: the first page reads no further than it needs
    assert pages[-1].total == len(ids)  # ... and one whose walk read every match says how many


def test_a_walk_reads_no_further_back_than_the_page_needs(store, monkeypatch):
    """A first page of 20: the months read hold the page, not the collection (the records of 2024 and the year
    ahead suffice)."""
    monkeypatch.setattr(newest_module, "WHOLE", 10)
    read: list[int] = []
    matching = store.matching
    monkeypatch.setattr(store, "matching", lambda where, document: read.append(len(found := matching(where, document))) or found)
    page = newest_first(store, 20, collapse=False)
    assert len(page.results) == 20 and page.results[-1]["metadata"]["taken_month"].startswith("2024-")
    assert 20 <= sum(read) < RECORDS / 4
