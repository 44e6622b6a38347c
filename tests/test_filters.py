"""Search filters without Ray: records written by the files' own journey into a real embedded Chroma, and
searched and listed with each filter alone and together, pages of them, captions matched by their
words, malformed filters named, and records of an older layout brought up to date."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from photo_cases import NEWEST_FIRST, SHOOTS, sha256_of, write_shoots
from pydantic import ValidationError

from ray_pipeline.core import defaults
from ray_pipeline.core.geometry import InputGeometry
from ray_pipeline.core.record_keys import FILTER_KEYS
from ray_pipeline.records.enrichments import LAYOUT_KEY, RECORD_LAYOUT, folders_of, taken_keys
from ray_pipeline.records.filters import SearchFilters, first_error
from ray_pipeline.records.store import opened_for_writing, opened_here
from ray_pipeline.records.target import StoreTarget
from ray_pipeline.search.query import newest_first, top_k
from ray_pipeline.steps.journey import DuplicateRegistry, Journey

pytestmark = pytest.mark.unit

MODEL = {"model": "tiny-clip", "weights": "test", "embedding_dim": len(SHOOTS)}


_VECTORS = np.random.default_rng(7).normal(size=(len(SHOOTS), len(SHOOTS)))


def vector_of(index: int) -> np.ndarray:
    """Each photo's own direction (no two at the same distance from another): a query along it finds that
    photo first."""
    return _VECTORS[index] / np.linalg.norm(_VECTORS[index])


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    root = tmp_path_factory.mktemp("shoots")
    write_shoots(root)
    return root


@pytest.fixture
def store(library, tmp_path):
    """The library's records, as an ingestion writes them, with vectors that make rankings known."""
    with opened_for_writing(StoreTarget("filters", path=str(tmp_path / "chroma")), MODEL) as opened:
        journey = Journey(opened, DuplicateRegistry().claim, InputGeometry(64, 64), defaults.MAX_PIXELS)
        files = journey.run([str(library / shoot.name) for shoot in SHOOTS])
        assert [f.reason for f in files if f.reason] == []
        opened.upsert([f.id for f in files], np.stack([vector_of(i) for i in range(len(files))]),
                      [f.metadata for f in files])
        yield opened


def names(library, page) -> list[str]:
    by_id = {sha256_of(library / shoot.name): shoot.name for shoot in SHOOTS}
    return [by_id[result["id"]] for result in page.results]


def test_records_carry_the_keys_filters_need(library, store):
    sunset, scan = (store.records([sha256_of(library / name)])[sha256_of(library / name)]
                    for name in ("beach/2019/sunset.jpg", "scan.png"))
    assert sunset["folders"] == folders_of(str(library / "beach/2019/sunset.jpg"))
    assert sunset["folders"][-2:] == [str(library / "beach"), str(library / "beach/2019")]
    assert sunset["taken_at"] == int(dt.datetime(2019, 7, 14, 10, 30, tzinfo=dt.timezone.utc).timestamp())
    assert (sunset["taken_day"], sunset["taken_month"]) == ("2019-07-14", "2019-07")
    assert (sunset["has_gps"], sunset["has_caption"]) == (True, False)
    assert "taken_at" not in scan and scan["has_gps"] is False
    assert (sunset["place_city"], sunset["place_country"]) == ("Copacabana", "Brazil") and "place_region" not in sunset
    assert sunset["place_names"] == ["copacabana", "rio de janeiro", "brazil"]
    assert not any(key.startswith("place_") for key in scan)
    assert store.metadata[LAYOUT_KEY] == RECORD_LAYOUT


