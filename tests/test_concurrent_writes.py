"""Two writers adding to the same records at once, on a real `chroma run` server (as a caption from the Serve app
and a text read by a Ray job's actor would): neither loses the other's fields, and each record's document holds
both's words in the end."""

from __future__ import annotations

import hashlib
import threading

import numpy as np

from ray_pipeline.records.enrichments import derived_keys
from ray_pipeline.records.store import open_store
from ray_pipeline.records.target import StoreTarget

ROUNDS = 12


def test_a_caption_and_a_text_written_at_once_are_both_kept(chroma_server):
    target = StoreTarget("racing", url=chroma_server.url)
    store = open_store(target, {"model": "m", "weights": "w"})
    ids = [hashlib.sha256(f"photo {i}".encode()).hexdigest() for i in range(40)]
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(len(ids), 8)).astype(np.float32)
    metadatas = [{**m, **derived_keys(m)} for m in ({"path": f"/p/{i}.jpg", "filename": f"{i}.jpg"} for i in range(40))]
    store.upsert(ids, vectors, metadatas)
    errors: list[BaseException] = []

    def writer(key: str, word: str, extra: str) -> None:
        own = open_store(target)  # a process of its own would hold a client of its own
        try:
            for round_ in range(ROUNDS):
                own.enrich({record_id: {key: f"{word} {round_}"} for record_id in ids})
                own.merge_metadata({record_id: {extra: round_} for record_id in ids})
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=("caption", "dog", "captioned_round")),
               threading.Thread(target=writer, args=("text", "bakery", "text_round"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    stored = store.collection.get(ids=ids, include=["metadatas", "documents"])  # type: ignore[attr-defined]
    for metadata, document in zip(stored["metadatas"], stored["documents"]):
        assert (metadata["caption"], metadata["text"]) == (f"dog {ROUNDS - 1}", f"bakery {ROUNDS - 1}"), metadata
        assert (metadata["captioned_round"], metadata["text_round"]) == (ROUNDS - 1, ROUNDS - 1), metadata
        assert metadata["has_caption"] is True and metadata["path"].startswith("/p/")
        assert " c:dog " in document and " t:bakery " in document and f" w:{ROUNDS - 1} " in document, document
