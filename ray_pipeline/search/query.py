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
from ray_pipeline.records.chroma import check_model
from ray_pipeline.records.filters import SearchFilters
from ray_pipeline.records.store import RecordStore, open_store
from ray_pipeline.records.target import StoreTarget
from ray_pipeline.steps.pairs import RAW

logger = logging.getLogger(__name__)
_UNDATED = -(2**62)  # sorts records with no capture date after every dated one


def embedder_for(store: RecordStore, override: clip_model.ModelSpec | None = None) -> LocalEmbedder:
    """The model the collection records (or `override`), checked against it."""
    embedder = LocalEmbedder(clip_model.spec_from_collection(store.metadata, override), texts=True)
    check_model(store.target.collection, store.metadata, embedder.resolved.collection_metadata())
    if store.metadata.get("random_weights"):
        logger.warning("collection %r holds vectors from random weights: the ranking means nothing", store.target.collection)
    return embedder


@dataclass(frozen=True)
class ResultPage:
    """One page of results, best first (a search) or newest capture first (a listing)."""

    results: list[dict]
    offset: int
    total: int | None  # how many match in all, where Chroma tells it (a listing; a search with no filter)
    warning: str | None = None

    def as_json(self) -> dict:
        """The page as the CLI's --json and the HTTP API give it."""
        page = {"results": self.results, "offset": self.offset, "total": self.total}
        return {**page, "warning": self.warning} if self.warning else page


def _result(record_id: str, metadata: dict | None, score: float | None) -> dict:
    """id, path, every path that holds the photo's bytes, score (cosine similarity; None in a listing),
    caption where stored, and all metadata."""
    metadata = dict(metadata or {})
    result = {"id": record_id, "path": metadata.get("path"), **exact_name(recorded_path(metadata) or ""),
              "paths": keys.paths_of(metadata), "score": score}
    if keys.CAPTION in metadata:
        result["caption"] = metadata[keys.CAPTION]
    result["metadata"] = metadata
    return result


def _warning(store: RecordStore, needs_filter_keys: bool) -> str | None:
    """What a page must say of a collection whose records lack the keys filters and listings need."""
    if not needs_filter_keys or not store.outdated:
        return None
    return (f"collection {store.target.collection!r} was written before search filters: its records lack the keys "
            "they need until an ingestion into it brings them up to date (run the same ingest command again)")


def top_k(store: RecordStore, vector: np.ndarray, k: int, filters: SearchFilters | None = None, offset: int = 0,
          collapse: bool = True) -> ResultPage:
    """Results offset+1 to offset+k of the records nearest the vector among those the filters let through
    (applied inside Chroma's query, so k come back when k match). With `collapse`, a RAW+JPEG pair is
    one result (twice as many are asked for, so that a page stays full)."""
    filters = filters or SearchFilters()
    found = store.query(vector, (offset + k) * (2 if collapse else 1), filters.where(), filters.where_document())
    hits: list[Hit] = [(i, dict(m or {}), round(1.0 - float(d), 6))
                       for i, m, d in zip(found["ids"][0], found["metadatas"][0], found["distances"][0])]
    entries, metadata = _entries(store, hits, collapse)
    total = store.count() if filters.empty else None  # records: a collapsed pair is one result but two records
    return ResultPage(_page(entries, metadata, offset, k), offset, total, _warning(store, not filters.empty))


def newest_first(store: RecordStore, k: int, filters: SearchFilters | None = None, offset: int = 0,
                 collapse: bool = True) -> ResultPage:
    """Results offset+1 to offset+k of the records the filters let through, newest capture first (then
    those with no capture date, by path): browsing with no query. With `collapse`, a RAW+JPEG pair is one
    result."""
    filters = filters or SearchFilters()
    found = store.matching(filters.where(), filters.where_document())
    order = sorted(found, key=lambda i: (-found[i].get(keys.TAKEN_AT, _UNDATED), found[i].get(keys.PATH) or "", i))
    entries, metadata = _entries(store, [(i, found[i], None) for i in order], collapse)
    return ResultPage(_page(entries, metadata, offset, k), offset, len(entries), _warning(store, True))  # the order needs `taken_at` too


Hit = tuple[str, dict, float | None]  # (id, metadata, score)
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
                offset: int = 0, collapse: bool = True) -> ResultPage:
    """A page of the photos most like a text, or like the photo at `image_path` (a JPEG, HEIC, RAW, ...
    decoded as ingestion does); with neither, of the collection, newest first."""
    store = open_store(target)
    if image_path is not None:
        embedder = embedder_for(store, override)
        photo = decode_file(read_file(image_path), embedder.resolved.geometry, defaults.MAX_PIXELS)
        return top_k(store, embedder.embed(photo.pixels[None])[0], k, filters, offset, collapse)
    if text is not None:
        return top_k(store, embedder_for(store, override).embed_texts([text])[0], k, filters, offset, collapse)
    return newest_first(store, k, filters, offset, collapse)


def search_text(target: StoreTarget, text: str, k: int, override: clip_model.ModelSpec | None = None,
                filters: SearchFilters | None = None) -> list[dict]:
    return search_page(target, k, text=text, override=override, filters=filters).results


def search_image(target: StoreTarget, image_path: str, k: int, override: clip_model.ModelSpec | None = None,
                 filters: SearchFilters | None = None) -> list[dict]:
    return search_page(target, k, image_path=image_path, override=override, filters=filters).results