# Each filter alone, then together: the photos it lets through.
CASES = [
    ({"date_from": "2021-01-01"}, {"city/2021/street.jpg", "city/2021/night.heic", "city/2022/market.jpg"}),
    ({"date_from": "2019-07-15", "date_to": "2021-03-02"},
     {"beach/2019/noon.jpg", "city/2021/street.jpg", "city/2021/night.heic"}),
    ({"date_to": "2019-07-14"}, {"beach/2019/sunset.jpg"}),
    ({"camera_make": "Canon"}, {"city/2021/street.jpg", "city/2022/market.jpg"}),
    ({"camera_model": "X100V"}, {"beach/2019/sunset.jpg", "beach/2019/noon.jpg"}),
    ({"lens": "RF24-105mm F4L"}, {"city/2021/street.jpg", "city/2022/market.jpg"}),
    ({"iso_min": 800}, {"city/2021/street.jpg", "city/2021/night.heic", "city/2022/market.jpg"}),
    ({"iso_min": 150, "iso_max": 1600}, {"beach/2019/sunset.jpg", "city/2021/night.heic", "city/2022/market.jpg"}),
    ({"exposure_min": 1 / 100}, {"city/2021/street.jpg", "city/2021/night.heic", "city/2022/market.jpg"}),
    ({"exposure_max": 1 / 100}, {"beach/2019/sunset.jpg", "beach/2019/noon.jpg"}),
    ({"focal_min": 20, "focal_max": 30}, {"beach/2019/sunset.jpg", "beach/2019/noon.jpg"}),
    ({"gps_box": "48,2,49,3"}, {"city/2021/street.jpg", "city/2022/market.jpg"}),  # Paris
    ({"gps_box": {"south": -30, "west": -50, "north": 0, "east": -40}}, {"beach/2019/sunset.jpg"}),  # Rio
    ({"gps_box": "30,130,40,-170"}, {"city/2021/night.heic"}),  # across the 180th meridian: Tokyo
    ({"folder": "beach"}, {"beach/2019/sunset.jpg", "beach/2019/noon.jpg"}),
    ({"folder": "city/2021/"}, {"city/2021/street.jpg", "city/2021/night.heic"}),
    ({"format": "heic,png"}, {"city/2021/night.heic", "scan.png"}),
    ({"format": ["DNG"]}, {"raw/flower.dng"}),
    ({"raw": True}, {"raw/flower.dng"}),
    ({"has_gps": True}, {"beach/2019/sunset.jpg", "city/2021/street.jpg", "city/2021/night.heic", "city/2022/market.jpg"}),
    ({"has_gps": False}, {"beach/2019/noon.jpg", "raw/flower.dng", "scan.png"}),
    ({"has_caption": False}, {shoot.name for shoot in SHOOTS}),
    ({"camera_make": "Canon", "date_from": "2022-01-01", "has_gps": True, "folder": "city"}, {"city/2022/market.jpg"}),
    ({"raw": False, "iso_max": 250, "format": "jpg"}, {"beach/2019/sunset.jpg", "beach/2019/noon.jpg"}),
    ({"camera_model": "X100V", "has_caption": True}, set()),
    ({"camera_model": "x100v"}, set()),  # exactly as EXIF gives it
    # Places, from GPS by GeoNames' cities: any letter case; a district (Copacabana) is also in its city.
    ({"place": "Paris"}, {"city/2021/street.jpg", "city/2022/market.jpg"}),
    ({"place": "rio de janeiro"}, {"beach/2019/sunset.jpg"}),
    ({"place": "Copacabana"}, {"beach/2019/sunset.jpg"}),
    ({"place": "  JAPAN "}, {"city/2021/night.heic"}),
    ({"place": "Tokyo"}, {"city/2021/night.heic"}),
    ({"place": "Lisbon"}, set()),
    ({"place": "France", "camera_make": "Canon", "date_from": "2022-01-01"}, {"city/2022/market.jpg"}),
]


def filters_for(library, given: dict) -> SearchFilters:
    if "folder" in given:
        given = {**given, "folder": str(library / given["folder"])}
    return SearchFilters.parse(given)


@pytest.mark.parametrize("given, expected", CASES)
def test_each_filter_alone_and_together_in_a_search_and_a_listing(library, store, given, expected):
    filters = filters_for(library, given)
    listed = newest_first(store, 100, filters)
    assert set(names(library, listed)) == expected
    assert listed.total == len(expected)
    for index in range(len(SHOOTS)):  # whichever photo the query is nearest to, k results when k match
        found = top_k(store, vector_of(index), k=2, filters=filters)
        assert len(found.results) == min(2, len(expected))
        assert set(names(library, found)) <= expected
        if SHOOTS[index].name in expected:
            assert names(library, found)[0] == SHOOTS[index].name
    assert found.total is None  # Chroma does not count a filtered query's matches


