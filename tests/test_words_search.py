"""Search by the words in photos, through the CLI as a user runs it, with no Ray cluster: shop signs read by
the real PP-OCR models (`ingest --read-text`, and `enrich` for a collection ingested without), found by a
search in each mode, with why each result matched; places and text printed under the results."""

from __future__ import annotations

import json
import shutil

import pytest
from test_search_cli import run

from ray_pipeline.steps.summary import summary_in
from samples.sample_photos import write_library
from samples.text_photos import write_shop_signs


@pytest.fixture(scope="module")
def library(tmp_path_factory, tiny_model_args):
    """Three signs and the sample library (no words in them), ingested without reading their text."""
    root = tmp_path_factory.mktemp("words")
    write_shop_signs(root / "photos" / "signs")
    write_library(str(root / "photos" / "plain"))
    ingested = run("ingest", root / "photos", "--collection", "words", "--chroma-path", root / "chroma", *tiny_model_args)
    assert ingested.returncode == 0, ingested.stderr[-3000:]
    return root


def command(library, *args) -> dict:
    completed = run(*args, "--collection", "words", "--chroma-path", library / "chroma")
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed


def results(library, *args) -> list[dict]:
    return json.loads(command(library, *args, "--json").stdout)["results"]


def names(found: list[dict]) -> list[str]:
    return [result["path"].rsplit("/", 1)[1] for result in found]


def test_enrich_reads_the_text_of_a_collection_once_and_search_finds_its_words(library):
    before = results(library, "search", "pharmacie", "--mode", "words")
    assert before == []  # no text read yet, and no file is named so

    enriched = command(library, "enrich", "--read-text")
    summary = json.loads(enriched.stdout.strip().splitlines()[-1])
    assert (summary["records"], summary["text_read"], summary["failed"]) == (9, 9, 0)
    assert "text: 9 of 9 photos done" in enriched.stderr
    again = json.loads(command(library, "enrich", "--read-text").stdout.strip().splitlines()[-1])
    assert again["text_read"] == 0  # every record has its text: none is read twice

    by_words = results(library, "search", "pharmacie", "--mode", "words")
    assert names(by_words) == ["street.jpg"] and by_words[0]["matched"] == ["text"]
    assert by_words[0]["text"] == "Rue de Rivoli 12\nPHARMACIE" and by_words[0]["place"] == "Paris, France"
    both = results(library, "search", "pharmacie", "-k", "3")  # the default: the vector and the words fused
    assert names(both)[0] == "street.jpg" and both[0]["matched"][-1] == "text"
    vector = results(library, "search", "pharmacie", "-k", "12", "--mode", "vector")
    assert all(result["matched"] == ["vector"] for result in vector) and len(vector) == 9
    # A file's name and a place are words of the record too; a word in no record finds nothing.
    assert names(results(library, "search", "bakery", "--mode", "words")) == ["bakery.jpg"]
    assert results(library, "search", "bakery", "--mode", "words")[0]["matched"] == ["text", "filename"]
    assert names(results(library, "search", "lisbon", "--mode", "words")) == ["bakery.jpg"]
    assert results(library, "search", "qqqnotaword", "--mode", "words") == []
    # The filter: every word in the photo's text.
    assert names(results(library, "browse", "--text-words", "soup eur")) == ["menu.jpg"]
    printed = command(library, "search", "rivoli", "--mode", "words").stdout
    assert "street.jpg\n   at Paris, France\n   text: Rue de Rivoli 12\n   matched: text\n" in printed


def test_ingest_reads_the_text_after_the_records_are_written(library, tiny_model_args, tmp_path):
    photos = tmp_path / "more"
    shutil.copytree(library / "photos" / "signs", photos)
    ingested = run("ingest", photos, "--collection", "more", "--chroma-path", tmp_path / "chroma", "--read-text",
                   *tiny_model_args)
    assert ingested.returncode == 0, ingested.stderr[-3000:]
    summary = summary_in(ingested.stdout)
    assert (summary["embedded"], summary["text_read"], summary["route"]["kind"]) == (3, 3, "in_process")
    rerun = run("ingest", photos, "--collection", "more", "--chroma-path", tmp_path / "chroma", "--read-text",
                *tiny_model_args)
    assert summary_in(rerun.stdout)["text_read"] == 0  # stored, and read: nothing to do


def test_captions_without_a_cluster_are_refused_before_any_work(library):
    completed = run("enrich", "--caption", "--collection", "words", "--chroma-path", library / "chroma")
    assert completed.returncode == 2
    assert "--caption needs the Serve application's Captioner deployment on a running Ray cluster" in completed.stderr
    assert run("enrich", "--collection", "words", "--chroma-path", library / "chroma").returncode == 2  # nothing asked
