"""Words: a search by text that also finds the query's words where a record holds them (the text read in the
photo, its caption, its place, its file's name), ranked with the vector's match by reciprocal rank fusion.

A photo of a sign saying "bakery" comes first for "bakery" even where CLIP ranks it lower: the words rank a
record by how many of the query's words it holds, the vector by its similarity, and each record scores
1 / (RRF_K + its rank) in each list it is in (Cormack et al., 2009). Chroma finds the words in each record's
document (`records.enrichments.document_of`), with the filters in the same query.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ray_pipeline.records.enrichments import (CAPTION_WORD, NAME_WORD, PLACE_WORD, TEXT_WORD, WORD, sourced_words,
                                              words_of)
from ray_pipeline.records.filters import SearchFilters
from ray_pipeline.records.store import RecordStore
from ray_pipeline.search.nearest import Hit, nearest

MODES = ("vector", "words", "both")
RRF_K = 60  # the constant of reciprocal rank fusion: a first place is worth 1/61
VECTOR_DEPTH = 100  # the vector's list that is fused: this many at least
WORDS_MAX = 200  # records the words rank at most (those holding the most of the query's words first)
# Words of a query that say nothing of a photo: matched, they would rank every record.
STOPWORDS = frozenset("""a an and are as at be by for from has have in into is it its of on or that the this to
was were with photo photos picture pictures image images""".split())
# Where a query's word was found, as a result's `matched` names it, by the mark of its source in the document.
SOURCES = {TEXT_WORD: "text", CAPTION_WORD: "caption", PLACE_WORD: "place", NAME_WORD: "filename"}


def query_words(text: str) -> list[str]:
    """The words of a query that are looked for: each once, in lower case, less the stopwords and single letters."""
    return [word for word in dict.fromkeys(words_of(text)) if word not in STOPWORDS and (len(word) > 1 or word.isdigit())]


@dataclass(frozen=True)
class Found:
    """A record a search by text found: its hit (id, metadata, cosine where the vector found it) and why."""

    hit: Hit
    matched: list[str]  # "vector", and where the query's words are: "text", "caption", "place", "filename"


def matched_in(metadata: dict, words: list[str]) -> list[str]:
    """Where in a record the query's words are (`SOURCES`' names, in their order)."""
    wanted = set(words)
    held = sourced_words(metadata)
    return [name for mark, name in SOURCES.items() if wanted & set(held[mark])]


def word_hits(store: RecordStore, words: list[str], filters: SearchFilters) -> list[tuple[str, dict, int]]:
    """The records holding the words that the filters let through, (id, metadata, how many of the words);
    WORDS_MAX at most: those holding every word first, then those holding any (`fused` orders them)."""
    if not words:
        return []
    held = [{"$contains": f" {WORD}{word} "} for word in words]
    given = filters.where_document()

    def holding(joined: str, limit: int) -> dict[str, dict]:
        clause = held[0] if len(held) == 1 else {joined: held}
        return store.matching(filters.where(), clause if given is None else {"$and": [given, clause]}, limit=limit)

    found = holding("$or", WORDS_MAX + 1)
    if len(found) > WORDS_MAX:  # more than are ranked: those holding every word first, then any
        every = holding("$and", WORDS_MAX) if len(held) > 1 else {}
        found = dict(list({**every, **{i: m for i, m in found.items() if i not in every}}.items())[:WORDS_MAX])
    wanted = set(words)
    return [(record_id, metadata, len(wanted & {word for held in sourced_words(metadata).values() for word in held}))
            for record_id, metadata in found.items()]


def fused(store: RecordStore, vector: np.ndarray, text: str, n: int, filters: SearchFilters, mode: str) -> list[Found]:
    """At least the n best records for a text query, best first, in `mode`: the vector's ranking alone, the
    words' alone (ties in the vector's order), or both fused."""
    words = query_words(text)
    if mode == "words" and not words:
        return []  # nothing to look for: no record is found by words
    if mode == "vector" or not words:
        return [Found(hit, ["vector"]) for hit in nearest(store, vector, n, filters)]
    by_vector = {hit[0]: (rank, hit) for rank, hit in enumerate(nearest(store, vector, max(n, VECTOR_DEPTH), filters))}
    by_words = word_hits(store, words, filters)
    by_words.sort(key=lambda hit: (-hit[2], by_vector.get(hit[0], (len(by_vector), None))[0]))
    scores: dict[str, float] = {}
    hits: dict[str, Hit] = {}
    if mode == "both":
        scores = {record_id: 1 / (RRF_K + rank + 1) for record_id, (rank, _) in by_vector.items()}
        hits = {record_id: hit for record_id, (_, hit) in by_vector.items()}
    for rank, (record_id, metadata, _) in enumerate(by_words):
        scores[record_id] = scores.get(record_id, 0.0) + 1 / (RRF_K + rank + 1)
        hits.setdefault(record_id, (record_id, metadata, by_vector[record_id][1][2] if record_id in by_vector else None))
    order = sorted(scores, key=lambda record_id: -scores[record_id])
    return [Found(hits[record_id], (["vector"] if mode == "both" and record_id in by_vector else [])
                  + matched_in(hits[record_id][1], words)) for record_id in order]
