"""Search: embed a text (or an example photo) with the collection's own model and return a page of the
nearest records the filters let through; or, with no query, a page of the collection, newest first."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ray_pipeline.core import defaults
from ray_pipeline.core import record_keys as keys
from ray_pipeline.core.paths import exact_name, recorded_path
from ray_pipeline.files.decode import decode_file
from ray_pipeline.files.reading import read_file
from ray_pipeline.model import clip as clip_model
from ray_pipeline.model.embedders import LocalEmbedder
from ray_pipeline.model.text_tower import cache_text_tower, cached_text_tower
from ray_pipeline.records.chroma import check_model
from ray_pipeline.records.filters import SearchFilters
from ray_pipeline.records.store import RecordStore, open_store
from ray_pipeline.search.nearest import Hit, nearest
from ray_pipeline.search.newest import newest
from ray_pipeline.search.words import fused, query_words
from ray_pipeline.records.target import StoreTarget
from ray_pipeline.steps.pairs import RAW

logger = logging.getLogger(__name__)


def embedder_for(store: RecordStore, override: clip_model.ModelSpec | None = None, precision: str = "auto") -> LocalEmbedder:
    """The model the collection records (or `override`), checked against it."""
    embedder = LocalEmbedder(clip_model.spec_from_collection(store.metadata, override), texts=True, precision=precision)
    check_model(store.target.collection, store.metadata, embedder.resolved.collection_metadata())
    if store.metadata.get("random_weights"):
        logger.warning("collection %r holds vectors from random weights: the ranking means nothing", store.target.collection)
    return embedder


def text_vector(store: RecordStore, text: str, override: clip_model.ModelSpec | None = None,
                precision: str = "auto") -> np.ndarray:
    """The query's vector: from the export of the collection's text tower where one was made (no torch to
    import: a search from a cold shell in about a second), else from the model itself, whose text tower is
    then exported for the searches after."""
    if override is None:
        tower = cached_text_tower(store.metadata)
        if tower is not None:
            return tower.embed_texts([text])[0]
    embedder = embedder_for(store, override, precision)
    vector = embedder.embed_texts([text])[0]
    if override is None:
        cache_text_tower(store.metadata, embedder.resolved, text)
    return vector


@dataclass(frozen=True)
class ResultPage:
    """One page of results, best first (a search) or newest capture first (a listing)."""

    results: list[dict]
    offset: int
    total: int | None  # how many match in all, where Chroma tells it (a listing; a search with no filter)
    warning: str | None = None
    words: list[str] | None = None  # a search by text: the query's words that were looked for in the records

    def as_json(self) -> dict:
        """The page as the CLI's --json and the HTTP API give it."""
        page: dict = {"results": self.results, "offset": self.offset, "total": self.total}
        if self.words is not None:
            page["words"] = self.words
        return {**page, "warning": self.warning} if self.warning else page


def _result(record_id: str, metadata: dict | None, score: float | None) -> dict:
    """id, path, every path that holds the photo's bytes, score (cosine similarity; None in a listing), name (the
    name an upload came with, else the file's), caption and place ("city, region, country") where stored, and all
    metadata."""
    metadata = dict(metadata or {})
    result = {"id": record_id, "path": metadata.get("path"), **exact_name(recorded_path(metadata) or ""),
              "paths": keys.paths_of(metadata), "score": score}
    if keys.CAPTION in metadata:
        result["caption"] = metadata[keys.CAPTION]
    if metadata.get(keys.TEXT):
        result["text"] = metadata[keys.TEXT]
    result["name"] = metadata.get(keys.UPLOAD_NAME) or metadata.get(keys.FILENAME) or ""
    place = ", ".join(metadata[key] for key in (keys.PLACE_CITY, keys.PLACE_REGION, keys.PLACE_COUNTRY) if metadata.get(key))
    if place:
        result["place"] = place
    result["metadata"] = metadata
    return result


def _warning(store: RecordStore, needs_filter_keys: bool) -> str | None:
    """What a page must say of a collection whose records lack the keys filters and listings need."""
    if not needs_filter_keys or not store.outdated:
        return None
    return (f"collection {store.target.collection!r} was written before search filters or places: its records lack "
            "keys they need until an ingestion into it brings them up to date (run the same ingest command again)")


def with_person_ids(store: RecordStore, filters: SearchFilters | None) -> SearchFilters:
    """The filters with each person given by name read as their id (records hold ids: a name can change);
    PeopleError naming `person` for one the collection does not know."""
    filters = filters or SearchFilters()
    if not filters.person:
        return filters
    return filters.model_copy(update={"person": store.resolve_people(filters.person)})


def top_k(store: RecordStore, vector: np.ndarray, k: int, filters: SearchFilters | None = None, offset: int = 0,
          collapse: bool = True) -> ResultPage:
    """Results offset+1 to offset+k of the records nearest the vector among those the filters let through (k
    come back when k match: `nearest`). With `collapse`, a RAW+JPEG pair is one result (twice as many are asked
    for, so that a page stays full)."""
    filters = with_person_ids(store, filters)
    hits = nearest(store, vector, (offset + k) * (2 if collapse else 1), filters)
    entries, metadata = _entries(store, hits, collapse)
    total = store.count() if filters.empty else None  # records: a collapsed pair is one result but two records
    return ResultPage(_page(entries, metadata, offset, k), offset, total, _warning(store, not filters.empty))


