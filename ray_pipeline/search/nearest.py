"""Nearest: the records nearest a vector among those the filters let through, asked of Chroma the fastest way
that is still exact.

Chroma weighs each `where` clause over the whole collection before the vector search, a range of numbers or a
bool at up to 300 ms for 10^5 records, whatever share of them it lets through (benchmarks/RESULTS.md, issues 15
and 29). So, in turn, stopping at the first that is sure to hold the answer:
1. the nearest records with no filter, checked here (`SearchFilters.admits`): enough where the filters let
   through most records (ISO 800 to 3200, has GPS), at the cost of a search with none;
2. a faster `where` that lets more through (`SearchFilters.narrowing`: the GPS box by the cells of the GPS
   grid; beside an equality, ranges and bools left out), its records checked here, asked again for more
   where too few passed (a few hundred records cost less than a range clause);
3. the exact `where`.
A `person` filter of people in few photos goes first of all to their photos, read by id (`photos_of_people`).
"""

from __future__ import annotations

import numpy as np

from ray_pipeline.records.filters import SearchFilters
from ray_pipeline.records.store import RecordStore
from ray_pipeline.search.people import photos_of_people

Hit = tuple[str, dict, float | None]  # (id, metadata, score)

PROBE = 100  # records the search with no filter looks at, at least
PROBE_FACTOR = 5  # ... and this many times the results wanted: enough where the filters let 1 in 5 through
NARROW_FACTOR = 4  # a faster `where` that lets more through is asked for this many times the results wanted,
WIDEN = 8  # ... then, where too few of those passed, this many times more, again,
NARROW_MAX = 2000  # ... up to this many records (past it, the exact `where` costs less than asking for more)


def nearest(store: RecordStore, vector: np.ndarray, n: int, filters: SearchFilters) -> list[Hit]:
    """The n records nearest `vector` that the filters let through, nearest first (fewer where fewer match)."""
    if filters.empty:
        return _hits(store, vector, n, None, None)
    photos = photos_of_people(store, filters)
    if photos is not None:  # the few photos of these people, ranked here
        ids, vectors, metadatas = store.vectors_of(photos)
        scores = vectors @ vector if ids else np.zeros(0)
        ranked: list[Hit] = sorted(((i, m, round(float(s), 6)) for i, m, s in zip(ids, metadatas, scores) if filters.admits(m)),
                        key=lambda hit: -(hit[2] or 0.0))
        return ranked[:n]
    tries: list[tuple[int, dict | None, dict | None]] = [(max(PROBE, PROBE_FACTOR * n), None, None)]
    where, exact = filters.narrowing()
    if not exact:
        asked = NARROW_FACTOR * n
        tries.append((asked, where, filters.where_document()))
        while asked * WIDEN <= NARROW_MAX:
            asked *= WIDEN
            tries.append((asked, where, filters.where_document()))
    for asked, where, where_document in tries:
        found = _hits(store, vector, asked, where, where_document)
        admitted = [hit for hit in found if filters.admits(hit[1])]
        if len(admitted) >= n or len(found) < asked:  # fewer found than asked: every record let through was seen
            return admitted[:n]
    return _hits(store, vector, n, filters.where(), filters.where_document())


def _hits(store: RecordStore, vector: np.ndarray, n: int, where: dict | None, where_document: dict | None) -> list[Hit]:
    found = store.query(vector, n, where, where_document)
    return [(i, dict(m or {}), round(1.0 - float(d), 6))
            for i, m, d in zip(found["ids"][0], found["metadatas"][0], found["distances"][0])]
