"""VROOM's answer back in our terms: per vehicle the ordered stops with planned arrivals,
loads and lateness, and every order left out with the reason.

VROOM says only *that* a job is unassigned, so the reason is worked out here, from the
first test that fails: no vehicle has the skills, it is larger than every such vehicle,
no such vehicle can reach it within a window and be back before its shift ends, or else
the fleet's capacity and time are taken by other orders.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from tracker.planning.model import Order
from tracker.planning.problem import AMOUNT_SCALE, UNLIMITED, Job, Problem, Van

NO_SKILLS = "no vehicle has the skills it needs: {skills}"
TOO_LARGE = "larger than every vehicle that has its skills ({detail})"
OUT_OF_REACH = "no vehicle can reach it within its time windows and be back before its shift ends"
NO_ROOM = "no room left: the vehicles' capacity and working time went to other orders"


@dataclass(frozen=True, slots=True)
class PlannedStop:
    """One order served at its place in a route. `arrival` is when service starts (the
    moment a live ETA for the stop means); the van may get there earlier and wait."""

    order: Order
    lat: float
    lon: float
    location: int  # index into Problem.locations
    arrival: datetime
    waiting_s: int
    service_s: int
    travel_s: int  # from the previous stop (or the start)
    load: Mapping[str, float]  # aboard after the stop
    lateness_s: int


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a route starts or ends: a depot (or the first/last stop) and when."""

    depot_id: int | None
    lat: float
    lon: float
    location: int
    time: datetime


@dataclass(frozen=True, slots=True)
class PlannedRoute:
    """One vehicle's route in a plan."""

    van: Van
    start: Endpoint
    end: Endpoint
    stops: tuple[PlannedStop, ...]
    travel_s: int
    service_s: int
    waiting_s: int
    load: Mapping[str, float]  # aboard when leaving the start

    @property
    def duration_s(self) -> int:
        """From leaving the start to reaching the end."""
        return round((self.end.time - self.start.time).total_seconds())

    @property
    def lateness_s(self) -> int:
        """The sum of the stops' lateness."""
        return sum(s.lateness_s for s in self.stops)


@dataclass(frozen=True, slots=True)
class Unassigned:
    """An order no route serves, and why."""

    order: Order
    reason: str


@dataclass(frozen=True, slots=True)
class Solution:
    """The solver's answer read back."""

    routes: tuple[PlannedRoute, ...]
    unassigned: tuple[Unassigned, ...]
    cost: int
    extra: dict[str, Any] = field(default_factory=dict)


def units_of(values: Sequence[int], units: Sequence[str]) -> dict[str, float]:
    """Solver amounts (hundredths) as {unit: amount}."""
    return {u: v / AMOUNT_SCALE for u, v in zip(units, values, strict=True)}


def lateness(arrival_s: int, windows: Sequence[tuple[int, int]]) -> int:
    """Seconds after the end of the last window that began before the service start."""
    if not windows:
        return 0
    for a, b in windows:
        if a <= arrival_s <= b:
            return 0
    ended = [b for a, b in windows if b < arrival_s]
    return arrival_s - max(ended) if ended else 0


def _fits(job: Job, van: Van) -> bool:
    return all(
        d <= c and p <= c for d, p, c in zip(job.delivery, job.pickup, van.capacity, strict=True)
    )


def _in_time(job: Job, van: Van, seconds: np.ndarray) -> bool:
    opens, closes = van.window
    there = opens + (int(seconds[van.start, job.location]) if van.start is not None else 0)
    back = int(seconds[job.location, van.end]) if van.end is not None else 0
    windows = job.windows or ((0, closes),)
    for a, b in windows:
        begin = max(there, a)
        if begin <= b and begin + job.service_s + back <= closes:
            return True
    return False


def reason(problem: Problem, job: Job, seconds: np.ndarray) -> str:
    """Why no route could take `job`: the first of the checks that no vehicle passes."""
    capable = [v for v in problem.vans if job.skills <= v.skills]
    if not capable:
        missing = sorted(
            problem.skills[s]
            for s in job.skills - frozenset().union(*(v.skills for v in problem.vans))
        )
        names = missing or sorted(problem.skills[s] for s in job.skills)
        return NO_SKILLS.format(skills=", ".join(names))
    roomy = [v for v in capable if _fits(job, v)]
    if not roomy:
        parts = []
        for k, unit in enumerate(problem.units):
            need = max(job.delivery[k], job.pickup[k])
            most = max(v.capacity[k] for v in capable)
            if most < UNLIMITED and need > most:
                parts.append(f"{unit} {need / AMOUNT_SCALE:g} > {most / AMOUNT_SCALE:g}")
        return TOO_LARGE.format(detail=", ".join(parts))
    if not any(_in_time(job, v, seconds) for v in roomy):
        return OUT_OF_REACH
    return NO_ROOM


