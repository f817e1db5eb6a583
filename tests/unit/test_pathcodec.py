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


def test_long_paths_are_simplified_to_the_limit_keeping_their_own_points() -> None:
    import math

    from tracker.core.pathcodec import simplified

    # A real-looking drive: a spiral, a point every few metres, 50,000 of them.
    path = tuple(
        (
            48.1 + (5e-4 + k * 2e-7) * math.sin(k / 2000) * 0.67,
            11.5 + (5e-4 + k * 2e-7) * math.cos(k / 2000),
        )
        for k in range(50_000)
    )
    out = simplified(path, 1000)
    assert 2 <= len(out) <= 1000
    assert set(out) <= set(path) and out[0] == path[0] and out[-1] == path[-1]
    assert [path.index(p) for p in out] == sorted(path.index(p) for p in out)
    assert simplified(path[:900], 1000) == path[:900]  # within the limit: unchanged


def test_a_hostile_zigzag_is_simplified_quickly() -> None:
    import time

    from tracker.core.pathcodec import simplified

    # Douglas-Peucker is quadratic on a zig-zag; the sections keep it bounded.
    path = tuple((48.0 + (k % 2) * 1e-5, 11.0 + k * 1e-5) for k in range(200_000))
    started = time.perf_counter()
    out = simplified(path, 10_000)
    assert time.perf_counter() - started < 10.0
    assert 2 <= len(out) <= 10_000 and out[0] == path[0] and out[-1] == path[-1]
    for limit in (2, 3, 50):
        assert 2 <= len(simplified(path, limit)) <= limit


def test_a_closed_loop_never_collapses_to_one_point() -> None:
    import math

    from tracker.core.pathcodec import simplified

    loop = tuple(
        (
            48.1 + 0.01 * math.sin(2 * math.pi * k / 999),
            11.5 + 0.01 * math.cos(2 * math.pi * k / 999),
        )
        for k in range(1000)
    )
    for limit in (2, 10, 100):
        out = simplified(loop, limit)
        assert 2 <= len(out) <= limit and len(set(out)) >= 2
