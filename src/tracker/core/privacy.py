"""What a customer's tracking page may see, decided without I/O.

A customer holds a link to one stop. Their channel carries this stop's destination, its
status as a customer-facing phase, its ETA, and the vehicle's position only while the
vehicle is on its way here: the route is active, has started, and at most
`max_stops_away` stops that are not done come before this one (0: only while this is the
next stop), or the driver is at this stop. Nothing else leaves: no other stop, recipient,
route path, device or internal id, and once the stop is done never a position again.

`TrackedStop` is what the server remembers of one customer's stop: built from the Route
JSON (`from_route`), then kept current from later route summaries (`merge_route`) and route
events (`apply_event`), both of which only ever move a stop forward (pending → arrived →
done), so a late or repeated message cannot revive a finished delivery. `customer_message`
turns it, with the vehicle's latest position and the caller's `now`, into the one message
shape a customer channel carries.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from tracker.core.model import EventType, JsonDict, StopStatus

# Customer-facing phases, in the order a delivery goes through them.
SCHEDULED = "scheduled"
OUT_FOR_DELIVERY = "out_for_delivery"
NEXT_STOP = "next_stop"
ARRIVING = "arriving"
ARRIVED = "arrived"
DELIVERED = "delivered"
FAILED = "failed"
CANCELLED = "cancelled"
PHASES = (SCHEDULED, OUT_FOR_DELIVERY, NEXT_STOP, ARRIVING, ARRIVED, DELIVERED, FAILED, CANCELLED)

ROUTE_ACTIVE = "active"
ROUTE_COMPLETED = "completed"
ROUTE_CANCELLED = "cancelled"

# A stop the vehicle came to and left without anyone closing it (the route's `visited`
# status): the driver has been at the door, but only completing it says "Delivered".
VISITED = "visited"
VISITED_EVENT = "stop.visited"

_RANK = {
    StopStatus.PENDING: 0,
    StopStatus.ARRIVED: 1,
    VISITED: 2,
    StopStatus.COMPLETED: 3,
    StopStatus.FAILED: 3,
    StopStatus.SKIPPED: 3,
}
_EVENT_STATUS = {
    EventType.ARRIVED: StopStatus.ARRIVED,
    VISITED_EVENT: VISITED,
    EventType.COMPLETED: StopStatus.COMPLETED,
    EventType.FAILED: StopStatus.FAILED,
    EventType.SKIPPED: StopStatus.SKIPPED,
}
_COORD_DIGITS = 5  # about a metre: finer is noise, and smaller frames


@dataclass(frozen=True, slots=True)
class Rule:
    """The knobs of the visibility rule and of the phases."""

    max_stops_away: int = 1  # TRACKER_CUSTOMER_MAX_STOPS_AWAY
    arriving_s: float = 300.0  # "arriving" once the ETA is this close (as stop.arriving)
    # A vehicle fix from longer than this before the planned start is not this route's drive
    # (yesterday's last position, the driver's home): it is never shown.
    lead_s: float = 1800.0


@dataclass(frozen=True, slots=True)
class Position:
    """A vehicle's latest fix, as far as a customer could ever see it."""

    lat: float
    lon: float
    time: datetime
    course: float | None = None


@dataclass(frozen=True, slots=True)
class TrackedStop:
    """One customer's stop, and of its route only what the visibility rule needs."""

    route_id: int
    stop_id: int
    name: str
    lat: float
    lon: float
    planned_start: datetime
    route_status: str
    straight_line: bool
    status: str
    eta: datetime | None
    arrived_at: datetime | None
    done_at: datetime | None
    # (stop id, status) of every stop sequenced before this one, in order.
    ahead: tuple[tuple[int, str], ...]
    # The ETA's 80 % interval ("between 10:40 and 10:50").
    eta_earliest: datetime | None = None
    eta_latest: datetime | None = None
    # Passed by without a visit: the vehicle serves other stops first, so this one is not
    # "the next stop" whatever the sequence says.
    deferred: bool = False

    @property
    def done(self) -> bool:
        """Whether the stop has its outcome (completed, failed or skipped)."""
        return self.status in StopStatus.DONE


def _time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
        return parsed if parsed.tzinfo is not None else None
    return None


def _rank(status: str) -> int:
    return _RANK.get(status, -1)


