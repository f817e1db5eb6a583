"""A plan as JSON: what `POST /api/v1/plans` answers and `plans.proposal` stores.

Per vehicle the ordered stops with planned arrivals (when service starts), the leg driven
to each, the load aboard after it and any lateness; the route's distance, duration,
travel, service and waiting; its path to the last stop and back (encoded polylines,
precision 6). Then the orders left out, each with a reason, and whether travel times came
from the road network or from straight lines.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import polyline

from tracker.planning.problem import Problem
from tracker.planning.solution import Endpoint, PlannedRoute, Solution

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
) -> dict[str, Any]:
    """One vehicle's route. `leg_m[k]` is the leg to stop k (from the start for k = 0)."""
    van = route.van.vehicle
    assert van is not None, "a plan's vans are vehicles"
    legs = list(leg_m)
    # Without a start depot the first stop is where the route begins: no leg to it.
    if len(legs) == len(route.stops) - 1:
        legs.insert(0, 0.0)
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
        "path": encoded(outbound),
        "return_path": encoded(back),
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
    assigned = sum(len(r["stops"]) for r in routes)
    return {
        "date": problem.day.isoformat(),
        "travel": ROADS if roads else STRAIGHT,
        "straight_line": not roads,
        "note": note,
        "summary": {
            "orders": assigned + len(solution.unassigned),
            "assigned": assigned,
            "unassigned": len(solution.unassigned),
            "vehicles": len(problem.vans),
            "vehicles_used": len(routes),
            "distance_m": round(sum(r["distance_m"] for r in routes), 1),
            "duration_s": sum(r["duration_s"] for r in routes),
            "lateness_s": sum(r["lateness_s"] for r in routes),
        },
        "routes": list(routes),
        "unassigned": [
            {
                "order_id": u.order.id,
                "external_id": u.order.external_id,
                "reason": u.reason,
            }
            for u in solution.unassigned
        ],
        "timing": {k: round(v, 3) for k, v in timing.items()},
    }
