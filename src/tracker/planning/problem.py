"""Orders, depots and vehicles as a vehicle routing problem in the solver's terms.

Everything the solver needs, as plain integers: times are whole seconds after the
problem's `t0`, sizes and capacities whole hundredths of their unit (a capacity rounded
down, a size rounded up, so a plan never overloads a van by rounding), skills numbered.
A unit a vehicle's capacity does not name is unlimited for it. Orders that cannot be
planned at all (no coordinates, every window over) are set aside with the reason.

`tracker.planning.solver` hands this to VROOM; `tracker.planning.solution` reads the
answer back. Neither direction needs a solver run to be tested.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from tracker.planning.model import DELIVERY, Depot, Order, Vehicle

AMOUNT_SCALE = 100  # hundredths of a unit: 7.5 kg is 750
UNLIMITED = 2**40  # the capacity of a unit a vehicle does not name
HORIZON_S = 2 * 86_400  # a vehicle without a shift end is free until this long after t0


class ProblemInvalid(ValueError):
    """The request cannot become a problem (no usable vehicle, say); the message says why."""


@dataclass(frozen=True, slots=True)
class Job:
    """One order as the solver sees it. `id` is the order's id."""

    id: int
    location: int  # index into Problem.locations
    service_s: int
    delivery: tuple[int, ...]  # loaded at the depot, dropped here (per unit)
    pickup: tuple[int, ...]  # collected here, brought back (a return)
    skills: frozenset[int]
    priority: int
    windows: tuple[tuple[int, int], ...]  # () = any time


@dataclass(frozen=True, slots=True)
class Van:
    """One vehicle as the solver sees it. Its solver id is its index in Problem.vans;
    `vehicle` is None for the anonymous van of a re-optimised live route."""

    vehicle: Vehicle | None
    start: int | None  # index into Problem.locations
    end: int | None
    capacity: tuple[int, ...]
    skills: frozenset[int]
    window: tuple[int, int]
    max_travel_s: int | None


@dataclass(frozen=True, slots=True)
class SetAside:
    """An order that is not handed to the solver, and why."""

    order_id: int
    reason: str


@dataclass(frozen=True, slots=True)
class Problem:
    """The whole problem: locations (the matrix's points), jobs, vans."""

    day: date
    t0: datetime
    units: tuple[str, ...]
    skills: tuple[str, ...]
    locations: tuple[tuple[float, float], ...]  # (lat, lon)
    jobs: tuple[Job, ...]
    vans: tuple[Van, ...]
    orders: Mapping[int, Order]
    depots: Mapping[int, Depot]
    set_aside: tuple[SetAside, ...]

    def at(self, seconds: float) -> datetime:
        """A solver time as an instant."""
        return self.t0 + timedelta(seconds=seconds)

    def seconds(self, when: datetime) -> int:
        """An instant as a solver time (whole seconds, never before t0)."""
        return max(0, math.floor((when - self.t0).total_seconds()))


def _amounts(size: Mapping[str, float], units: Sequence[str], up: bool) -> tuple[int, ...]:
    # The epsilon keeps 0.29 kg at 29 hundredths (0.29 * 100 is 28.999999999999996).
    if up:
        return tuple(math.ceil(float(size.get(u, 0.0)) * AMOUNT_SCALE - 1e-6) for u in units)
    return tuple(math.floor(float(size.get(u, 0.0)) * AMOUNT_SCALE + 1e-6) for u in units)


def _capacity(capacity: Mapping[str, float], units: Sequence[str]) -> tuple[int, ...]:
    scaled = _amounts(capacity, units, up=False)
    return tuple(c if u in capacity else UNLIMITED for u, c in zip(units, scaled, strict=True))


def _origin(day: date, vehicles: Sequence[Vehicle], orders: Sequence[Order]) -> datetime:
    # The earliest moment anything may happen: midnight (UTC) of the day, or earlier when a
    # shift or a window starts before it (a time zone east of UTC).
    t0 = datetime.combine(day, time(), tzinfo=UTC)
    for v in vehicles:
        start, _ = v.shift_on(day)
        if start is not None:
            t0 = min(t0, start.astimezone(UTC))
    for o in orders:
        for w in o.windows:
            t0 = min(t0, w.start)
    return t0


