"""Enrichments: what a record learns besides its vector and its file's own fields, declared here, of two kinds.

- Derived keys, cheap: computed from a record's other keys, for a new record in the file's journey, for the
  records of an older collection when it is next opened for writing (the layout upgrade, which reads no
  file), and again when an enrichment changes a record. Today: the keys search filters need (layout 2), the
  GPS grid's cells (layout 3), and the place a photo was taken (layout 4, `records.places`).
- Costly enrichments: computed from a photo's pixels by a model of their own, after the records are written,
  by a pool of their own, so they never slow embedding (`steps.enrich` queues and runs them). Today: captions.

A record's document, which word filters match, is made of the words its enrichments hold.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import re
from dataclasses import dataclass
from typing import Any

from ray_pipeline.core import record_keys as keys
from ray_pipeline.core.geometry import InputGeometry
from ray_pipeline.records.places import place_of, position

# Collections record the layout their records follow: 2 adds the derived keys, 3 the GPS grid's cells, 4 places.
# Older records get them when the collection is next opened for writing (an ingestion), without being embedded again.
RECORD_LAYOUT = 4
LAYOUT_KEY = "record_layout"
_WORD = re.compile(r"\w+")


def folders_of(path: str) -> list[str]:
    """Every folder a file lies under, outermost first ('/a/b/c.jpg' -> ['/', '/a', '/a/b']): a folder
    filter is then one exact match on this list. ([] for a bare name: records hold absolute paths.)"""
    folders, folder = [], os.path.dirname(path)
    while folder and folder not in folders:
        folders.append(folder)
        folder = os.path.dirname(folder)
    return folders[::-1]


def taken_keys(datetime_original: str) -> dict[str, Any]:
    """The capture time by the camera's clock (a date filter means the date on the photographer's calendar):
    `taken_at`, seconds since 1970 read as UTC, which orders listings and bounds open date ranges; and
    `taken_day` and `taken_month`, which a closed date range matches by equality, several times faster in
    Chroma than a range of numbers (benchmarks/RESULTS.md, issue 15). {} for a date that does not parse."""
    try:
        taken = dt.datetime.fromisoformat(datetime_original[:19])
    except ValueError:
        return {}
    day = taken.date().isoformat()
    return {keys.TAKEN_AT: int(taken.replace(tzinfo=dt.timezone.utc).timestamp()), keys.TAKEN_DAY: day, keys.TAKEN_MONTH: day[:7]}


def gps_cell(lat: float, lon: float, degrees: int) -> str:
    """The cell of a grid of `degrees` that holds a position: "lat:lon" of its south-west corner, in cells."""
    return f"{math.floor(lat / degrees)}:{math.floor(lon / degrees)}"


def gps_keys(metadata: dict[str, Any]) -> dict[str, Any]:
    """`has_gps`, and where there is a position, the cells of the GPS grid (`record_keys.GPS_CELL_1DEG`,
    `GPS_CELL_10DEG`) and the place (`place_keys`)."""
    found = position(metadata.get("gps_lat"), metadata.get("gps_lon"))
    if found is None:  # none, or one that is no position on Earth (a broken GPS block)
        return {keys.HAS_GPS: False}
    lat, lon = found
    return {keys.HAS_GPS: True, keys.GPS_CELL_1DEG: gps_cell(lat, lon, 1), keys.GPS_CELL_10DEG: gps_cell(lat, lon, 10),
            **place_keys(lat, lon)}


def place_keys(lat: float, lon: float) -> dict[str, Any]:
    """The place a photo was taken at this position (`records.places`); {} for none near, or a position that is
    no position ((0, 0), out of range, not finite)."""
    place = place_of(lat, lon)
    if place is None:
        return {}
    named = {keys.PLACE_CITY: place.city, keys.PLACE_REGION: place.region, keys.PLACE_COUNTRY: place.country}
    return {**{key: name for key, name in named.items() if name}, keys.PLACE_NAMES: place.names}


def words_of(text: str) -> list[str]:
    """The words of a caption, or of the words asked for, in lower case."""
    return _WORD.findall(text.lower())


def document_of(metadata: dict[str, Any]) -> str:
    """The record's document, which word filters match: the words of its enrichments (the caption), in lower
    case between spaces, so that a word is matched whole (' cat ' is not in ' catalogue ')."""
    return f" {' '.join(words_of(metadata.get(keys.CAPTION) or ''))} "


def folders_field(path: str) -> dict[str, list[str]]:
    """{"folders": folders_of(path)}, or {} for none: Chroma takes no empty list."""
    folders = folders_of(path)
    return {keys.FOLDERS: folders} if folders else {}


def derived_keys(metadata: dict[str, Any]) -> dict[str, Any]:
    """The keys derived from a record's other keys: those filters need (new records, and older ones brought
    up to date)."""
    return {
        **folders_field(metadata.get(keys.PATH) or ""),
        **gps_keys(metadata),
        keys.HAS_CAPTION: bool(metadata.get(keys.CAPTION)),
        **taken_keys(metadata.get("datetime_original") or ""),
    }


@dataclass(frozen=True)
class CostlyEnrichment:
    """An enrichment a model of its own computes from a photo's pixels, after the photo's record is written."""

    key: str  # the record key it fills
    summary_key: str  # how many records got it, in a run's summary and a job's status
    geometry: InputGeometry  # the picture its model takes
    deployment: str  # the Serve app's deployment that runs the model (called with one picture, batched there)
    option: str  # the CLI's option that asks for it


# BLIP's processor resizes to 384 x 384 without keeping the aspect ratio: it is sent exactly that.
CAPTION = CostlyEnrichment(keys.CAPTION, "captioned", InputGeometry(384, 384, "squash"), "Captioner", "--caption")