def _stops(route: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    stops = route.get("stops")
    if not isinstance(stops, list):
        return []
    valid = [s for s in stops if isinstance(s, Mapping) and isinstance(s.get("seq"), int)]
    return sorted(valid, key=lambda s: s["seq"])


def from_route(route: Mapping[str, Any], stop_id: int) -> TrackedStop | None:
    """The customer's view of stop `stop_id` of a Route JSON, or None if it is not there."""
    stops = _stops(route)
    k = next((i for i, s in enumerate(stops) if s.get("id") == stop_id), None)
    planned_start = _time(route.get("planned_start"))
    if k is None or planned_start is None or not isinstance(route.get("id"), int):
        return None
    own = stops[k]
    status = str(own.get("status"))
    if _rank(status) < 0:
        return None
    return TrackedStop(
        route_id=route["id"],
        stop_id=stop_id,
        name=str(own.get("name") or ""),
        lat=float(own["lat"]),
        lon=float(own["lon"]),
        planned_start=planned_start,
        route_status=str(route.get("status") or ROUTE_ACTIVE),
        straight_line=bool(route.get("straight_line")),
        status=status,
        eta=_time(own.get("eta")) if status == StopStatus.PENDING else None,
        arrived_at=_time(own.get("arrived_at")),
        done_at=_time(own.get("completed_at")) if status in StopStatus.DONE else None,
        ahead=tuple((int(s["id"]), str(s.get("status"))) for s in stops[:k]),
        eta_earliest=_time(own.get("eta_earliest")) if status == StopStatus.PENDING else None,
        eta_latest=_time(own.get("eta_latest")) if status == StopStatus.PENDING else None,
        deferred=bool(own.get("deferred")) and status == StopStatus.PENDING,
    )


def _forward(current: str, new: str) -> str:
    """The later of two statuses of one stop; among outcomes the first one stays."""
    return new if _rank(new) > _rank(current) else current


def _route_status(current: str, new: Any) -> str:
    # A route leaves `active` once and for all.
    if current == ROUTE_ACTIVE and new in (ROUTE_COMPLETED, ROUTE_CANCELLED):
        return str(new)
    return current


def merge_route(tracked: TrackedStop, route: Mapping[str, Any]) -> TrackedStop:
    """`tracked` brought up to date with a Route JSON; another route changes nothing."""
    if route.get("id") != tracked.route_id:
        return tracked
    fresh = from_route(route, tracked.stop_id)
    if fresh is None:
        return tracked
    statuses = dict(fresh.ahead)
    ahead = tuple((sid, _forward(st, statuses.get(sid, st))) for sid, st in tracked.ahead)
    merged = replace(
        tracked,
        route_status=_route_status(tracked.route_status, fresh.route_status),
        straight_line=fresh.straight_line,
        ahead=ahead,
    )
    if tracked.done:
        return merged
    if _rank(fresh.status) > _rank(tracked.status):
        return replace(
            merged,
            status=fresh.status,
            eta=fresh.eta,
            eta_earliest=fresh.eta_earliest,
            eta_latest=fresh.eta_latest,
            deferred=fresh.deferred,
            arrived_at=fresh.arrived_at or tracked.arrived_at,
            done_at=fresh.done_at,
        )
    if fresh.status == tracked.status:
        # Same status: the summary's ETA is the newer one.
        return replace(
            merged,
            eta=fresh.eta,
            eta_earliest=fresh.eta_earliest,
            eta_latest=fresh.eta_latest,
            deferred=fresh.deferred,
            arrived_at=fresh.arrived_at or tracked.arrived_at,
        )
    return merged


def apply_event(tracked: TrackedStop, event: Mapping[str, Any]) -> TrackedStop:
    """`tracked` after a route event (the `event` object of an `events` bus message)."""
    if event.get("route_id") != tracked.route_id:
        return tracked
    kind = event.get("type")
    when = _time(event.get("time"))
    if kind == EventType.ROUTE_COMPLETED:
        return replace(tracked, route_status=_route_status(tracked.route_status, ROUTE_COMPLETED))
    stop_id = event.get("stop_id")
    status = _EVENT_STATUS.get(str(kind))
    if stop_id != tracked.stop_id:
        if status is None:
            return tracked
        ahead = tuple(
            (sid, _forward(st, status) if sid == stop_id else st) for sid, st in tracked.ahead
        )
        return replace(tracked, ahead=ahead)
    if status is not None:
        new = _forward(tracked.status, status)
        if new == tracked.status:
            return tracked
        gone = {"eta": None, "eta_earliest": None, "eta_latest": None, "deferred": False}
        if new == StopStatus.ARRIVED:
            return replace(tracked, status=new, arrived_at=when, **gone)  # type: ignore[arg-type]
        if new == VISITED:
            return replace(tracked, status=new, arrived_at=tracked.arrived_at or when, **gone)  # type: ignore[arg-type]
        return replace(tracked, status=new, done_at=when, **gone)  # type: ignore[arg-type]
    if kind in (EventType.ETA_CHANGED, EventType.ARRIVING) and tracked.status == StopStatus.PENDING:
        data = event.get("data")
        if not isinstance(data, Mapping):
            return tracked
        eta = _time(data.get("eta"))
        if eta is not None:
            return replace(
                tracked,
                eta=eta,
                eta_earliest=_time(data.get("eta_earliest")),
                eta_latest=_time(data.get("eta_latest")),
            )
    if kind == EventType.DEFERRED and tracked.status == StopStatus.PENDING:
        return replace(tracked, deferred=True)
    return tracked


def stops_away(tracked: TrackedStop) -> int:
    """How many stops still to serve come before this one (0: this is the next stop)."""
    return sum(1 for _, status in tracked.ahead if status not in StopStatus.DONE)


def started(tracked: TrackedStop, now: datetime) -> bool:
    """Whether the route's drive has begun: its planned start passed or a stop progressed."""
    if now >= tracked.planned_start or tracked.status != StopStatus.PENDING:
        return True
    return any(status != StopStatus.PENDING for _, status in tracked.ahead)


def phase(tracked: TrackedStop, now: datetime, rule: Rule) -> str:
    """The customer-facing phase of the stop."""
    if tracked.status == StopStatus.COMPLETED:
        return DELIVERED
    if tracked.status in StopStatus.DONE:
        return FAILED
    if tracked.route_status == ROUTE_CANCELLED:
        return CANCELLED
    if tracked.status in (StopStatus.ARRIVED, VISITED):
        # Visited: the driver was at the door; "Delivered" waits for the completion.
        return ARRIVED
    if not started(tracked, now):
        return SCHEDULED
    if stops_away(tracked) > 0 or tracked.deferred:
        return OUT_FOR_DELIVERY
    if tracked.eta is not None and tracked.eta - now <= timedelta(seconds=rule.arriving_s):
        return ARRIVING
    return NEXT_STOP


def vehicle_visible(
    tracked: TrackedStop,
    vehicle: Position | None,
    now: datetime,
    rule: Rule,
    driving_route: int | None = None,
) -> bool:
    """The rule: the vehicle is shown only while it is on its way to (or at) this stop.

    `driving_route` is the route the vehicle is driving now (its device's newest active
    route), when known: a vehicle that moved on to another route is not on its way here,
    whatever this route's stops say.
    """
    if vehicle is None or tracked.done or tracked.route_status != ROUTE_ACTIVE:
        return False
    if tracked.status == VISITED:  # been and gone: where it drives next is not this stop's
        return False
    if driving_route is not None and driving_route != tracked.route_id:
        return False
    if vehicle.time < tracked.planned_start - timedelta(seconds=rule.lead_s):
        return False
    if tracked.status == StopStatus.ARRIVED:
        return True
    if tracked.status == StopStatus.VISITED or tracked.deferred:
        return False  # gone on to other stops
    return started(tracked, now) and stops_away(tracked) <= rule.max_stops_away


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def customer_message(
    tracked: TrackedStop,
    vehicle: Position | None,
    now: datetime,
    rule: Rule,
    driving_route: int | None = None,
) -> JsonDict:
    """Everything a customer channel carries about its stop: the one state shape of the
    tracking page's snapshot and deltas."""
    shown: JsonDict | None = None
    if vehicle is not None and vehicle_visible(tracked, vehicle, now, rule, driving_route):
        shown = {
            "lat": round(vehicle.lat, _COORD_DIGITS),
            "lon": round(vehicle.lon, _COORD_DIGITS),
            "time": vehicle.time.isoformat(),
            "course": None if vehicle.course is None else round(vehicle.course),
        }
    current = phase(tracked, now, rule)
    return {
        "destination": {
            "name": tracked.name,
            "lat": round(tracked.lat, _COORD_DIGITS),
            "lon": round(tracked.lon, _COORD_DIGITS),
        },
        "phase": current,
        "eta": _iso(tracked.eta) if tracked.status == StopStatus.PENDING else None,
        "eta_earliest": _iso(tracked.eta_earliest)
        if tracked.status == StopStatus.PENDING
        else None,
        "eta_latest": _iso(tracked.eta_latest) if tracked.status == StopStatus.PENDING else None,
        # The ETA was measured along straight lines (the route has no planned path).
        "approximate": tracked.straight_line,
        "arrived_at": _iso(tracked.arrived_at),
        "done_at": _iso(tracked.done_at) if tracked.done else None,
        "vehicle": shown,
    }
