"""Filters: what a search or a listing can be narrowed by, and the Chroma
`where` and `where_document` built from a filter. They are built as data from validated values, never
as text made from user input, and they apply inside the vector query, so k results come back when k
match.
"""

from __future__ import annotations

import datetime as dt
import math
import os
from typing import Any, TypeGuard

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from ray_pipeline.core import record_keys as keys
from ray_pipeline.core.formats import RAW_EXTENSIONS, SUPPORTED_EXTENSIONS
from ray_pipeline.core.paths import path_text
from ray_pipeline.records.enrichments import CAPTION_WORD, TEXT_WORD, document_of, words_of

MAX_CELLS = 1200  # cells of the GPS grid a box is matched by, at most (more cost more than they save: RESULTS.md, issue 29)
LAST_DAY = dt.date(9998, 12, 31)  # the last day a date filter takes: a day and a month after it are still dates
# Extensions that name one format: a filter on one matches them all.
_ONE_FORMAT = (frozenset({"jpg", "jpeg"}), frozenset({"tif", "tiff"}), frozenset({"heic", "heif", "hif"}))


class GpsBox(BaseModel):
    """A box of latitude and longitude; west above east crosses the 180th meridian."""

    model_config = ConfigDict(extra="forbid")
    south: float = Field(ge=-90, le=90)
    west: float = Field(ge=-180, le=180)
    north: float = Field(ge=-90, le=90)
    east: float = Field(ge=-180, le=180)

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, value: Any) -> Any:
        """'south,west,north,east' (as the CLI and query strings give it) or a list of four numbers."""
        if isinstance(value, str):
            value = value.split(",")
        if isinstance(value, (list, tuple)):
            if len(value) != 4:
                raise ValueError("four numbers are needed: south,west,north,east")
            return dict(zip(("south", "west", "north", "east"), value))
        return value

    @model_validator(mode="after")
    def _south_below_north(self) -> "GpsBox":
        if self.south > self.north:
            raise ValueError(f"south ({self.south}) is above north ({self.north})")
        return self

    def holds(self, lat: Any, lon: Any) -> bool:
        if not _number(lat) or not _number(lon) or not self.south <= lat <= self.north:
            return False
        return self.west <= lon <= self.east if self.west <= self.east else (lon >= self.west or lon <= self.east)


