"""Filters: what a search or a listing can be narrowed by, and the Chroma
`where` and `where_document` built from a filter. They are built as data from validated values, never
as text made from user input, and they apply inside the vector query, so k results come back when k
match.
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from ray_pipeline.core import record_keys as keys
from ray_pipeline.core.formats import RAW_EXTENSIONS, SUPPORTED_EXTENSIONS
from ray_pipeline.core.paths import path_text
from ray_pipeline.records.enrichments import words_of

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

    @field_validator("format", mode="before")
    @classmethod
    def _formats(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.split(",")
        if isinstance(value, list):
            value = [str(v).strip().lower().lstrip(".") for v in value]
            unknown = sorted(set(value) - SUPPORTED_EXTENSIONS)
            if unknown:
                raise ValueError(f"unknown format {', '.join(unknown)}: one of {', '.join(sorted(SUPPORTED_EXTENSIONS))}")
        return value

    @field_validator("folder")
    @classmethod
    def _folder(cls, value: str | None) -> str | None:
        if value is not None:
            if not value.startswith("/"):
                raise ValueError("an absolute path is needed")
            value = path_text(os.path.normpath(value))  # as records hold paths
        return value

    @field_validator("caption_words")
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
        if self.format is not None:
            formats = sorted(set().union(*(next((same for same in _ONE_FORMAT if f in same), {f}) for f in self.format)))
            clauses.append({keys.FORMAT: {"$in": formats}})
        if self.raw is not None:  # `is_raw` is the format's: a string match, which Chroma answers faster than a bool
            clauses.append({keys.FORMAT: {"$in" if self.raw else "$nin": sorted(RAW_EXTENSIONS)}})
        for key, value in ((keys.HAS_CAPTION, self.has_caption), (keys.HAS_GPS, self.has_gps)):
            if value is not None:
                clauses.append({key: {"$eq": value}})
        if not clauses:
            return None
        return clauses[0] if len(clauses) == 1 else {"$and": clauses}

    def where_document(self) -> dict | None:
        """The Chroma document filter: every word of `caption_words`, whole."""
        if self.caption_words is None:
            return None
        clauses = [{"$contains": f" {word} "} for word in dict.fromkeys(words_of(self.caption_words))]
        return clauses[0] if len(clauses) == 1 else {"$and": clauses}


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
