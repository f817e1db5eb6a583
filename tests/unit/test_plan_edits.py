"""A hand-made order of stops evaluated by VROOM's plan mode (the real solver, no database):
arrivals as the solver would give them, and every constraint the order breaks reported on
its stop or route in our terms."""

from __future__ import annotations

from datetime import UTC, datetime, time

from tests.unit.planning_fixtures import DAY, depot, order, vehicle
from tracker.planning import edits, matrix, proposal, solution, solver
from tracker.planning.model import Window
from tracker.planning.problem import build

SPOTS = [(42.50, 1.52), (42.51, 1.53), (42.52, 1.50), (42.505, 1.51)]


def at(hour: int, minute: int = 0) -> datetime:
    return datetime(DAY.year, DAY.month, DAY.day, hour, minute, tzinfo=UTC)


def test_the_solvers_own_order_breaks_nothing_and_keeps_its_arrivals() -> None:
    orders = [order(k + 1, lat, lon) for k, (lat, lon) in enumerate(SPOTS)]
    p = build(DAY, orders, [vehicle(1)], {1: depot()})
    seconds = matrix.straight_seconds(p.locations, matrix.TravelModel())
    solved = solution.read(p, solver.solve(p, seconds, solver.SolverOptions()), seconds)
    (route,) = solved.routes
    steps = {0: [s.order.id for s in route.stops]}
    answer = solver.check(p, seconds, steps)
    (checked,) = solution.read(p, answer, seconds).routes
    assert [s.arrival for s in checked.stops] == [s.arrival for s in route.stops]
    assert edits.violations(p, answer) == {0: {"route": [], "stops": {}}}


def test_a_forced_order_is_evaluated_and_what_it_breaks_reported() -> None:
    orders = [
        order(1, *SPOTS[0], windows=(Window(at(8), at(8, 10)),)),
        order(2, *SPOTS[1], service_s=3600.0),
        order(3, *SPOTS[2], skills=("crane",), size={"parcels": 4.0}),
    ]
    van = vehicle(1, capacity={"parcels": 5.0}, shift_end=time(9), skills=("fridge",))
    p = build(DAY, orders, [van, vehicle(2, skills=("crane",))], {1: depot()})
    seconds = matrix.straight_seconds(p.locations, matrix.TravelModel())
    answer = solver.check(p, seconds, {0: [2, 3, 1]})
    (route,) = solution.read(p, answer, seconds).routes
    assert route.start.time >= at(8)  # never before the shift, even to be on time
    late = route.stops[-1]
    assert late.order.id == 1 and late.lateness_s > 3000
    found = edits.violations(p, answer)[0]
    assert found["stops"][1] == [
        {
            "cause": "time_window",
            "late_s": late.lateness_s,
            "message": found["stops"][1][0]["message"],
        }
    ]
    assert found["stops"][3][0]["cause"] == "skills" and found["stops"][3][0]["missing"] == [
        "crane"
    ]
    causes = {v["cause"]: v for v in found["route"]}
    assert causes["capacity"]["load"] == {"parcels": 6.0}
    assert causes["capacity"]["capacity"] == {"parcels": 5.0}
    assert causes["shift"]["late_s"] > 0 and "after the shift ends" in causes["shift"]["message"]
    assert causes["time_window"]["stops"] == 1 and causes["skills"]["stops"] == 1
    body = proposal.route_json(p, route, [], [0.0] * len(route.stops), [], 0.0, found)
    assert body["violations"] == found["route"]
    assert body["stops"][-1]["violations"] == found["stops"][1]
    total = proposal.summary([body], 0, 2)["violations"]
    # The window and the skill on stops, the load and the shift on the route; the route's
    # lines that sum up its stops are not counted again.
    assert total == 4
    # The cheapest place for the early order is first: it breaks least there.
    assert edits.cheapest_position(p, seconds, 0, [2, 3], 1) == 0


def test_a_plans_vehicle_reads_back_as_planned() -> None:
    van = vehicle(4, skills=("fridge",), max_duration_s=7200, shift_start=time(6, 30))
    back = edits.vehicle_of(proposal.vehicle_json(van), van.created_at)
    assert (back.id, back.name, back.capacity, back.skills) == (
        4,
        "Van 4",
        {"parcels": 10.0},
        ("fridge",),
    )
    assert (back.shift_start, back.shift_end, back.max_duration_s) == (time(6, 30), time(17), 7200)
    assert (back.start_depot_id, back.end_depot_id, back.time_zone) == (1, 1, "UTC")
