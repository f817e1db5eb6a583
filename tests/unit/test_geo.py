"""The local metric projection and path helpers."""

from __future__ import annotations

import math

import pytest
from pyproj import Geod
from shapely import LineString

from tracker.core.geo import LocalProjection, dedupe, simplify

GEOD = Geod(ellps="WGS84")


def test_round_trip_is_exact_to_the_millimetre() -> None:
    proj = LocalProjection(48.137, 11.575)
    for lat, lon in [(48.137, 11.575), (48.2, 11.4), (48.05, 11.7)]:
        x, y = proj.to_xy(lat, lon)
        back = proj.to_latlon(x, y)
        assert back[0] == pytest.approx(lat, abs=1e-8)
        assert back[1] == pytest.approx(lon, abs=1e-8)


@pytest.mark.parametrize(
    ("a", "b"), [((48.10, 11.50), (48.25, 11.70)), ((52.0, 4.3), (52.06, 4.4))]
)
def test_distances_match_the_geodesic_across_a_city(
    a: tuple[float, float], b: tuple[float, float]
) -> None:
    proj = LocalProjection.around([a, b])
    xa, ya = proj.to_xy(*a)
    xb, yb = proj.to_xy(*b)
    planar = math.hypot(xb - xa, yb - ya)
    _, _, geodesic = GEOD.inv(a[1], a[0], b[1], b[0])
    assert planar == pytest.approx(geodesic, rel=1e-4)


def test_axes_point_east_and_north() -> None:
    proj = LocalProjection(48.0, 11.0)
    x, y = proj.to_xy(48.0, 11.01)
    assert x > 700 and abs(y) < 1
    x, y = proj.to_xy(48.01, 11.0)
    assert y > 1100 and abs(x) < 1


def test_many_agrees_with_one_by_one() -> None:
    proj = LocalProjection(48.0, 11.0)
    pts = [(48.0, 11.0), (48.1, 11.2), (47.9, 10.9)]
    assert proj.many_to_xy(pts) == [pytest.approx(proj.to_xy(*p)) for p in pts]
    assert proj.many_to_xy([]) == []


def test_invalid_centres_and_paths_are_refused() -> None:
    with pytest.raises(ValueError):
        LocalProjection(91.0, 0.0)
    with pytest.raises(ValueError):
        LocalProjection.around([])
    proj = LocalProjection(48.0, 11.0)
    with pytest.raises(ValueError, match="two distinct"):
        proj.line([(48.0, 11.0), (48.0, 11.0)])


def test_line_drops_repeated_points() -> None:
    proj = LocalProjection(48.0, 11.0)
    line = proj.line([(48.0, 11.0), (48.0, 11.0), (48.01, 11.0)])
    assert len(line.coords) == 2
    assert dedupe([(0, 0), (0, 0), (1, 1), (0, 0)]) == [(0, 0), (1, 1), (0, 0)]


def test_simplify_removes_jitter_but_keeps_a_crossing() -> None:
    # A figure of eight drawn with 2 m zig-zags.
    pts = []
    for i in range(400):
        a = 2 * math.pi * i / 400
        pts.append((100 * math.sin(a) + (1 if i % 2 else -1), 50 * math.sin(2 * a)))
    line = LineString(pts)
    simple = simplify(line, 5.0)
    assert len(simple.coords) < len(pts) / 4
    assert simple.length < line.length
    assert not simple.is_simple  # it still crosses itself
