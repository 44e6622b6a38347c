"""Search as photographers use it, over real HTTP on the session's Serve app: filters on a text search, a
photo search and a listing, captions matched by their words, pages, and a 422 naming each malformed
filter. The library (photo_cases.SHOOTS) is ingested once, by the app, with captions."""

from __future__ import annotations

import pytest
import requests
from photo_cases import NEWEST_FIRST, SHOOTS
from serve_app import SHOOTS_COLLECTION, auth

from ray_pipeline.records.filters import words_of


def post_search(service, route="/search", **body):
    return requests.post(f"{service['url']}{route}", headers=auth(service), timeout=60,
                         json={"collection": SHOOTS_COLLECTION, "text": "a photo", "k": 10, **body})


def photo_search(service, photo, route="/search", **fields):
    with open(photo, "rb") as f:
        return requests.post(f"{service['url']}{route}", headers=auth(service), timeout=60, files={"file": (photo.name, f)},
                             data={"collection": SHOOTS_COLLECTION, "k": "10", **fields})


def listing(service, collection=SHOOTS_COLLECTION, **params):
    return requests.get(f"{service['url']}/collections/{collection}/photos", headers=auth(service), params=params, timeout=60)


def names(shoots, response) -> list[str]:
    assert response.status_code == 200, response.text
    by_id = {record["id"]: name for name, record in shoots["records"].items()}
    return [by_id[result["id"]] for result in response.json()["results"]]


def test_filters_on_a_text_search(service, shoots):
    assert set(names(shoots, post_search(service, camera_make="Canon"))) == {"city/2021/street.jpg", "city/2022/market.jpg"}
    assert set(names(shoots, post_search(service, date_from="2021-01-01", date_to="2021-12-31", has_gps=True))) == \
        {"city/2021/street.jpg", "city/2021/night.heic"}
    assert names(shoots, post_search(service, gps_box={"south": 48, "west": 2, "north": 49, "east": 3}, iso_min=1000)) == \
        ["city/2021/street.jpg"]
    assert set(names(shoots, post_search(service, folder=str(shoots["folder"] / "beach"), format=["jpg"]))) == \
        {"beach/2019/sunset.jpg", "beach/2019/noon.jpg"}
    assert set(names(shoots, post_search(service, raw=True))) == {"raw/flower.dng"}
    linked = service["allowed"] / "shoots-link"  # the folder as a user may know it: through a symlink
    linked.symlink_to(shoots["folder"], target_is_directory=True)
    assert set(names(shoots, post_search(service, folder=str(linked / "beach")))) == {"beach/2019/sunset.jpg", "beach/2019/noon.jpg"}
    at_home = post_search(service, place="france").json()["results"]  # GeoNames' names, any letter case
    assert {result["place"] for result in at_home} == {"Paris, France"} and len(at_home) == 2
    assert names(shoots, listing(service, place="Copacabana")) == ["beach/2019/sunset.jpg"]
    found = post_search(service, camera_model="Z9")  # matches nothing: an empty list, not an error
    assert found.status_code == 200 and found.json()["results"] == []


def test_filters_on_a_photo_search(service, shoots):
    night = shoots["folder"] / "city/2021/night.heic"
    assert names(shoots, photo_search(service, night, k="1"))[0] == "city/2021/night.heic"
    others = names(shoots, photo_search(service, night, format="jpg,png", has_gps="false"))
    assert set(others) == {"beach/2019/noon.jpg", "scan.png"}  # the query itself is filtered out
    assert set(names(shoots, photo_search(service, night, date_to="2019-12-31", exposure_max="0.01"))) == \
        {"beach/2019/sunset.jpg", "beach/2019/noon.jpg"}


def test_a_listing_is_newest_first_in_pages_with_filters(service, shoots):
    everything = names(shoots, listing(service, k=100))
    assert everything == NEWEST_FIRST
    assert listing(service).json()["total"] == len(SHOOTS)
    pages = [names(shoots, listing(service, k=3, offset=offset)) for offset in (0, 3, 6)]
    assert sum(pages, []) == everything
    assert names(shoots, listing(service, camera_make="Canon", folder=str(shoots["folder"]))) == \
        ["city/2022/market.jpg", "city/2021/street.jpg"]
    assert names(shoots, listing(service, format=["heic", "dng"])) == ["city/2021/night.heic", "raw/flower.dng"]
    assert listing(service, camera_make="Leica").json() == {"results": [], "offset": 0, "total": 0}
    assert listing(service, collection="no-such-collection").status_code == 404
    assert listing(service, offset=5000).json() == {"results": [], "offset": 5000, "total": len(SHOOTS)}  # any offset


