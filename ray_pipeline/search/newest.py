"""Newest: the records the filters let through, newest capture first, read no further than a page needs.

Chroma cannot order by a key: a listing reads the metadata of what it orders. A few thousand records are read
and ordered whole. More are walked back through time by `taken_month` (an equality Chroma answers fast):
years, then months, each probed for any record at all before its records are read, until the months read
hold the page (benchmarks/RESULTS.md, issue 29: a page of 20 of 10^5 in a fraction of a second, where reading
them all took 15 s). Photos dated after this month (a camera clock set wrong) come first; those dated before
the walk's first year, and those with no date, are found at its end.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

from ray_pipeline.core import record_keys as keys
from ray_pipeline.records.filters import SearchFilters
from ray_pipeline.records.store import RecordStore
from ray_pipeline.search.people import photos_of_people

WHOLE = 2000  # at most this many matching records are read and ordered whole
FIRST_YEAR = 1826  # the oldest photograph: the walk stops here
DECADE_AFTER = 3  # empty years in a row after which the walk goes a decade at a time
_UNDATED = -(2**62)  # sorts records with no capture date after every dated one


def newest(store: RecordStore, wanted: int, filters: SearchFilters) -> tuple[list[tuple[str, dict]], bool]:
    """At least the `wanted` newest records the filters let through, in order ((id, metadata), newest first;
    then the undated, by path), and whether they are all that match."""
    photos = photos_of_people(store, filters)
    if photos is not None:  # the few photos of these people, read by id
        return _ordered({i: m for i, m in store.records(photos).items() if filters.admits(m)}), True
    where, where_document = filters.where(), filters.where_document()
    if len(store.matching_ids(where, where_document, limit=WHOLE + 1)) > WHOLE:
        found, complete = _walked(store, wanted, filters)
        return _ordered(found), complete
    return _ordered(store.matching(where, where_document)), True


def _ordered(found: dict[str, dict]) -> list[tuple[str, dict]]:
    order = sorted(found, key=lambda i: (-found[i].get(keys.TAKEN_AT, _UNDATED), found[i].get(keys.PATH) or "", i))
    return [(i, found[i]) for i in order]


def _walked(store: RecordStore, wanted: int, filters: SearchFilters) -> tuple[dict[str, dict], bool]:
    """The records of the newest months, read month by month until they hold `wanted`; all of them where fewer
    match (and then True: every match was read). Beside a month, the filters' slow clauses (ranges, bools) are
    checked on the records read."""
    where, where_document = filters.where(), filters.where_document()
    fast, _ = filters.narrowing(anchored=True)  # with a month: ranges and bools are checked here, on what is read
    this_month = dt.date.today().replace(day=1)
    later = _month_after(this_month)
    def read(clause: dict) -> None:
        found.update((i, metadata) for i, metadata in store.matching(_and(fast, clause), where_document).items()
                     if filters.admits(metadata))

    found: dict[str, dict] = {}
    read({keys.TAKEN_AT: {"$gte": _seconds(later)}})  # clocks set wrong: few records, a fast range
    for months in _months_back(store, this_month, fast, where_document):
        for month in months:
            read({keys.TAKEN_MONTH: month})
            if len(found) >= wanted:
                return found, False
    # Older than the walk, or undated: whatever else matches.
    rest = [i for i in store.matching_ids(where, where_document) if i not in found]
    found.update(store.records(rest))
    return found, True


def _months_back(store: RecordStore, start: dt.date, where: dict | None, where_document: dict | None) -> Iterator[list[str]]:
    """The months of each year that holds matching records, newest year first: each year probed for one record
    (the rest of a decade at once after DECADE_AFTER empty years in a row), its months in order back from
    December."""
    year, empty = start.year, 0
    while year >= FIRST_YEAR:
        if empty >= DECADE_AFTER:  # the rest of this decade, back to its first year, at once
            decade = [_month(y, m) for y in range(year - year % 10, year + 1) for m in range(12, 0, -1)]
            if not _any(store, where, where_document, decade):
                year -= year % 10 + 1
                continue
        months = [_month(year, m) for m in range(12 if year < start.year else start.month, 0, -1)]
        if _any(store, where, where_document, months):
            empty = 0
            yield months
        else:
            empty += 1
        year -= 1


def _any(store: RecordStore, where: dict | None, where_document: dict | None, months: list[str]) -> bool:
    return bool(store.matching_ids(_and(where, {keys.TAKEN_MONTH: {"$in": months}}), where_document, limit=1))


def _and(where: dict | None, clause: dict) -> dict:
    return clause if where is None else {"$and": [where, clause]}


def _month(year: int, month: int) -> str:
    return f"{year:04d}-{month:02d}"  # as `enrichments.taken_keys` writes `taken_month`


def _month_after(month: dt.date) -> dt.date:
    return (month.replace(day=28) + dt.timedelta(days=4)).replace(day=1)


def _seconds(day: dt.date) -> int:
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc).timestamp())
