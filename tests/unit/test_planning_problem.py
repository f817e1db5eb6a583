"""Orders → solver problem and solver answer → plan, without running the solver."""

from __future__ import annotations

from datetime import UTC, datetime, time
from typing import Any

import numpy as np
import pytest

from tests.unit.planning_fixtures import DAY, depot, order, vehicle
from tracker.planning import proposal, solution
from tracker.planning.model import Window
from tracker.planning.problem import UNLIMITED, ProblemInvalid, build


def at(hour: int, minute: int = 0) -> datetime:
    return datetime(DAY.year, DAY.month, DAY.day, hour, minute, tzinfo=UTC)


def test_build_scales_amounts_and_times() -> None:
    orders = [
        order(1, 42.50, 1.52, size={"kg": 0.29, "parcels": 2.0}, windows=(Window(at(9), at(10)),)),
        order(2, 42.51, 1.53, kind="pickup", size={"kg": 3.5}, skills=("fridge",), priority=70),
    ]
    vans = [
        vehicle(1, capacity={"parcels": 5.5}, skills=("fridge",)),
        vehicle(2, shift_start=time(9), shift_end=time(12), max_duration_s=3600),
    ]
    p = build(DAY, orders, vans, {1: depot()})
    assert p.t0 == at(0)
    assert p.units == ("kg", "parcels")
    assert p.skills == ("fridge",)
    # Sizes round up, capacities down, an unnamed unit is unlimited.
    assert p.jobs[0].delivery == (29, 200) and p.jobs[0].pickup == (0, 0)
    assert p.jobs[1].pickup == (350, 0) and p.jobs[1].delivery == (0, 0)
    assert p.vans[0].capacity == (UNLIMITED, 550)
    assert p.jobs[0].windows == ((9 * 3600, 10 * 3600),)
    assert p.jobs[1].skills == frozenset({0}) and p.jobs[1].priority == 70
    assert p.vans[0].window == (8 * 3600, 17 * 3600)
    # A maximum duration closes the vehicle's window early.
    assert p.vans[1].window == (9 * 3600, 10 * 3600)
    # The depot is one location shared by both vans, then one per order.
    assert p.locations[0] == (42.5075, 1.5218) and len(p.locations) == 3
    assert p.vans[0].start == p.vans[1].end == 0


def test_build_sets_aside_unlocated_and_past_orders() -> None:
    orders = [
        order(1, 42.5, 1.5),
        order(2, None, None, geocode_status="unresolved"),  # type: ignore[arg-type]
        order(3, 42.5, 1.5, windows=(Window(at(6), at(7)),)),
    ]
    p = build(DAY, orders, [vehicle(1)], {1: depot()}, not_before=at(8))
    assert [j.id for j in p.jobs] == [1]
    assert {a.order_id: a.reason for a in p.set_aside} == {
        2: "no coordinates: its address is not geocoded",
        3: "every time window of it is over",
    }
    assert p.t0 == at(8)


def test_build_refuses_what_cannot_be_planned() -> None:
    with pytest.raises(ProblemInvalid, match="no vehicles"):
        build(DAY, [order(1, 1, 1)], [], {})
    with pytest.raises(ProblemInvalid, match="neither a start nor an end"):
        build(DAY, [], [vehicle(1, start_depot_id=None, end_depot_id=None)], {})
    with pytest.raises(ProblemInvalid, match="no depot 9"):
        build(DAY, [], [vehicle(1, start_depot_id=9)], {1: depot()})


def answer(route_steps: list[dict[str, Any]], unassigned: list[int]) -> dict[str, Any]:
    """A VROOM answer in its JSON output format."""
    return {
        "code": 0,
        "summary": {"cost": 700},
        "unassigned": [{"id": i, "type": "job"} for i in unassigned],
        "routes": [
            {
                "vehicle": 0,
                "cost": 700,
                "duration": 700,
                "service": 240,
                "waiting_time": 60,
                "steps": route_steps,
            }
        ],
    }


def test_read_answer_into_routes_with_reasons() -> None:
    orders = [
        order(1, 42.50, 1.52, windows=(Window(at(9), at(10)),)),
        order(2, 42.51, 1.53),
        order(3, 42.52, 1.54, skills=("crane",)),
        order(4, 42.52, 1.54, size={"parcels": 11.0}),
        order(5, 42.52, 1.54, windows=(Window(at(20), at(21)),)),
        order(6, 42.52, 1.54),
    ]
    p = build(DAY, orders, [vehicle(1)], {1: depot()})
    seconds = np.full((len(p.locations), len(p.locations)), 300)
    np.fill_diagonal(seconds, 0)
    steps = [
        {"type": "start", "location_index": 0, "arrival": 32100, "duration": 0, "load": [200]},
        {
            "type": "job", "id": 1, "location_index": 1, "arrival": 32340, "duration": 240,
            "waiting_time": 60, "service": 120, "load": [100],
        },
        {
            "type": "job", "id": 2, "location_index": 2, "arrival": 32820, "duration": 540,
            "service": 120, "load": [0],
        },
        {"type": "end", "location_index": 0, "arrival": 33100, "duration": 700, "load": [0]},
    ]  # fmt: skip
    sol = solution.read(p, answer(steps, [3, 4, 5, 6]), seconds)
    (route,) = sol.routes
    assert route.start.time == at(8, 55) and route.end.time == p.at(33100)
    assert [s.order.id for s in route.stops] == [1, 2]
    first, second = route.stops
    # Service starts after the wait: that is the planned arrival a live ETA compares to.
    assert first.arrival == at(9) and first.waiting_s == 60 and first.travel_s == 240
    assert second.travel_s == 300 and second.load == {"parcels": 0.0}
    assert route.load == {"parcels": 2.0} and route.lateness_s == 0
    reasons = {u.order.id: u.reason for u in sol.unassigned}
    assert reasons[3] == "no vehicle has the skills it needs: crane"
    assert reasons[4] == "larger than every vehicle that has its skills (parcels 11 > 10)"
    assert reasons[5] == solution.OUT_OF_REACH
    assert reasons[6] == solution.NO_ROOM

    outbound = [(42.5075, 1.5218), (42.5, 1.52), (42.51, 1.53)]
    back = [(42.51, 1.53), (42.5075, 1.5218)]
    body = proposal.route_json(p, route, outbound, [800.0, 900.0], back, 1000.0)
    assert body["distance_m"] == 2700.0 and body["duration_s"] == 1000
    assert body["stops"][0]["arrival"] == at(9).isoformat()
    assert body["stops"][0]["departure"] == at(9, 2).isoformat()
    assert body["path"]["precision"] == 6 and body["return_path"] is not None
    plan = proposal.plan_json(p, sol, [body], True, None, {"solve_s": 0.5})
    assert plan["summary"]["assigned"] == 2 and plan["summary"]["unassigned"] == 4
    assert plan["travel"] == "roads" and plan["straight_line"] is False


def test_lateness_counts_from_the_last_window_that_ended() -> None:
    assert solution.lateness(100, ()) == 0
    assert solution.lateness(150, ((100, 200),)) == 0
    assert solution.lateness(260, ((100, 200), (300, 400))) == 60
    assert solution.lateness(50, ((100, 200),)) == 0  # early: the van waits


def test_solver_error_is_raised() -> None:
    p = build(DAY, [order(1, 1.0, 1.0)], [vehicle(1)], {1: depot()})
    with pytest.raises(ValueError, match="solver error 2"):
        solution.read(p, {"code": 2, "error": "bad"}, np.zeros((2, 2)))