def test_search_pages_follow_one_another(service, shoots):
    whole = names(shoots, post_search(service, k=len(SHOOTS)))
    pages = [names(shoots, post_search(service, k=3, offset=offset)) for offset in (0, 3, 6)]
    assert sum(pages, []) == whole
    assert post_search(service, k=3).json()["total"] == len(SHOOTS)


def test_captions_are_matched_by_their_words(service, shoots):
    captions = {name: record.get("caption") for name, record in shoots["records"].items()}
    assert all(captions.values()), captions  # the ingestion captioned every photo
    name, caption = next((n, c) for n, c in captions.items() if any(len(w) > 2 for w in words_of(c)))
    word = next(w for w in words_of(caption) if len(w) > 2)
    having = {n for n, c in captions.items() if word in words_of(c)}
    assert name in having
    assert set(names(shoots, listing(service, k=100, caption_words=word.upper()))) == having  # alone
    assert set(names(shoots, post_search(service, caption_words=word))) == having  # with a text query
    assert names(shoots, listing(service, caption_words=f"{word} qqqnotaword")) == []
    assert set(names(shoots, listing(service, k=100, has_caption="true"))) == set(captions)


@pytest.mark.parametrize("filters, field", [
    ({"camera_modle": "X100V"}, "camera_modle"),
    ({"date_from": "2019-13-01"}, "date_from"),
    ({"gps_box": "50,0,40,10"}, "gps_box"),
    ({"iso_min": "lots"}, "iso_min"),
    ({"format": "mov"}, "format"),
    ({"offset": -1}, "offset"),
    ({"iso_min": 900, "iso_max": 100}, "iso_max"),
    ({"date_to": "9999-12-31"}, "date_to"),
])
def test_a_malformed_filter_is_a_422_naming_the_field(service, shoots, filters, field):
    """FastAPI's own 422 on every route: each error placed in the body or the query, by its field."""
    as_text = {k: str(v) for k, v in filters.items()}
    scan = shoots["folder"] / "scan.png"
    for response, where in [(post_search(service, **filters), "body"), (post_search(service, "/search/text", **filters), "body"),
                            (photo_search(service, scan, **as_text), "body"),
                            (photo_search(service, scan, "/search/image", **as_text), "body"),
                            (listing(service, **filters), "query")]:
        assert response.status_code == 422, response.text
        assert [where, field] in [error["loc"][:2] for error in response.json()["detail"]], response.text
        assert all(set(error) == {"loc", "msg", "type"} for error in response.json()["detail"])  # what was sent is not echoed


def test_the_search_routes_of_each_kind_answer_alike(service, shoots):
    """POST /search takes either kind; /search/text and /search/image each take one, with the same fields,
    filters and pages. From a page's form, blank fields are ignored and a list may be one field or many."""
    assert names(shoots, post_search(service, "/search/text", camera_make="Canon", k=1, offset=1)) == \
        names(shoots, post_search(service, camera_make="Canon", k=1, offset=1))
    night = shoots["folder"] / "city/2021/night.heic"
    page_form = {"format": "jpg,png", "has_gps": "false", "camera_make": "", "date_from": "", "offset": ""}
    by_photo = {route: names(shoots, photo_search(service, night, route, **page_form)) for route in ("/search", "/search/image")}
    assert set(by_photo["/search"]) == {"beach/2019/noon.jpg", "scan.png"} and by_photo["/search/image"] == by_photo["/search"]
    both = [("format", "png"), ("format", "heic"), ("collection", SHOOTS_COLLECTION), ("k", "10")]
    for route in ("/search", "/search/image"):
        with open(night, "rb") as f:
            repeated = requests.post(f"{service['url']}{route}", headers=auth(service), timeout=60, files={"file": f}, data=both)
        assert set(names(shoots, repeated)) == {"scan.png", "city/2021/night.heic"}
        without_a_photo = requests.post(f"{service['url']}{route}", headers=auth(service), timeout=60,
                                        files={"photo": ("night.heic", b"...")}, data={"collection": SHOOTS_COLLECTION})
        assert without_a_photo.status_code == 422, without_a_photo.text
        assert ["body", "file"] in [error["loc"] for error in without_a_photo.json()["detail"]]
    assert names(shoots, listing(service, format="heic,dng", camera_make="", k="")) == ["city/2021/night.heic", "raw/flower.dng"]
