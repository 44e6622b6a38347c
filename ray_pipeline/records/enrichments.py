"""Enrichments: what a record learns besides its vector and its file's own fields, declared here, of two kinds.

- Derived keys, cheap: computed from a record's other keys, for a new record in the file's journey, for the
  records of an older collection when it is next opened for writing (the layout upgrade, which reads no
  file), and again when an enrichment changes a record. Today: the keys search filters need (layout 2), the
  GPS grid's cells (layout 3), and the place a photo was taken (layout 4, `records.places`).
- Costly enrichments: computed from a photo's pixels by a model of their own, after the records are written,
  by a pool of their own, so they never slow embedding (`steps.enrich` queues and runs them). Today: captions,
  the text in a photo, and the faces in it (which `records.people` groups into people).

A record's document, which word filters and word search match, is made of the words its enrichments, its place
and its file's name hold, each word marked with where it is from (`document_of`).
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

# Collections record the layout their records follow: 2 adds the derived keys, 3 the GPS grid's cells, 4 places,
# 5 documents of marked words. Older records get them when the collection is next opened for writing (an
# ingestion), without being embedded again.
RECORD_LAYOUT = 5
LAYOUT_KEY = "record_layout"
# A word: a run of letters or of digits ("IMG_0042" is two words, "São" one). Text read in photos often runs
# words together ("OPEN7AM", "SALE50PERCENT", "RuedeRivoli"): a document also holds the parts of a run of letters
# cut where a capital follows a small letter ("ruederivoli", "ruede", "rivoli"), so its words are found.
_WORD = re.compile(r"\d+|[^\W\d_]+")
# Where a word of a record's document is from, by the mark before it: a word filter matches one source, word
# search all of them (`WORD`, each word once more).
CAPTION_WORD, TEXT_WORD, PLACE_WORD, NAME_WORD, WORD = "c:", "t:", "p:", "f:", "w:"


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
    """The words of a caption, a text, a name, or of the words asked for, in lower case (`_WORD`)."""
    return [run.lower() for run in _WORD.findall(text)]


def indexed_words(text: str) -> list[str]:
    """The words a document holds of a text: each word, and the parts of one that runs words together."""
    found = []
    for run in _WORD.findall(text):
        parts = [part for part in re.split(r"(?<=[a-zß-ÿ])(?=[A-ZÀ-Þ])", run) if part]
        found += [run.lower(), *(part.lower() for part in parts)] if len(parts) > 1 else [run.lower()]
    return found


DOCUMENT_KEYS = frozenset({keys.CAPTION, keys.TEXT, keys.PLACE_NAMES, keys.FILENAME, keys.UPLOAD_NAME})  # what a document is made of


def sourced_words(metadata: dict[str, Any]) -> dict[str, list[str]]:
    """A record's words by their mark: its caption's, its text's, its place's and its file name's (an upload's own
    name, not its hash)."""
    place = " ".join(metadata.get(keys.PLACE_NAMES) or [])
    return {CAPTION_WORD: indexed_words(metadata.get(keys.CAPTION) or ""),
            TEXT_WORD: indexed_words(metadata.get(keys.TEXT) or ""), PLACE_WORD: indexed_words(place),
            NAME_WORD: indexed_words(metadata.get(keys.UPLOAD_NAME) or metadata.get(keys.FILENAME) or "")}


def document_of(metadata: dict[str, Any]) -> str:
    """The record's document, which word filters and word search match: each word marked with its source
    (' c:dog ', ' t:bakery ', ' p:lisbon ', ' f:img '), then every word once more as ' w:word ', in lower case
    between spaces, so that a word is matched whole (' c:cat ' is not in ' c:catalogue ')."""
    sourced = sourced_words(metadata)
    marked = [mark + word for mark, words in sourced.items() for word in dict.fromkeys(words)]
    every = [WORD + word for word in dict.fromkeys(word for words in sourced.values() for word in words)]
    return f" {' '.join(marked + every)} "


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
    served_only: bool = True  # a big model (BLIP) runs in the Serve app alone; a small one also in a run's own pool


# BLIP's processor resizes to 384 x 384 without keeping the aspect ratio: it is sent exactly that.
CAPTION = CostlyEnrichment(keys.CAPTION, "captioned", InputGeometry(384, 384, "squash"), "Captioner", "--caption")
# PP-OCR reads the whole picture at its aspect ratio, here fitted to 1,200 pixels on its long side: on 12-MP
# photos with signs it found as many words as at 1,000 or 1,400 and more than at 800 or 1,600 to 2,000, in a third
# of 2,000's time (benchmarks/RESULTS.md, issue 30: its detector works best near the scale it was trained at).
TEXT_SIDE = 1200
TEXT = CostlyEnrichment(keys.TEXT, "text_read", InputGeometry(TEXT_SIDE, TEXT_SIDE, "fit"), "TextReader", "--read-text",
                        served_only=False)


# dlib's HOG detector finds faces down to about 80 pixels at the size it is given: at 2,000 pixels on the long side
# that is a face of 160 pixels in a 12-MP photo, in a fifth of a second (benchmarks/RESULTS.md, issue 31). The
# record's value is how many faces were described (0: looked at, none); the faces go to `records.people`.
FACE_SIDE = 2000
FACES = CostlyEnrichment(keys.FACES, "looked_for_faces", InputGeometry(FACE_SIDE, FACE_SIDE, "fit"), "FaceFinder",
                         "--find-faces", served_only=False)


def asked(caption: bool, read_text: bool, find_faces: bool = False) -> tuple[CostlyEnrichment, ...]:
    """The costly enrichments a run or `enrich` was asked for, in the order they are made."""
    return tuple(enrichment for enrichment, wanted in ((CAPTION, caption), (TEXT, read_text), (FACES, find_faces))
                 if wanted)


# A collection's metadata: what its last ingestion that read files or changed records did (JSON: when, and its
# counts), for `collections show`.
LAST_INGESTION_KEY = "last_ingestion"

# A collection's metadata: the costly enrichments every ingestion into it makes, asked for or not (`collections
# create`), their keys comma-separated.
ENRICHMENTS_ON_KEY = "enrichments_on"


def enrichments_on(collection_metadata: dict[str, Any]) -> tuple[CostlyEnrichment, ...]:
    """The costly enrichments a collection has on by default."""
    named = str(collection_metadata.get(ENRICHMENTS_ON_KEY) or "").split(",")
    return tuple(enrichment for enrichment in (CAPTION, TEXT, FACES) if enrichment.key in named)
