"""OSM tags → drivable edges, straight-line and road matrices, cheapest insertion."""

from __future__ import annotations

import numpy as np
import pytest

from tracker.planning import insertion, matrix, roads
from tracker.planning.insertion import LiveChain, Visit
from tracker.planning.roads import BACKWARD, BOTH, FORWARD, Way


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        ({"highway": "residential"}, True),
        ({"highway": "footway"}, False),
        ({"highway": "service", "access": "private"}, False),
        ({"highway": "service", "access": "private", "motor_vehicle": "yes"}, True),
        ({"highway": "residential", "access": "destination"}, True),
        ({"highway": "primary", "motor_vehicle": "no"}, False),
        ({"highway": "pedestrian"}, False),
        ({"highway": "service", "area": "yes"}, False),
        ({"highway": "tertiary", "oneway": "reversible"}, False),
    ],
)
def test_drivable(tags: dict[str, str], expected: bool) -> None:
    assert roads.drivable(tags) is expected


def test_direction_and_speed() -> None:
    assert roads.direction({"highway": "residential"}) == BOTH
    assert roads.direction({"highway": "residential", "oneway": "yes"}) == FORWARD
    assert roads.direction({"highway": "residential", "oneway": "-1"}) == BACKWARD
    assert roads.direction({"highway": "primary", "junction": "roundabout"}) == FORWARD
    assert roads.direction({"highway": "motorway"}) == FORWARD
    assert roads.direction({"highway": "motorway", "oneway": "no"}) == BOTH
    assert roads.speed_kmh({"highway": "residential"}) == 25.0
    assert roads.speed_kmh({"highway": "primary", "maxspeed": "50"}) == pytest.approx(40.0)
    assert roads.speed_kmh({"highway": "primary", "maxspeed": "30 mph"}) == pytest.approx(
        30 * 1.609344 * 0.8
    )
    assert roads.speed_kmh({"highway": "primary", "maxspeed": "FR:urban"}) == 60.0
    assert roads.maxspeed_kmh("none") is None and roads.maxspeed_kmh("walk") is None


def test_ways_are_cut_at_junctions() -> None:
    # A (oneway) runs 1-2-3-4, B crosses it at 3: A splits into 1-3 and 3-4; B is one edge.
    a = Way(10, {"highway": "residential", "oneway": "yes", "name": "A"},
            [(1, 0.0, 0.0), (2, 0.0, 0.001), (3, 0.0, 0.002), (4, 0.0, 0.003)])  # fmt: skip
    b = Way(11, {"highway": "primary"}, [(5, 0.001, 0.002), (3, 0.0, 0.002)])
    edges = roads.edges([a, b])
    assert [(e.way_id, e.source, e.target) for e in edges] == [(10, 1, 3), (10, 3, 4), (11, 5, 3)]
    first = edges[0]
    assert first.coords == ((0.0, 0.0), (0.001, 0.0), (0.002, 0.0))
    assert first.length_m == pytest.approx(222.6, abs=0.5)
    assert first.cost_s == pytest.approx(first.length_m / (25 / 3.6)) and first.reverse_cost_s == -1
    assert edges[2].reverse_cost_s == edges[2].cost_s > 0 and edges[2].name == ""


def test_straight_and_road_matrices() -> None:
    model = matrix.TravelModel(speed_mps=10.0, detour=1.5, access_speed_mps=5.0)
    pts = [(42.5, 1.5), (42.5, 1.51), (42.5, 1.51)]
    s = matrix.straight_seconds(pts, model)
    metres = 819.0  # 0.01 degree of longitude at 42.5 N
    assert s[0, 1] == pytest.approx(metres * 1.5 / 10.0, rel=0.01)
    assert s[1, 2] == 0 and s[1, 0] == s[0, 1]
    vertex = np.array([[0.0, 100.0, 100.0], [120.0, 0.0, 0.0], [np.inf, 0.0, 0.0]])
    r = matrix.road_seconds(vertex, [10.0, 20.0, 5.0], pts, [1, 2, 2], model)
    assert r[0, 1] == 100 + 2 + 4  # the road plus both ends' access
    assert r[1, 0] == 120 + 4 + 2
    assert r[2, 0] == matrix.UNREACHABLE_S
    assert r[1, 2] == 0  # same vertex, same point: straight across


def test_cheapest_insertion_respects_windows() -> None:
    # Points on a line, 100 s apart: 0 (van) - 1 - 2 - 3; the new stop sits at 4, beside 2.
    pos = np.array([0.0, 100.0, 200.0, 300.0, 200.0])
    seconds = np.abs(pos[:, None] - pos[None, :])
    seconds[4, :] += 10
    seconds[:, 4] += 10
    np.fill_diagonal(seconds, 0)
    chain = LiveChain(7, 0, 0.0, (Visit(1, 1, 0, None), Visit(2, 2, 0, None), Visit(3, 3, 0, None)))
    best = insertion.best_insertion(seconds, [chain], Visit(0, 4, 0, None))
    assert best is not None and best.route == 7 and best.index in (1, 2) and best.added_s == 20
    # A window that closes before the van gets past stop 1 forces it earlier.
    early = insertion.best_insertion(seconds, [chain], Visit(0, 4, 0, (0.0, 215.0)))
    assert early is not None and early.index in (0, 1) and early.timing.lateness == (0, 0, 0, 0)
    # A window nobody can meet: no feasible place.
    assert insertion.best_insertion(seconds, [chain], Visit(0, 4, 0, (0.0, 50.0))) is None
    forced = insertion.best_insertion(seconds, [chain], Visit(0, 4, 0, (0.0, 50.0)), False)
    assert forced is not None and forced.index == 1 and forced.timing.lateness[1] == 160
    t = insertion.timing(seconds, 0, 0.0, [Visit(1, 1, 30, (150.0, 400.0)), Visit(2, 2, 0, None)])
    assert t.starts == (150.0, 280.0) and t.end_s == 280.0