def text_top_k(store: RecordStore, vector: np.ndarray, text: str, k: int, filters: SearchFilters | None = None,
               offset: int = 0, collapse: bool = True, mode: str = "both") -> ResultPage:
    """As `top_k`, for a query by text: its words found where records hold them rank them too (`mode`: "vector",
    "words" or "both", `search.words.fused`); each result says why it was found (`matched`)."""
    filters = with_person_ids(store, filters)
    found = fused(store, vector, text, (offset + k) * (2 if collapse else 1), filters, mode)
    entries, metadata = _entries(store, [f.hit for f in found], collapse)
    matched = {f.hit[0]: f.matched for f in found}
    results = _page(entries, metadata, offset, k)
    for result in results:
        raw = result.get("raw", {}).get("id")
        result["matched"] = list(dict.fromkeys(matched.get(result["id"], []) + matched.get(raw, [])))
    total = store.count() if filters.empty and mode != "words" else None  # a vector ranks every record
    words = query_words(text) if mode != "vector" else []
    return ResultPage(results, offset, total, _warning(store, not filters.empty or mode != "vector"), words)


def newest_first(store: RecordStore, k: int, filters: SearchFilters | None = None, offset: int = 0,
                 collapse: bool = True) -> ResultPage:
    """Results offset+1 to offset+k of the records the filters let through, newest capture first (then
    those with no capture date, by path): browsing with no query. With `collapse`, a RAW+JPEG pair is one
    result. The total is given where every match was read (a few thousand at most: `newest`)."""
    filters = with_person_ids(store, filters)
    ordered, complete = newest(store, (offset + k) * (2 if collapse else 1), filters)
    entries, metadata = _entries(store, [(i, m, None) for i, m in ordered], collapse)
    total = len(entries) if complete else None
    return ResultPage(_page(entries, metadata, offset, k), offset, total, _warning(store, True))  # the order needs `taken_at` too


Entry = tuple[str, str | None, float | None]  # a result to show: (id, its pair's RAW id or None, score)


def _entries(store: RecordStore, hits: list[Hit], collapse: bool) -> tuple[list[Entry], dict[str, dict]]:
    """The results in order, and the metadata of every record they name. With `collapse`, each RAW+JPEG
    pair is one result where the first of the two came: the picture, its RAW beside it (a partner that is
    gone leaves a plain result). Light tuples: only a page of them becomes results."""
    found = {record_id: metadata for record_id, metadata, _ in hits}
    if not collapse:
        return [(record_id, None, score) for record_id, _, score in hits], found
    partners = {m[keys.PAIR_OF] for m in found.values() if m.get(keys.PAIR_OF) and m[keys.PAIR_OF] not in found}
    found.update(store.records(sorted(partners)) if partners else {})
    entries: list[Entry] = []
    shown = set()
    for record_id, metadata, score in hits:
        partner = metadata.get(keys.PAIR_OF)
        if partner not in found:
            entries.append((record_id, None, score))
            continue
        picture, raw = (partner, record_id) if metadata.get(keys.PAIR_ROLE) == RAW else (record_id, partner)
        if picture not in shown:
            shown.add(picture)
            entries.append((picture, raw, score))
    return entries, found


def _page(entries: list[Entry], found: dict[str, dict], offset: int, k: int) -> list[dict]:
    """Results offset+1 to offset+k, a pair's with `raw` ({"id", "path", "paths"})."""
    results = []
    for record_id, raw, score in entries[offset : offset + k]:
        result = _result(record_id, found[record_id], score)
        if raw is not None:
            result["raw"] = {"id": raw, "path": found[raw].get(keys.PATH), "paths": keys.paths_of(found[raw])}
        results.append(result)
    return results


def search_page(target: StoreTarget, k: int, text: str | None = None, image_path: str | None = None,
                override: clip_model.ModelSpec | None = None, filters: SearchFilters | None = None,
                offset: int = 0, collapse: bool = True, precision: str = "auto", mode: str = "both") -> ResultPage:
    """A page of the photos most like a text, or like the photo at `image_path` (a JPEG, HEIC, RAW, ...
    decoded as ingestion does); with neither, of the collection, newest first."""
    store = open_store(target)
    if image_path is not None:
        embedder = embedder_for(store, override, precision)
        photo = decode_file(read_file(image_path), embedder.resolved.geometry, defaults.MAX_PIXELS)
        return top_k(store, embedder.embed(photo.pixels[None])[0], k, filters, offset, collapse)
    if text is not None:
        return text_top_k(store, text_vector(store, text, override, precision), text, k, filters, offset, collapse, mode)
    return newest_first(store, k, filters, offset, collapse)


def search_text(target: StoreTarget, text: str, k: int, override: clip_model.ModelSpec | None = None,
                filters: SearchFilters | None = None) -> list[dict]:
    return search_page(target, k, text=text, override=override, filters=filters).results


def search_image(target: StoreTarget, image_path: str, k: int, override: clip_model.ModelSpec | None = None,
                 filters: SearchFilters | None = None) -> list[dict]:
    return search_page(target, k, image_path=image_path, override=override, filters=filters).results
