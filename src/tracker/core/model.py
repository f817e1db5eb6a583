"""Plain values shared by every layer: fixes, routes, stops and events.

Units inside the system: speeds m/s, distances metres, coordinates WGS84 degrees,
times timezone-aware UTC. Protocol adapters convert at the edge.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

JsonDict = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Fix:
    """One GPS position report from a device, already in internal units."""

    device_id: int
    time: datetime
    lat: float
    lon: float
    speed: float | None = None  # m/s
    course: float | None = None  # degrees clockwise from north
    accuracy: float | None = None  # metres, horizontal
    altitude: float | None = None  # metres
    attributes: JsonDict = field(default_factory=dict)


class RejectCode:
    """Why a ping was rejected, as one word of a fixed set (the `reason` text says more).

    Metrics count rejects by these codes, so the set must stay small and fixed: the
    filters' names, plus the decoders' own reasons.
    """

    MALFORMED = "malformed"  # a field missing or not what the protocol says it is
    NO_FIX = "no_fix"  # the phone reported that it had no position (0,0, no coords)
    ENCRYPTED = "encrypted"  # an OwnTracks payload encrypted with a key we do not have
    INVALID = "invalid"
    UNSTORABLE = "unstorable"
    OUT_OF_RANGE = "out_of_range"
    FUTURE = "future"
    PAST_RETENTION = "past_retention"
    POOR_ACCURACY = "poor_accuracy"
    IMPLAUSIBLE_JUMP = "implausible_jump"

    ALL = (
        MALFORMED,
        NO_FIX,
        ENCRYPTED,
        INVALID,
        UNSTORABLE,
        OUT_OF_RANGE,
        FUTURE,
        PAST_RETENTION,
        POOR_ACCURACY,
        IMPLAUSIBLE_JUMP,
    )


@dataclass(frozen=True, slots=True)
class Reject:
    """A ping that was not accepted: its index in the request, why (text for the client),
    and a `RejectCode`."""

    index: int
    reason: str
    code: str = RejectCode.MALFORMED


class StopStatus:
    """The life of a stop: pending -> arrived -> visited -> completed | failed | skipped.

    `visited`: the vehicle came and left (its geofence says so) but nobody has closed the
    stop yet; the driver or dispatcher completes it (or fails it), unless the company lets
    departure complete stops (EtaConfig.auto_complete).
    """

    PENDING = "pending"
    ARRIVED = "arrived"
    VISITED = "visited"
    COMPLETED = "completed"
    FAILED = "failed"
    SKIPPED = "skipped"

    DONE = frozenset({COMPLETED, FAILED, SKIPPED})
    ALL = frozenset({PENDING, ARRIVED, VISITED, COMPLETED, FAILED, SKIPPED})


@dataclass(frozen=True, slots=True)
class Stop:
    """A planned stop on a route."""

    id: int
    seq: int
    lat: float
    lon: float
    name: str = ""
    recipient: str = ""
    service_s: float = 0.0
    radius_m: float = 50.0
    planned_arrival: datetime | None = None
    window_start: datetime | None = None
    window_end: datetime | None = None
    status: str = StopStatus.PENDING


@dataclass(frozen=True, slots=True)
class Route:
    """A device's planned route: ordered stops and the path joining them.

    `path` is a sequence of (lat, lon). When the route was created without a path it is
    the stops joined in order and `straight_line` is true, so ETAs say their distances
    are straight-line estimates.
    """

    id: int
    device_id: int
    planned_start: datetime
    stops: tuple[Stop, ...]
    path: tuple[tuple[float, float], ...]
    straight_line: bool = False
    status: str = "active"


class EventType:
    """Names of the events the pipeline emits (stored in `events`, published on the bus)."""

    ETA_CHANGED = "stop.eta_changed"
    ARRIVING = "stop.arriving"
    ARRIVED = "stop.arrived"
    DEPARTED = "stop.departed"
    VISITED = "stop.visited"  # departed from an arrival nobody closed: waits to be completed
    DEFERRED = "stop.deferred"  # passed by without a visit; now expected after the others
    COMPLETED = "stop.completed"
    FAILED = "stop.failed"
    SKIPPED = "stop.skipped"
    OFF_ROUTE = "route.off_route"
    BACK_ON_ROUTE = "route.back_on_route"
    ROUTE_COMPLETED = "route.completed"


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened on a route, at the time of the fix that caused it."""

    type: str
    time: datetime
    device_id: int
    route_id: int | None = None
    stop_id: int | None = None
    data: JsonDict = field(default_factory=dict)