def _endpoint(problem: Problem, van: Van, location: int, when: datetime, start: bool) -> Endpoint:
    depot = None
    if van.vehicle is not None and (van.start if start else van.end) is not None:
        depot = van.vehicle.start_depot_id if start else van.vehicle.end_depot_id
    lat, lon = problem.locations[location]
    return Endpoint(depot, lat, lon, location, when)


def read(problem: Problem, answer: Mapping[str, Any], seconds: np.ndarray) -> Solution:
    """VROOM's JSON answer to `problem` as routes and unassigned orders (with reasons)."""
    if answer.get("code", 0) != 0:
        raise ValueError(f"solver error {answer.get('code')}: {answer.get('error', '')}")
    jobs = {j.id: j for j in problem.jobs}
    zero = (0,) * len(problem.units)
    routes: list[PlannedRoute] = []
    for r in answer.get("routes", []):
        van = problem.vans[int(r["vehicle"])]
        steps = r["steps"]
        stops: list[PlannedStop] = []
        prev_duration = 0
        start_step = next((s for s in steps if s["type"] == "start"), None)
        end_step = next((s for s in steps if s["type"] == "end"), None)
        for s in steps:
            if s["type"] != "job":
                continue
            job = jobs[int(s["id"])]
            order = problem.orders[job.id]
            begins = int(s["arrival"]) + int(s.get("waiting_time", 0)) + int(s.get("setup", 0))
            lat, lon = problem.locations[job.location]
            stops.append(
                PlannedStop(
                    order=order,
                    lat=lat,
                    lon=lon,
                    location=job.location,
                    arrival=problem.at(begins),
                    waiting_s=int(s.get("waiting_time", 0)),
                    service_s=int(s.get("service", job.service_s)),
                    travel_s=int(s["duration"]) - prev_duration,
                    load=units_of(s.get("load") or zero, problem.units),
                    lateness_s=lateness(begins, job.windows),
                )
            )
            prev_duration = int(s["duration"])
        if not stops:
            continue
        first, last = stops[0], stops[-1]
        if start_step is not None:
            start = _endpoint(
                problem,
                van,
                int(start_step["location_index"]),
                problem.at(int(start_step["arrival"])),
                True,
            )
            load = units_of(start_step.get("load") or zero, problem.units)
        else:
            depart = first.arrival.timestamp() - first.waiting_s
            start = Endpoint(
                None,
                first.lat,
                first.lon,
                first.location,
                datetime.fromtimestamp(depart, first.arrival.tzinfo),
            )
            load = units_of(zero, problem.units)
        if end_step is not None:
            end = _endpoint(
                problem,
                van,
                int(end_step["location_index"]),
                problem.at(int(end_step["arrival"])),
                False,
            )
        else:
            finish = last.arrival.timestamp() + last.service_s
            end = Endpoint(
                None,
                last.lat,
                last.lon,
                last.location,
                datetime.fromtimestamp(finish, last.arrival.tzinfo),
            )
        routes.append(
            PlannedRoute(
                van=van,
                start=start,
                end=end,
                stops=tuple(stops),
                travel_s=int(r.get("duration", prev_duration)),
                service_s=int(r.get("service", sum(s.service_s for s in stops))),
                waiting_s=int(r.get("waiting_time", sum(s.waiting_s for s in stops))),
                load=load,
            )
        )
    unassigned = [Unassigned(problem.orders[a.order_id], a.reason) for a in problem.set_aside] + [
        Unassigned(problem.orders[int(u["id"])], reason(problem, jobs[int(u["id"])], seconds))
        for u in answer.get("unassigned", [])
    ]
    unassigned.sort(key=lambda u: u.order.id)
    cost = int(answer.get("summary", {}).get("cost", 0))
    return Solution(tuple(routes), tuple(unassigned), cost)
