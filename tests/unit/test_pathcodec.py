"""Planned paths from GeoJSON and Google encoded polylines, and the straight-line stand-in."""

from __future__ import annotations

import json

import pytest

from tracker.core.model import Stop
from tracker.core.pathcodec import (
    PathError,
    decode,
    from_geojson,
    from_polyline,
    from_stops,
    route_path,
    to_polyline,
)

# The worked example of Google's "Encoded Polyline Algorithm Format" documentation.
GOOGLE = "_p~iF~ps|U_ulLnnqC_mqNvxq`@"
GOOGLE_POINTS = ((38.5, -120.2), (40.7, -120.95), (43.252, -126.453))


def test_google_documented_example() -> None:
    assert from_polyline(GOOGLE) == GOOGLE_POINTS
    assert to_polyline(GOOGLE_POINTS) == GOOGLE


def test_precision_six_round_trips() -> None:
    path = ((48.137154, 11.576124), (48.139001, 11.580002))
    text = to_polyline(path, 6)
    assert from_polyline(text, 6) == path
    with pytest.raises(PathError, match="outside"):
        from_polyline(text, 5)  # read at the wrong precision: ten times too large


def test_geojson_positions_are_lon_lat() -> None:
    geo = {"type": "LineString", "coordinates": [[11.5, 48.1], [11.6, 48.2, 520.0]]}
    assert from_geojson(geo) == ((48.1, 11.5), (48.2, 11.6))
    feature = {"type": "Feature", "properties": {}, "geometry": geo}
    assert from_geojson(feature) == from_geojson(json.dumps(geo))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"type": "Point", "coordinates": [11.5, 48.1]}, "LineString"),
        ({"type": "LineString", "coordinates": "no"}, "coordinates"),
        ({"type": "LineString", "coordinates": [[11.5, 48.1]]}, "two distinct"),
        ({"type": "LineString", "coordinates": [[11.5, 48.1], [11.5, 48.1]]}, "two distinct"),
        ({"type": "LineString", "coordinates": [[11.5, 98.1], [11.6, 48.2]]}, "outside"),
        ({"type": "LineString", "coordinates": [[11.5], [11.6, 48.2]]}, "lon, lat"),
        ({"type": "LineString", "coordinates": [["a", 48.1], [11.6, 48.2]]}, "numbers"),
        ({"type": "Feature", "geometry": None}, "geometry"),
        ("{not json", "JSON"),
        ("[1, 2]", "object"),
    ],
)
def test_bad_geojson_is_refused_with_a_reason(value: object, message: str) -> None:
    with pytest.raises(PathError, match=message):
        from_geojson(value)  # type: ignore[arg-type]


def test_bad_polylines_are_refused() -> None:
    for bad in ["", "   ", "~", "abc"]:
        with pytest.raises(PathError):
            from_polyline(bad)


def test_decode_tells_the_forms_apart() -> None:
    geo = {"type": "LineString", "coordinates": [[-120.2, 38.5], [-120.95, 40.7]]}
    assert decode(geo) == GOOGLE_POINTS[:2]
    assert decode("  " + json.dumps(geo)) == GOOGLE_POINTS[:2]
    assert decode(GOOGLE) == GOOGLE_POINTS
    with pytest.raises(PathError):
        decode(42)  # type: ignore[arg-type]


def test_without_a_path_the_stops_are_joined_in_sequence() -> None:
    stops = [Stop(2, 2, 48.2, 11.6), Stop(1, 1, 48.1, 11.5), Stop(3, 3, 48.3, 11.7)]
    assert from_stops(stops) == ((48.1, 11.5), (48.2, 11.6), (48.3, 11.7))
    assert route_path(stops, None) == (from_stops(stops), True)
    assert route_path(stops, GOOGLE) == (GOOGLE_POINTS, False)
    with pytest.raises(PathError):
        from_stops(stops[:1])
