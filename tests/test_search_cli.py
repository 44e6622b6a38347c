"""Search filters, pages and listings through the CLI as a user runs it, with no Ray cluster: the
library (photo_cases.SHOOTS) ingested by `ingest`, then `search` by text and by photo, and `browse`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT
from photo_cases import NEWEST_FIRST, SHOOTS, write_shoots
from test_where_it_runs import no_cluster_env

from ray_pipeline.steps.summary import summary_in


def run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ray_pipeline", *map(str, args)], check=False, env=no_cluster_env(),
                          cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def library(tmp_path_factory, tiny_model_args):
    root = tmp_path_factory.mktemp("shoots-cli")
    write_shoots(root / "photos")
    chroma = root / "chroma"
    ingested = run("ingest", root / "photos", "--collection", "shoots", "--chroma-path", chroma, *tiny_model_args)
    assert ingested.returncode == 0, ingested.stderr[-3000:]

    def command(name: str, *args) -> subprocess.CompletedProcess:
        """`search` or `browse` on the library's collection."""
        return run(name, *args, "--collection", "shoots", "--chroma-path", chroma)

    return {"root": root / "photos", "command": command}


def found(library, command: str, *args) -> list[str]:
    completed = library["command"](command, *args, "--json")
    assert completed.returncode == 0, completed.stderr[-3000:]
    return [str(Path(r["path"]).relative_to(library["root"])) for r in json.loads(completed.stdout)["results"]]


def test_filters_narrow_a_text_search_a_photo_search_and_a_listing(library):
    root = library["root"]
    assert set(found(library, "search", "a street", "-k", "10", "--camera-make", "Canon")) == {"city/2021/street.jpg", "city/2022/market.jpg"}
    assert set(found(library, "search", "--image", root / "city/2021/night.heic", "-k", "10", "--date-to", "2019-12-31",
                     "--folder", root / "beach")) == {"beach/2019/sunset.jpg", "beach/2019/noon.jpg"}
    assert found(library, "browse", "--gps-box=-30,-50,0,-40") == ["beach/2019/sunset.jpg"]  # a negative south: with "="
    assert found(library, "browse", "--no-has-gps", "--no-raw", "--format", "jpg,png") == ["beach/2019/noon.jpg", "scan.png"]
    assert found(library, "browse", "--iso-min", "800", "--focal-max", "50", "--exposure-min", "0.01") == \
        ["city/2022/market.jpg", "city/2021/night.heic", "city/2021/street.jpg"]
    assert found(library, "browse", "--camera-model", "Z9") == []
    assert found(library, "browse", "--place", "Paris") == ["city/2022/market.jpg", "city/2021/street.jpg"]
    assert found(library, "search", "a city", "--place", "TOKYO") == ["city/2021/night.heic"]


def test_a_result_prints_where_it_was_taken(library):
    printed = library["command"]("browse", "--place", "brazil")
    assert printed.returncode == 0, printed.stderr[-3000:]
    assert "beach/2019/sunset.jpg\n   at Copacabana, Brazil\n" in printed.stdout


def test_a_listing_pages_newest_first_and_prints_its_range(library):
    assert found(library, "browse", "-k", "100") == NEWEST_FIRST
    pages = [found(library, "browse", "-k", "3", "--offset", str(offset)) for offset in (0, 3, 6)]
    assert sum(pages, []) == NEWEST_FIRST
    printed = library["command"]("browse", "-k", "2", "--offset", "2")
    assert printed.returncode == 0, printed.stderr
    lines = printed.stdout.splitlines()
    assert lines[0].startswith("3. 2021-03-02T12:30:00  ") and lines[0].endswith("city/2021/street.jpg")
    assert f"3-4 of {len(SHOOTS)}" in printed.stderr
    none = library["command"]("browse", "--lens", "Noctilux")
    assert none.returncode == 0 and none.stdout.strip() == "no results: none match"


@pytest.mark.parametrize("option, message", [
    (["--date-from", "2019-13-01"], "--date-from: Input should be a valid date"),
    (["--gps-box", "50,0,40,10"], "--gps-box: Value error, south (50.0) is above north (40.0)"),
    (["--format", "mov"], "--format: Value error, unknown format mov"),
    (["--iso-min", "900", "--iso-max", "100"], "--iso-max: Value error, is below iso_min (900.0)"),
    (["--iso-min", "lots"], "--iso-min: Input should be a valid number"),
])
def test_a_malformed_filter_is_a_usage_error_naming_the_option(library, option, message):
    completed = library["command"]("search", "a cat", *option)
    assert completed.returncode == 2
    assert message in completed.stderr


def test_rerunning_ingest_brings_a_collection_written_before_filters_up_to_date(tmp_path, tiny_model_args):
    """An unchanged library whose records lack the filter keys: a search with filters warns, and running
    the same ingest command again fills them in, embedding nothing."""
    import chromadb
    from chromadb.config import Settings

    from ray_pipeline.core.record_keys import FILTER_KEYS
    from ray_pipeline.records.enrichments import LAYOUT_KEY

    write_shoots(tmp_path / "photos")
    chroma = tmp_path / "chroma"
    command = ["ingest", tmp_path / "photos", "--collection", "older", "--chroma-path", chroma, *tiny_model_args]
    assert run(*command).returncode == 0
    client = chromadb.PersistentClient(path=str(chroma), settings=Settings(anonymized_telemetry=False))
    collection = client.get_collection("older")
    records = collection.get(include=["metadatas", "embeddings"])
    collection.delete(ids=records["ids"])  # as written before filters: no filter keys, layout 1
    collection.add(ids=records["ids"], embeddings=records["embeddings"],
                   metadatas=[{k: v for k, v in m.items() if k not in FILTER_KEYS} for m in records["metadatas"]])
    collection.modify(metadata={**collection.metadata, LAYOUT_KEY: 1})
    del collection, client

    def canon() -> subprocess.CompletedProcess:
        return run("browse", "--collection", "older", "--chroma-path", chroma, "--camera-make", "Canon", "--date-from",
                   "2021-01-01", "--json")

    before = canon()
    assert json.loads(before.stdout)["results"] == [] and "written before search filters" in json.loads(before.stdout)["warning"]
    again = run(*command)
    assert again.returncode == 0, again.stderr[-3000:]
    assert summary_in(again.stdout)["embedded"] == 0
    after = canon()
    assert len(json.loads(after.stdout)["results"]) == 2 and "warning" not in after.stdout
