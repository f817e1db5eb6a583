"""A plan as JSON: what `POST /api/v1/plans` answers and `plans.proposal` stores.

Per vehicle the ordered stops with planned arrivals (when service starts), the leg driven
to each, the load aboard after it and any lateness; the route's distance, duration,
travel, service and waiting; its path to the last stop and back (encoded polylines,
precision 6); the constraints its order breaks (`violations`, per stop and per route: none
as the solver proposes it, possibly some once a dispatcher has moved stops by hand). Then
the orders left out, each with a reason, every vehicle the plan was made with (so an edit
can re-evaluate a route on the same terms), and whether travel times came from the road
network or from straight lines.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import polyline

from tracker.planning.model import Vehicle
from tracker.planning.problem import Problem
from tracker.planning.solution import Endpoint, PlannedRoute, Solution

Violations = Mapping[str, Any]  # {"route": [violation], "stops": {order id: [violation]}}

PRECISION = 6
ROADS = "roads"
STRAIGHT = "straight_line"
STRAIGHT_NOTE = (
    "no road network is loaded: travel times are straight-line estimates "
    "(distance × {detour:g} at {speed:g} km/h); import roads with `tracker roads import`"
)

Point = tuple[float, float]


def encoded(points: Sequence[Point]) -> dict[str, Any] | None:
    """A path as the routes API accepts it, or None for fewer than two points."""
    if len(points) < 2:
        return None
    return {"polyline": polyline.encode(list(points), PRECISION), "precision": PRECISION}


def _iso(when: datetime) -> str:
    return when.isoformat()


def _endpoint(end: Endpoint, problem: Problem) -> dict[str, Any]:
    depot = problem.depots.get(end.depot_id) if end.depot_id is not None else None
    return {
        "depot_id": end.depot_id,
        "name": depot.name if depot is not None else None,
        "lat": end.lat,
        "lon": end.lon,
        "time": _iso(end.time),
    }


def route_json(
    problem: Problem,
    route: PlannedRoute,
    outbound: Sequence[Point],
    leg_m: Sequence[float],
    back: Sequence[Point],
    back_m: float,
    violations: Violations | None = None,
) -> dict[str, Any]:
    """One vehicle's route. `leg_m[k]` is the leg to stop k (from the start for k = 0);
    `violations` as `tracker.planning.edits.violations` reads them (None: there are none)."""
    van = route.van.vehicle
    assert van is not None, "a plan's vans are vehicles"
    legs = list(leg_m)
    # Without a start depot the first stop is where the route begins: no leg to it.
    if len(legs) == len(route.stops) - 1:
        legs.insert(0, 0.0)
    per_stop: Mapping[int, Any] = violations["stops"] if violations else {}
    stops = [
        {
            "seq": k + 1,
            "order_id": s.order.id,
            "external_id": s.order.external_id,
            "kind": s.order.kind,
            "recipient": s.order.recipient,
            "address": s.order.address,
            "lat": s.lat,
            "lon": s.lon,
            "arrival": _iso(s.arrival),
            "waiting_s": s.waiting_s,
            "service_s": s.service_s,
            "departure": _iso(s.arrival + timedelta(seconds=s.service_s)),
            "travel_s": s.travel_s,
            "distance_m": round(legs[k], 1),
            "load": dict(s.load),
            "lateness_s": s.lateness_s,
            "windows": [[_iso(w.start), _iso(w.end)] for w in s.order.windows],
            "violations": list(per_stop.get(s.order.id, ())),
        }
        for k, s in enumerate(route.stops)
    ]
    return {
        "vehicle_id": van.id or None,
        "vehicle": van.name,
        "device": van.device,
        "start": _endpoint(route.start, problem),
        "end": _endpoint(route.end, problem),
        "stops": stops,
        "distance_m": round(sum(legs) + back_m, 1),
        "duration_s": route.duration_s,
        "travel_s": route.travel_s,
        "service_s": route.service_s,
        "waiting_s": route.waiting_s,
        "lateness_s": route.lateness_s,
        "load": dict(route.load),
        "violations": list(violations["route"]) if violations else [],
        "path": encoded(outbound),
        "return_path": encoded(back),
    }


def vehicle_json(vehicle: Vehicle) -> dict[str, Any]:
    """A vehicle of the plan as it was when planned (`edits.vehicle_of` reads it back)."""
    return {
        "vehicle_id": vehicle.id or None,
        "vehicle": vehicle.name,
        "device": vehicle.device,
        "capacity": dict(vehicle.capacity),
        "skills": list(vehicle.skills),
        "shift_start": None if vehicle.shift_start is None else vehicle.shift_start.isoformat(),
        "shift_end": None if vehicle.shift_end is None else vehicle.shift_end.isoformat(),
        "time_zone": vehicle.time_zone,
        "start_depot_id": vehicle.start_depot_id,
        "end_depot_id": vehicle.end_depot_id,
        "max_duration_s": vehicle.max_duration_s,
    }


def summary(routes: Sequence[Mapping[str, Any]], unassigned: int, vehicles: int) -> dict[str, Any]:
    """The plan's totals over its routes."""
    assigned = sum(len(r["stops"]) for r in routes)
    return {
        "orders": assigned + unassigned,
        "assigned": assigned,
        "unassigned": unassigned,
        "vehicles": vehicles,
        "vehicles_used": len(routes),
        "distance_m": round(sum(r["distance_m"] for r in routes), 1),
        "duration_s": sum(r["duration_s"] for r in routes),
        "lateness_s": sum(r["lateness_s"] for r in routes),
        # Each broken constraint once: a route's line that sums up its stops' is not counted.
        "violations": sum(
            sum(1 for v in r.get("violations", ()) if "stops" not in v)
            + sum(len(s.get("violations", ())) for s in r["stops"])
            for r in routes
        ),
    }


def plan_json(
    problem: Problem,
    solution: Solution,
    routes: Sequence[Mapping[str, Any]],
    roads: bool,
    note: str | None,
    timing: Mapping[str, float],
) -> dict[str, Any]:
    """The whole proposal (without its id and status, which the store adds)."""
    return {
        "date": problem.day.isoformat(),
        "travel": ROADS if roads else STRAIGHT,
        "straight_line": not roads,
        "note": note,
        "summary": summary(routes, len(solution.unassigned), len(problem.vans)),
        "routes": list(routes),
        "unassigned": [
            {
                "order_id": u.order.id,
                "external_id": u.order.external_id,
                "reason": u.reason,
            }
            for u in solution.unassigned
        ],
        "vehicles": [vehicle_json(v.vehicle) for v in problem.vans if v.vehicle is not None],
        "timing": {k: round(v, 3) for k, v in timing.items()},
    }