@pytest.mark.parametrize("first, last", [
    ("2019-07-01", "2019-07-31"), ("2019-07-02", "2019-07-30"), ("2019-12-31", "2020-01-01"), ("2020-02-01", "2020-02-29"),
    ("2019-01-15", "2021-06-14"), ("2020-03-01", "2020-03-01"), ("2019-11-30", "2020-03-01"),
])
def test_a_closed_date_range_matches_exactly_its_days(first, last):
    """A closed range becomes months and days matched by equality: the same days as the range of numbers."""
    where = SearchFilters(date_from=first, date_to=last).where()
    clauses = where.get("$or", [where])
    months = next((c["taken_month"]["$in"] for c in clauses if "taken_month" in c), [])
    days = next((c["taken_day"]["$in"] for c in clauses if "taken_day" in c), [])
    for offset in range(3 * 366):
        day = dt.date(2018, 12, 1) + dt.timedelta(days=offset)
        keys = taken_keys(f"{day.isoformat()}T12:00:00")
        matched = keys["taken_month"] in months or keys["taken_day"] in days
        assert matched == (dt.date.fromisoformat(first) <= day <= dt.date.fromisoformat(last)), day
    assert len(days) <= 62  # only the ends are spelt out by day


def test_a_listing_is_newest_first_in_pages(library, store):
    everything = newest_first(store, 100)
    assert names(library, everything) == NEWEST_FIRST
    assert everything.total == len(SHOOTS) and all(r["score"] is None for r in everything.results)
    pages = [newest_first(store, 3, offset=offset) for offset in (0, 3, 6, 9)]
    assert sum((names(library, page) for page in pages), []) == names(library, everything)
    assert [len(page.results) for page in pages] == [3, 3, 1, 0]


def test_search_pages_follow_one_another(library, store):
    query = vector_of(2)
    whole = names(library, top_k(store, query, k=len(SHOOTS)))
    pages = [top_k(store, query, k=2, offset=offset) for offset in range(0, len(SHOOTS) + 2, 2)]
    assert sum((names(library, page) for page in pages), []) == whole
    assert pages[0].total == len(SHOOTS) and pages[-1].results == []
    scores = [r["score"] for page in pages for r in page.results]
    assert scores == sorted(scores, reverse=True)


def test_captions_are_matched_by_their_words(library, store):
    beach, street = (sha256_of(library / name) for name in ("beach/2019/sunset.jpg", "city/2021/street.jpg"))
    store.enrich({beach: {"caption": "A couple walking on the Beach at sunset"}, street: {"caption": "a busy street, with a bus"}})
    assert store.records([beach])[beach]["caption"] == "A couple walking on the Beach at sunset"  # as written

    def matching(words: str, **more) -> set[str]:
        filters = SearchFilters.parse({"caption_words": words, **more})
        listed = set(names(library, newest_first(store, 100, filters)))
        assert set(names(library, top_k(store, vector_of(0), 10, filters))) == listed
        return listed

    assert matching("beach") == matching("BEACH sunset") == {"beach/2019/sunset.jpg"}
    assert matching("bus") == {"city/2021/street.jpg"}  # a whole word: "busy" is not "bus"
    assert matching("busy street!") == {"city/2021/street.jpg"}
    assert matching("beach street") == set()  # every word must be there
    assert matching("bea") == set()
    assert matching("a", camera_make="Canon") == {"city/2021/street.jpg"}
    with_caption = SearchFilters(has_caption=True)
    assert set(names(library, newest_first(store, 100, with_caption))) == {"beach/2019/sunset.jpg", "city/2021/street.jpg"}


