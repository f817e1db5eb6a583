"""Orders, depots and vehicles as the planner sees them (read back from the store)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

DELIVERY = "delivery"
PICKUP = "pickup"
KINDS = (DELIVERY, PICKUP)

UNPLANNED = "unplanned"
PLANNED = "planned"
DISPATCHED = "dispatched"
DELIVERED = "delivered"
FAILED = "failed"
CANCELLED = "cancelled"
STATUSES = (UNPLANNED, PLANNED, DISPATCHED, DELIVERED, FAILED, CANCELLED)
# An order in one of these is finished: it cannot be changed or cancelled any more.
FINAL_STATUSES = (DELIVERED, FAILED, CANCELLED)

# A dispatched order follows its stop: these stop events finish it. (A skipped stop leaves
# the order as it is: re-planning decides where it goes next.)
STOP_OUTCOMES = {"stop.completed": DELIVERED, "stop.failed": FAILED}

# geocode_status: "given" (coordinates came with the order), "pending" (an address waits for
# the geocoder), "resolved" (one clear answer), "ambiguous" (several: the dispatcher picks),
# "unresolved" (none, or the geocoder failed).
GIVEN = "given"
PENDING = "pending"
RESOLVED = "resolved"
AMBIGUOUS = "ambiguous"
UNRESOLVED = "unresolved"
GEOCODE_STATUSES = (GIVEN, PENDING, RESOLVED, AMBIGUOUS, UNRESOLVED)
# Orders the planner can place on a map.
LOCATED = (GIVEN, RESOLVED)


@dataclass(frozen=True, slots=True)
class Window:
    """A time window [start, end] (UTC-aware) in which the stop may be served."""

    start: datetime
    end: datetime


@dataclass(frozen=True, slots=True)
class Candidate:
    """One answer of the geocoder for an address."""

    lat: float
    lon: float
    label: str
    importance: float
    precise: bool = True  # street level or finer (a town or a country is not)

    def to_json(self) -> dict[str, object]:
        return {
            "lat": self.lat,
            "lon": self.lon,
            "label": self.label,
            "importance": self.importance,
            "precise": self.precise,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Candidate:
        """A candidate as stored by `to_json`."""
        return cls(
            float(data["lat"]),
            float(data["lon"]),
            str(data["label"]),
            float(data["importance"]),
            bool(data.get("precise", True)),
        )


@dataclass(frozen=True, slots=True)
class Order:
    """A delivery or pickup. `lat`/`lon` are None until its address is geocoded."""

    id: int
    external_id: str | None
    kind: str
    lat: float | None
    lon: float | None
    address: str
    recipient: str
    phone: str
    email: str
    windows: tuple[Window, ...]
    service_s: float
    size: Mapping[str, float]
    skills: tuple[str, ...]
    priority: int
    notes: str
    date: date
    status: str
    geocode_status: str
    geocode_candidates: tuple[Candidate, ...]
    route_id: int | None
    stop_id: int | None
    created_at: datetime
    updated_at: datetime

    @property
    def located(self) -> bool:
        """Whether it has coordinates the planner may use."""
        return self.lat is not None and self.lon is not None and self.geocode_status in LOCATED


@dataclass(frozen=True, slots=True)
class Depot:
    """A place vans start from and return to."""

    id: int
    name: str
    lat: float
    lon: float
    address: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Vehicle:
    """A van: its device, capacity per unit, shift, depots, skills and longest route."""

    id: int
    name: str
    device_id: int | None
    device: str | None  # the device's public unique id
    capacity: Mapping[str, float]
    shift_start: time | None
    shift_end: time | None
    time_zone: str
    start_depot_id: int | None
    end_depot_id: int | None
    skills: tuple[str, ...]
    max_duration_s: int | None
    active: bool
    created_at: datetime
    updated_at: datetime

    def shift_on(self, day: date) -> tuple[datetime | None, datetime | None]:
        """The shift of `day` as UTC-aware instants (None where it has no limit). An end
        at or before the start is on the next day (a night shift)."""
        return shift_bounds(day, self.shift_start, self.shift_end, self.time_zone)


def shift_bounds(
    day: date, start: time | None, end: time | None, time_zone: str
) -> tuple[datetime | None, datetime | None]:
    """Local shift times of `day` in `time_zone` as aware datetimes."""
    tz = ZoneInfo(time_zone)
    begin = datetime.combine(day, start, tzinfo=tz) if start is not None else None
    finish = datetime.combine(day, end, tzinfo=tz) if end is not None else None
    if begin is not None and finish is not None and finish <= begin:
        finish = datetime.combine(day + timedelta(days=1), end or time(), tzinfo=tz)
    return (
        begin.astimezone(UTC) if begin is not None else None,
        finish.astimezone(UTC) if finish is not None else None,
    )