class SearchFilters(BaseModel):
    """Every filter a search or listing takes; each is optional, and together they all must hold."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    date_from: dt.date | None = Field(None, le=LAST_DAY, description="taken on or after this date (YYYY-MM-DD)")
    date_to: dt.date | None = Field(None, le=LAST_DAY, description="taken on or before this date (YYYY-MM-DD)")
    camera_make: str | None = Field(None, min_length=1, description="camera make, exactly as EXIF gives it")
    camera_model: str | None = Field(None, min_length=1, description="camera model, exactly as EXIF gives it")
    lens: str | None = Field(None, min_length=1, description="lens, exactly as EXIF gives it")
    iso_min: float | None = Field(None, ge=0, description="ISO at least")
    iso_max: float | None = Field(None, ge=0, description="ISO at most")
    exposure_min: float | None = Field(None, gt=0, description="exposure time at least, in seconds")
    exposure_max: float | None = Field(None, gt=0, description="exposure time at most, in seconds")
    focal_min: float | None = Field(None, gt=0, description="focal length at least, in mm")
    focal_max: float | None = Field(None, gt=0, description="focal length at most, in mm")
    gps_box: GpsBox | None = Field(None, description="taken inside south,west,north,east (degrees)")
    folder: str | None = Field(None, min_length=1, description="the photos under this folder (an absolute path)")
    format: list[str] | None = Field(None, min_length=1, description="file formats, by extension (jpg,heic,...)")
    raw: bool | None = Field(None, description="camera RAW files only (true) or none (false)")
    has_caption: bool | None = Field(None, description="with a caption (true) or without (false)")
    has_gps: bool | None = Field(None, description="with a GPS position (true) or without (false)")
    caption_words: str | None = Field(None, min_length=1, description="words the caption must hold, all of them")
    text_words: str | None = Field(None, min_length=1, description="words the text in the photo must hold, all of them")
    place: str | None = Field(None, min_length=1, description="taken in this city, region or country (GeoNames' "
                              "names, any letter case)")
    person: list[str] | None = Field(None, min_length=1, description="with these people in it, all of them: their names "
                                     "(any letter case) or ids, comma-separated")

    @field_validator("format", mode="before")
    @classmethod
    def _formats(cls, value: Any) -> Any:
        value = _listed(value, lambda v: v.strip().lower().lstrip("."))
        if isinstance(value, list):
            unknown = sorted(set(value) - SUPPORTED_EXTENSIONS)
            if unknown:
                raise ValueError(f"unknown format {', '.join(unknown)}: one of {', '.join(sorted(SUPPORTED_EXTENSIONS))}")
        return value

    @field_validator("person", mode="before")
    @classmethod
    def _people(cls, value: Any) -> Any:
        value = _listed(value, lambda v: " ".join(v.split()))
        if isinstance(value, list):
            if not all(value):
                raise ValueError("an empty name")
        return value

    @field_validator("folder")
    @classmethod
    def _folder(cls, value: str | None) -> str | None:
        if value is not None:
            if not value.startswith("/"):
                raise ValueError("an absolute path is needed")
            value = path_text(os.path.normpath(value))  # as records hold paths
        return value

    @field_validator("place")
    @classmethod
    def _place(cls, value: str | None) -> str | None:
        if value is not None:
            value = " ".join(value.split()).lower()  # as `records.places.Place.names` holds them
            if not value:
                raise ValueError("no name in it")
        return value

    @field_validator("caption_words", "text_words")
    @classmethod
    def _words(cls, value: str | None) -> str | None:
        if value is not None and not words_of(value):
            raise ValueError("no word in it")
        return value

    @field_validator("date_to", "iso_max", "exposure_max", "focal_max")
    @classmethod
    def _range(cls, high: Any, info: ValidationInfo) -> Any:
        """The upper end of a range is not below its lower end (named by the upper end's field)."""
        low_name = info.field_name.replace("_max", "_min").replace("_to", "_from")
        low = info.data.get(low_name)
        if high is not None and low is not None and low > high:
            raise ValueError(f"is below {low_name} ({low})")
        return high

    @classmethod
    def parse(cls, values: dict[str, Any]) -> "SearchFilters":
        """From strings (CLI options, query parameters, form fields) or JSON values; absent ones left out.
        A ValidationError names the field."""
        return cls.model_validate({key: value for key, value in values.items() if value is not None and value != ""})

    @property
    def empty(self) -> bool:
        """No filter given: everything passes."""
        return not self.model_dump(exclude_none=True)

    def where(self) -> dict | None:
        """The Chroma metadata filter, or None for none."""
        clauses: list[dict] = []
        if self.date_from is not None and self.date_to is not None:
            clauses.append(_days_between(self.date_from, self.date_to))
        elif self.date_from is not None:
            clauses.append({keys.TAKEN_AT: {"$gte": _day_start(self.date_from)}})
        elif self.date_to is not None:
            clauses.append({keys.TAKEN_AT: {"$lt": _day_start(self.date_to + dt.timedelta(days=1))}})
        for key in ("camera_make", "camera_model", "lens"):
            if getattr(self, key) is not None:
                clauses.append({key: {"$eq": getattr(self, key)}})
        for key, low, high in (("iso", "iso_min", "iso_max"), ("exposure_time", "exposure_min", "exposure_max"),
                               ("focal_length", "focal_min", "focal_max")):
            if getattr(self, low) is not None:
                clauses.append({key: {"$gte": getattr(self, low)}})
            if getattr(self, high) is not None:
                clauses.append({key: {"$lte": getattr(self, high)}})
        if self.gps_box is not None:
            box = self.gps_box
            clauses += [{"gps_lat": {"$gte": box.south}}, {"gps_lat": {"$lte": box.north}}]
            if box.west <= box.east:
                clauses += [{"gps_lon": {"$gte": box.west}}, {"gps_lon": {"$lte": box.east}}]
            else:
                clauses.append({"$or": [{"gps_lon": {"$gte": box.west}}, {"gps_lon": {"$lte": box.east}}]})
        if self.folder is not None:
            clauses.append({keys.FOLDERS: {"$contains": self.folder}})
        if self.place is not None:
            clauses.append({keys.PLACE_NAMES: {"$contains": self.place}})
        for person in dict.fromkeys(self.person or []):  # ids, once `with_person_ids` has read the names
            clauses.append({keys.PEOPLE: {"$contains": person}})
        if self.format is not None:
            clauses.append({keys.FORMAT: {"$in": _formats(self.format)}})
        if self.raw is not None:  # `is_raw` is the format's: a string match, which Chroma answers faster than a bool
            clauses.append({keys.FORMAT: {"$in" if self.raw else "$nin": sorted(RAW_EXTENSIONS)}})
        for key, value in ((keys.HAS_CAPTION, self.has_caption), (keys.HAS_GPS, self.has_gps)):
            if value is not None:
                clauses.append({key: {"$eq": value}})
        if not clauses:
            return None
        return clauses[0] if len(clauses) == 1 else {"$and": clauses}

    def narrowing(self, anchored: bool = False) -> tuple[dict | None, bool]:
        """A `where` that Chroma answers fast, and whether it is exact (`where`) or lets more through (then each
        record found is checked by `admits`). Chroma weighs every clause over the whole collection, a range of
        numbers or a bool several times slower than an equality on a string (benchmarks/RESULTS.md, issues 15
        and 29): the GPS box becomes the cells of the GPS grid that cover it, and beside a faster clause, ranges
        and bools are left to `admits`. `anchored`: the caller adds a fast clause of its own (a listing's month),
        so ranges and bools are always left out."""
        exact = self.where()
        if exact is None:
            return None, True
        cells = _cells_of(self.gps_box) if self.gps_box is not None else None
        fast = self.model_copy(update={"gps_box": None})
        slow = {"iso_min", "iso_max", "exposure_min", "exposure_max", "focal_min", "focal_max", "has_gps", "has_caption"}
        if anchored or cells or any(getattr(fast, name) is not None
                                    for name in set(SearchFilters.model_fields) - slow - _DOCUMENT_FILTERS):
            fast = fast.model_copy(update=dict.fromkeys(slow))
        clauses = [clause for clause in (fast.where(), cells) if clause]
        if self.gps_box is not None and cells is None:
            return exact, True
        if not clauses:
            return None, False
        narrowed = clauses[0] if len(clauses) == 1 else {"$and": clauses}
        return narrowed, narrowed == exact

    def admits(self, metadata: dict[str, Any]) -> bool:
        """Whether a record passes every filter: what `where` and `where_document` ask of Chroma, asked of a
        record in hand (a candidate found by a faster query)."""
        if self.date_from is not None or self.date_to is not None:
            taken = metadata.get(keys.TAKEN_AT)
            if not _number(taken) or (self.date_from is not None and taken < _day_start(self.date_from)):
                return False
            if self.date_to is not None and taken >= _day_start(self.date_to + dt.timedelta(days=1)):
                return False
        if any(getattr(self, key) is not None and metadata.get(key) != getattr(self, key)
               for key in ("camera_make", "camera_model", "lens")):
            return False
        for key, low, high in (("iso", self.iso_min, self.iso_max), ("exposure_time", self.exposure_min, self.exposure_max),
                               ("focal_length", self.focal_min, self.focal_max)):
            if (low is not None or high is not None) and not _within(metadata.get(key), low, high):
                return False
        if self.gps_box is not None and not self.gps_box.holds(metadata.get("gps_lat"), metadata.get("gps_lon")):
            return False
        if self.folder is not None and self.folder not in (metadata.get(keys.FOLDERS) or []):
            return False
        if self.place is not None and self.place not in (metadata.get(keys.PLACE_NAMES) or []):
            return False
        if not set(self.person or []) <= set(metadata.get(keys.PEOPLE) or []):
            return False
        format = metadata.get(keys.FORMAT)
        if self.format is not None and format not in _formats(self.format):
            return False
        if self.raw is not None and (format is None or (format in RAW_EXTENSIONS) != self.raw):
            return False
        for key, value in ((keys.HAS_CAPTION, self.has_caption), (keys.HAS_GPS, self.has_gps)):
            if value is not None and metadata.get(key) is not value:
                return False
        document = document_of(metadata) if self._document_words() else ""
        return all(f" {word} " in document for word in self._document_words())

    def where_document(self) -> dict | None:
        """The Chroma document filter: every word of `caption_words` in the caption, of `text_words` in the text,
        whole (`enrichments.document_of`)."""
        clauses = [{"$contains": f" {word} "} for word in self._document_words()]
        if not clauses:
            return None
        return clauses[0] if len(clauses) == 1 else {"$and": clauses}

    def _document_words(self) -> list[str]:
        """The marked words the document must hold."""
        return [*dict.fromkeys(CAPTION_WORD + word for word in words_of(self.caption_words or "")),
                *dict.fromkeys(TEXT_WORD + word for word in words_of(self.text_words or ""))]


def _listed(value: Any, tidy) -> Any:
    """A filter of several values, as JSON gives it (a list) or a CLI option or form field (comma-separated),
    each value tidied; anything else as it is, for the field's own type to refuse."""
    if isinstance(value, str):
        value = value.split(",")
    return [tidy(str(v)) for v in value] if isinstance(value, list) else value


_DOCUMENT_FILTERS = {"caption_words", "text_words"}  # matched in the document, not by `where`


def _formats(given: list[str]) -> list[str]:
    """The extensions a format filter matches: each one's other spellings too."""
    return sorted(set().union(*(next((same for same in _ONE_FORMAT if f in same), {f}) for f in given)))


def _number(value: Any) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _within(value: Any, low: float | None, high: float | None) -> bool:
    return _number(value) and (low is None or value >= low) and (high is None or value <= high)


def _cells_of(box: GpsBox) -> dict | None:
    """The cells of the GPS grid that cover the box, at 1 degree where that takes at most MAX_CELLS, else at 10;
    None where even that takes more (a box of most of the world)."""
    for degrees, key in ((1, keys.GPS_CELL_1DEG), (10, keys.GPS_CELL_10DEG)):
        rows = range(math.floor(box.south / degrees), math.floor(box.north / degrees) + 1)
        if box.west <= box.east:
            columns = list(range(math.floor(box.west / degrees), math.floor(box.east / degrees) + 1))
        else:  # across the 180th meridian
            columns = [*range(math.floor(box.west / degrees), math.floor(180 / degrees) + 1),
                       *range(math.floor(-180 / degrees), math.floor(box.east / degrees) + 1)]
        if len(rows) * len(columns) <= MAX_CELLS:
            return {key: {"$in": [f"{row}:{column}" for row in rows for column in columns]}}
    return None


def _days_between(first: dt.date, last: dt.date) -> dict:
    """The days from `first` to `last`, both included: whole months by `taken_month`, the days at either end
    by `taken_day`."""
    months, days, day = [], [], first
    while day <= last:
        next_month = (day.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
        if day.day == 1 and next_month - dt.timedelta(days=1) <= last:
            months.append(day.isoformat()[:7])  # as taken_keys writes `taken_month`
            day = next_month
        else:
            days.append(day.isoformat())
            day += dt.timedelta(days=1)
    clauses = ([{keys.TAKEN_MONTH: {"$in": months}}] if months else []) + ([{keys.TAKEN_DAY: {"$in": days}}] if days else [])
    return clauses[0] if len(clauses) == 1 else {"$or": clauses}


def _day_start(day: dt.date) -> int:
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc).timestamp())


def first_error(error: ValidationError) -> str:
    """'field: why' of a validation error's first problem, for a usage error."""
    problem = error.errors()[0]
    field = ".".join(str(part) for part in problem["loc"]) or "filters"
    return f"{field}: {problem['msg']}"