@pytest.mark.parametrize("given, message", [
    ({"camera_modle": "X100V"}, "camera_modle: Extra inputs are not permitted"),
    ({"date_from": "2019-02-30"}, "date_from: Input should be a valid date"),
    ({"date_to": "last year"}, "date_to: Input should be a valid date"),
    ({"gps_box": "50,0,40,10"}, "gps_box: Value error, south (50.0) is above north (40.0)"),
    ({"gps_box": "1,2,3"}, "gps_box: Value error, four numbers are needed"),
    ({"gps_box": "0,0,95,10"}, "gps_box.north: Input should be less than or equal to 90"),
    ({"iso_min": "many"}, "iso_min: Input should be a valid number"),
    ({"iso_min": 800, "iso_max": 100}, "iso_max: Value error, is below iso_min (800.0)"),
    ({"date_from": "2020-01-01", "date_to": "2019-12-31"}, "date_to: Value error, is below date_from (2020-01-01)"),
    ({"date_to": "9999-12-31"}, "date_to: Input should be less than or equal to 9998-12-31"),
    ({"focal_min": "inf"}, "focal_min: Input should be a finite number"),
    ({"format": "jpg,mov"}, "format: Value error, unknown format mov"),
    ({"folder": "relative/path"}, "folder: Value error, an absolute path is needed"),
    ({"raw": "perhaps"}, "raw: Input should be a valid boolean"),
    ({"caption_words": "!!"}, "caption_words: Value error, no word in it"),
    ({"place": "   "}, "place: Value error, no name in it"),
])
def test_a_malformed_filter_is_named(given, message):
    with pytest.raises(ValidationError) as raised:
        SearchFilters.parse(given)
    assert message in first_error(raised.value)


def test_filters_are_data_never_text_built_from_input():
    hostile = '"}, {"$or": [{"is_raw": true}]}'
    where = SearchFilters.parse({"camera_model": hostile, "folder": "/x/$contains"}).where()
    assert where == {"$and": [{"camera_model": {"$eq": hostile}}, {"folders": {"$contains": "/x/$contains"}}]}


def test_one_format_under_two_extensions_is_matched_by_either():
    assert SearchFilters.parse({"format": "JPG,tif"}).where() == {"format": {"$in": ["jpeg", "jpg", "tif", "tiff"]}}
    assert SearchFilters.parse({"format": "hif,avif"}).where() == {"format": {"$in": ["avif", "heic", "heif", "hif"]}}


def test_records_written_before_filters_get_their_keys_at_the_next_ingestion(library, store, tmp_path, monkeypatch):
    """A collection of the old layout (no filter keys, captions only in metadata): searching it with filters
    warns, and opening it for writing, as an ingestion does, brings every record up to date, batch by batch."""
    from chromadb.api.client import Client

    monkeypatch.setattr(Client, "get_max_batch_size", lambda self: 3)  # several batches of the 7 records
    old = store.collection
    records = old.get(include=["metadatas", "embeddings"])
    target = StoreTarget("older", path=str(tmp_path / "older"))
    with opened_for_writing(target, MODEL) as written:
        written.client.delete_collection("older")
        legacy = written.client.create_collection("older", metadata=MODEL, configuration={"hnsw": {"space": "cosine"}},
                                                  embedding_function=None)
        stripped = [{k: v for k, v in m.items() if k not in FILTER_KEYS} for m in records["metadatas"]]
        stripped[0]["caption"] = "a dog on the sand"
        legacy.add(ids=records["ids"], embeddings=records["embeddings"], metadatas=stripped)
    with opened_here(target) as reading:  # a search: read only
        assert reading.outdated
        page = newest_first(reading, 100, SearchFilters(camera_make="Canon"))
        assert "written before search filters" in page.warning
        assert newest_first(reading, 100, SearchFilters(date_from=dt.date(2000, 1, 1))).results == []
    with opened_for_writing(target, MODEL) as ingesting:  # an ingestion opens it for writing
        assert not ingesting.outdated
        again = newest_first(ingesting, 100, SearchFilters(date_from=dt.date(2021, 1, 1)))
        assert len(again.results) == 3 and again.warning is None
        assert len(newest_first(ingesting, 100, SearchFilters(caption_words="dog", has_caption=True)).results) == 1
        assert len(newest_first(ingesting, 100, SearchFilters.parse({"place": "paris"})).results) == 2  # places too
        after = ingesting.collection.get(ids=records["ids"], include=["embeddings"])
        before = dict(zip(records["ids"], records["embeddings"]))
        for record_id, vector in zip(after["ids"], after["embeddings"]):  # nothing embedded again
            np.testing.assert_allclose(vector, before[record_id], atol=1e-6)