def build(
    day: date,
    orders: Sequence[Order],
    vehicles: Sequence[Vehicle],
    depots: Mapping[int, Depot],
    not_before: datetime | None = None,
) -> Problem:
    """The problem of serving `orders` on `day` with `vehicles` (starting no earlier than
    `not_before`, e.g. now when planning today). Raises ProblemInvalid without vehicles or
    when a vehicle names no depot at all, or a depot not given."""
    if not vehicles:
        raise ProblemInvalid("no vehicles to plan with")
    t0 = _origin(day, vehicles, orders)
    if not_before is not None:
        t0 = max(t0, not_before.astimezone(UTC))
    units = tuple(
        sorted({u for o in orders for u in o.size} | {u for v in vehicles for u in v.capacity})
    )
    skills = tuple(
        sorted({s for o in orders for s in o.skills} | {s for v in vehicles for s in v.skills})
    )
    skill_no = {s: k for k, s in enumerate(skills)}
    locations: list[tuple[float, float]] = []
    depot_index: dict[int, int] = {}

    def depot_at(depot_id: int | None, vehicle: Vehicle) -> int | None:
        if depot_id is None:
            return None
        depot = depots.get(depot_id)
        if depot is None:
            raise ProblemInvalid(f"vehicle {vehicle.name!r}: no depot {depot_id}")
        if depot_id not in depot_index:
            depot_index[depot_id] = len(locations)
            locations.append((depot.lat, depot.lon))
        return depot_index[depot_id]

    def seconds(when: datetime) -> int:
        return max(0, math.floor((when - t0).total_seconds()))

    vans: list[Van] = []
    for v in vehicles:
        start = depot_at(v.start_depot_id, v)
        end = depot_at(v.end_depot_id, v)
        if start is None and end is None:
            raise ProblemInvalid(f"vehicle {v.name!r} has neither a start nor an end depot")
        shift_start, shift_end = v.shift_on(day)
        opens = seconds(shift_start) if shift_start is not None else 0
        closes = seconds(shift_end) if shift_end is not None else opens + HORIZON_S
        if v.max_duration_s is not None:
            # The solver bounds a route's time by its vehicle's window: a route that may
            # start at the shift's start and last at most max_duration_s ends by then.
            closes = min(closes, opens + v.max_duration_s)
        vans.append(
            Van(
                vehicle=v,
                start=start,
                end=end,
                capacity=_capacity(v.capacity, units),
                skills=frozenset(skill_no[s] for s in v.skills),
                window=(opens, max(opens, closes)),
                max_travel_s=v.max_duration_s,
            )
        )

    jobs: list[Job] = []
    set_aside: list[SetAside] = []
    for o in orders:
        if not o.located or o.lat is None or o.lon is None:
            set_aside.append(SetAside(o.id, "no coordinates: its address is not geocoded"))
            continue
        windows = tuple((seconds(w.start), seconds(w.end)) for w in o.windows if w.end > t0)
        if o.windows and not windows:
            set_aside.append(SetAside(o.id, "every time window of it is over"))
            continue
        amount = _amounts(o.size, units, up=True)
        zero = (0,) * len(units)
        jobs.append(
            Job(
                id=o.id,
                location=len(locations),
                service_s=round(o.service_s),
                delivery=amount if o.kind == DELIVERY else zero,
                pickup=zero if o.kind == DELIVERY else amount,
                skills=frozenset(skill_no[s] for s in o.skills),
                priority=o.priority,
                windows=windows,
            )
        )
        locations.append((o.lat, o.lon))
    return Problem(
        day=day,
        t0=t0,
        units=units,
        skills=skills,
        locations=tuple(locations),
        jobs=tuple(jobs),
        vans=tuple(vans),
        orders={o.id: o for o in orders},
        depots=dict(depots),
        set_aside=tuple(set_aside),
    )
