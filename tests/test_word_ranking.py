"""How a search by words ranks records, on a real embedded Chroma without Ray: records holding every word of the
query come before those holding some, however many hold some; a moved file's name is its new words."""

from __future__ import annotations

import numpy as np
import pytest

from ray_pipeline.records.filters import SearchFilters
from ray_pipeline.records.store import opened_for_writing
from ray_pipeline.records.target import StoreTarget
from ray_pipeline.search import words as words_module
from ray_pipeline.search.words import fused, query_words

pytestmark = pytest.mark.unit

MODEL = {"model": "tiny-clip", "weights": "test", "embedding_dim": 4}


@pytest.fixture
def store(tmp_path):
    with opened_for_writing(StoreTarget("ranking", path=str(tmp_path / "chroma")), MODEL) as opened:
        yield opened


def write(store, texts: dict[str, str]) -> None:
    vectors = np.random.default_rng(0).normal(size=(len(texts), 4)).astype(np.float32)
    store.upsert(list(texts), vectors / np.linalg.norm(vectors, axis=1, keepdims=True),
                 [{"path": f"/p/{i}.jpg", "filename": f"{i}.jpg", "text": text} for i, text in texts.items()])


def test_records_holding_every_word_come_first_however_many_hold_one(store, monkeypatch):
    monkeypatch.setattr(words_module, "WORDS_MAX", 10)
    write(store, {**{f"street{i:02d}": "Rua Augusta LISBON" for i in range(30)}, "sign": "LISBON BAKERY", "other": "BAKERY"})
    found = fused(store, np.ones(4, np.float32) / 2, "lisbon bakery", 5, SearchFilters(), "words")
    assert [f.hit[0] for f in found][0] == "sign"  # both words; 30 records hold one of them
    assert len(found) == 10 and found[0].matched == ["text"]


def test_a_query_of_common_words_finds_nothing_by_words(store):
    write(store, {"a": "THE PHOTO"})
    assert query_words("the photo of a") == []
    assert fused(store, np.ones(4, np.float32) / 2, "the photo of a", 5, SearchFilters(), "words") == []
    assert [f.matched for f in fused(store, np.ones(4, np.float32) / 2, "the photo", 5, SearchFilters(), "both")] == [["vector"]]


def test_a_moved_files_new_name_is_found_and_its_old_one_is_not(store):
    store.upsert(["x"], np.eye(4, dtype=np.float32)[:1], [{"path": "/p/market.jpg", "filename": "market.jpg"}])
    query = np.ones(4, np.float32) / 2
    assert [f.hit[0] for f in fused(store, query, "market", 5, SearchFilters(), "words")] == ["x"]
    store.merge_metadata({"x": {"path": "/q/harbour.jpg", "filename": "harbour.jpg"}})  # as a move is recorded
    assert [f.hit[0] for f in fused(store, query, "harbour", 5, SearchFilters(), "words")] == ["x"]
    assert fused(store, query, "market", 5, SearchFilters(), "words") == []
