"""Editing a proposal by hand: the vehicles it was planned with, where a moved order goes,
and what VROOM's plan mode says the edited routes break.

A dispatcher may knowingly put an order where it does not fit (a window missed, a van
overloaded, a skill it lacks, a shift overrun): the route is still evaluated, and each
broken constraint is reported on the stop or route it concerns rather than refused.
VROOM's `check` (plan mode) gives the arrivals and its `violations`; this module turns them
into our terms:

- `time_window` on a stop: service starts `late_s` after its (last) window closes;
- `skills` on a stop: the van lacks `missing` skills the order needs;
- `capacity` on a stop (a pickup fills the van past its capacity) or on the route (what
  leaves the depot is more than the van holds): `load` against `capacity`;
- `shift` / `max_duration` on the route: back `late_s` after the shift ends, or the route
  drives longer than the vehicle's longest route (`max_duration_s`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime, time
from typing import Any

import numpy as np

from tracker.planning import solver
from tracker.planning.model import Vehicle
from tracker.planning.problem import AMOUNT_SCALE, UNLIMITED, Problem, Van

TIME_WINDOW = "time_window"
SKILLS = "skills"
CAPACITY = "capacity"
SHIFT = "shift"
MAX_DURATION = "max_duration"
UNASSIGNED_BY_HAND = "unassigned by the dispatcher"


def vehicle_of(data: Mapping[str, Any], now: datetime) -> Vehicle:
    """A vehicle of a plan from `proposal.vehicle_json`."""

    def clock(value: object) -> time | None:
        return None if value is None else time.fromisoformat(str(value))

    return Vehicle(
        id=int(data.get("vehicle_id") or 0),
        name=str(data["vehicle"]),
        device_id=None,
        device=data.get("device"),
        capacity={str(k): float(v) for k, v in (data.get("capacity") or {}).items()},
        shift_start=clock(data.get("shift_start")),
        shift_end=clock(data.get("shift_end")),
        time_zone=str(data.get("time_zone") or "UTC"),
        start_depot_id=data.get("start_depot_id"),
        end_depot_id=data.get("end_depot_id"),
        skills=tuple(data.get("skills") or ()),
        max_duration_s=data.get("max_duration_s"),
        active=True,
        created_at=now,
        updated_at=now,
    )


def _clock(seconds: float) -> str:
    m = round(seconds / 60)
    return f"{m} min" if m < 60 else f"{m // 60} h {m % 60} min"


def _over(load: Sequence[int], van: Van, problem: Problem) -> dict[str, Any]:
    over = {
        u: (load[k] / AMOUNT_SCALE, van.capacity[k] / AMOUNT_SCALE)
        for k, u in enumerate(problem.units)
        if van.capacity[k] < UNLIMITED and load[k] > van.capacity[k]
    }
    text = ", ".join(f"{u} {a:g} aboard > {c:g}" for u, (a, c) in over.items())
    return {
        "load": {u: a for u, (a, _) in over.items()},
        "capacity": {u: c for u, (_, c) in over.items()},
        "message": f"over capacity: {text}" if text else "over capacity",
    }


def _van_limit(van: Van, day: date) -> str:
    # The van's window closes at its shift end, or earlier at start + max_duration_s.
    vehicle = van.vehicle
    if vehicle is None or vehicle.max_duration_s is None:
        return SHIFT
    start, end = vehicle.shift_on(day)
    if end is None or start is None:
        return MAX_DURATION
    return MAX_DURATION if (end - start).total_seconds() > vehicle.max_duration_s else SHIFT


def violations(problem: Problem, answer: Mapping[str, Any]) -> dict[int, dict[str, Any]]:
    """Per van (index in problem.vans): {"route": [...], "stops": {order id: [...]}} from a
    plan-mode answer. The route's list has its own violations and one line per kind of stop
    violation, so a route card can show what is wrong at a glance."""
    out: dict[int, dict[str, Any]] = {}
    jobs = {j.id: j for j in problem.jobs}
    for r in answer.get("routes", []):
        k = int(r["vehicle"])
        van = problem.vans[k]
        route: list[dict[str, Any]] = []
        stops: dict[int, list[dict[str, Any]]] = {}
        causes: set[str] = set()
        for step in r.get("steps", []):
            found = {v["cause"]: v for v in step.get("violations", [])}
            kind = step["type"]
            if kind == "job":
                oid = int(step["id"])
                mine: list[dict[str, Any]] = []
                if "delay" in found:
                    late = int(found["delay"].get("duration", 0))
                    mine.append(
                        {
                            "cause": TIME_WINDOW,
                            "late_s": late,
                            "message": f"{_clock(late)} after its time window",
                        }
                    )
                if "skills" in found:
                    missing = sorted(problem.skills[s] for s in jobs[oid].skills - van.skills)
                    mine.append(
                        {
                            "cause": SKILLS,
                            "missing": missing,
                            "message": "the van lacks " + ", ".join(missing),
                        }
                    )
                if "load" in found:
                    mine.append({"cause": CAPACITY, **_over(step.get("load") or [], van, problem)})
                mine += [
                    {"cause": c, "message": c.replace("_", " ")}
                    for c in found
                    if c not in ("delay", "skills", "load", "max_travel_time")
                ]
                if mine:
                    stops[oid] = mine
                    causes |= {v["cause"] for v in mine}
            elif kind == "start" and "load" in found:
                route.append({"cause": CAPACITY, **_over(step.get("load") or [], van, problem)})
            elif kind == "end" and "delay" in found:
                late = int(found["delay"].get("duration", 0))
                limit = _van_limit(van, problem.day)
                what = "the shift ends" if limit == SHIFT else "its longest route allows"
                route.append(
                    {"cause": limit, "late_s": late, "message": f"back {_clock(late)} after {what}"}
                )
        if any(v["cause"] == "max_travel_time" for v in r.get("violations", [])):
            most = _clock(van.max_travel_s or 0)
            route.append(
                {"cause": MAX_DURATION, "message": f"drives longer than its longest route ({most})"}
            )
        for cause in sorted(causes):
            count = sum(1 for vs in stops.values() if any(v["cause"] == cause for v in vs))
            if cause == CAPACITY and any(v["cause"] == CAPACITY for v in route):
                continue
            label = {TIME_WINDOW: "late for the time window", SKILLS: "need a skill the van lacks"}
            text = label.get(cause, cause.replace("_", " "))
            route.append({"cause": cause, "stops": count, "message": f"{count} stop(s) {text}"})
        out[k] = {"route": route, "stops": stops}
    return out


def _score(answer: Mapping[str, Any]) -> tuple[int, int, int]:
    # Fewer broken constraints first, then less total delay, then the shorter route.
    broken = 0
    delay = 0
    for r in answer.get("routes", []):
        for step in r.get("steps", []):
            for v in step.get("violations", []):
                if v["cause"] == "delay":
                    delay += int(v.get("duration", 0))
                else:
                    broken += 1
    return broken, delay, int(answer.get("summary", {}).get("cost", 0))


def cheapest_position(
    problem: Problem, seconds: np.ndarray, van: int, stops: Sequence[int], order_id: int
) -> int:
    """Where in `stops` (job ids of van `van`) the job `order_id` breaks least and costs
    least, by VROOM's own evaluation of each place (CPU-bound: run it in a thread)."""
    best: tuple[tuple[int, int, int], int] | None = None
    for k in range(len(stops) + 1):
        steps = {van: [*stops[:k], order_id, *stops[k:]]}
        score = _score(solver.check(problem, seconds, steps))
        if best is None or score < best[0]:
            best = (score, k)
    assert best is not None
    return best[1]
