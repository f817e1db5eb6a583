"""What the live hub knows and sends, without any I/O: the fleet's latest state, the changes
waiting for the next frame, channel views, and the versioned message shapes.

The hub (tracker.live.hub) feeds bus messages into a `Fleet`, which turns each into an `Update`
(a vehicle's new state and/or a route event). Each channel filters updates through its
`View` and collects them in a `Changes`, where the latest state of a vehicle replaces older
ones. Callers pass the time; nothing here reads a clock.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

PROTOCOL_VERSION = 1
POSITIONS = "positions"
ROUTES = "routes"
EVENTS = "events"

# Keys of a bus "route" message that are not part of the route summary itself.
_ROUTE_ENVELOPE = frozenset({"type", "device", "v"})
_VEHICLE_KEYS = ("id", "name", "time", "lat", "lon", "speed", "course", "accuracy", "route")

Vehicle = dict[str, Any]
Event = dict[str, Any]
Message = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Update:
    """One bus message's effect: the device's new vehicle state and/or a route event."""

    device: str
    vehicle: Vehicle | None = None
    event: Event | None = None


@dataclass(slots=True)
class Changes:
    """What changed since the last frame: latest state per vehicle, and events in order.

    Events are not coalesced; past `max_events` the oldest are dropped, so a client that
    falls far behind gets a bounded frame.
    """

    max_events: int = 500
    vehicles: dict[str, Vehicle] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    dropped_events: int = 0

    def __bool__(self) -> bool:
        return bool(self.vehicles or self.events)

    def add(self, update: Update) -> None:
        """Record one update; a vehicle's newer state replaces the one waiting."""
        if update.vehicle is not None:
            # Re-insert so the dict order follows the latest change.
            self.vehicles.pop(update.device, None)
            self.vehicles[update.device] = update.vehicle
        if update.event is not None:
            self.events.append(update.event)
            self._trim()

    def merge(self, later: Changes) -> None:
        """Fold changes that happened after these into these (latest wins per vehicle)."""
        for device, vehicle in later.vehicles.items():
            self.vehicles.pop(device, None)
            self.vehicles[device] = vehicle
        self.events.extend(later.events)
        self.dropped_events += later.dropped_events
        self._trim()

    def copy(self) -> Changes:
        """An independent copy (frames share one Changes until a client needs its own)."""
        return Changes(self.max_events, dict(self.vehicles), list(self.events), self.dropped_events)

    def _trim(self) -> None:
        excess = len(self.events) - self.max_events
        if excess > 0:
            del self.events[:excess]
            self.dropped_events += excess


class View(Protocol):
    """What one kind of channel shows of the fleet (the dispatcher sees everything; a
    customer page would see one vehicle, with fewer fields, only while its stop is active)."""

    def vehicle(self, vehicle: Vehicle) -> Vehicle | None:
        """The vehicle as this channel shows it, or None to hide it."""

    def event(self, event: Event) -> Event | None:
        """The event as this channel shows it, or None to hide it."""


class FleetView:
    """The dispatcher's view: every vehicle and every event, unchanged."""

    def vehicle(self, vehicle: Vehicle) -> Vehicle | None:
        return vehicle

    def event(self, event: Event) -> Event | None:
        return event


def through(view: View, update: Update) -> Update | None:
    """`update` as seen through `view`, or None when the view shows nothing of it."""
    vehicle = view.vehicle(update.vehicle) if update.vehicle is not None else None
    event = view.event(update.event) if update.event is not None else None
    if vehicle is None and event is None:
        return None
    if vehicle is update.vehicle and event is update.event:
        return update
    return Update(update.device, vehicle, event)


class Fleet:
    """The latest state of every vehicle this instance has heard of, fed by bus messages.

    Messages may arrive late or twice (several instances, Redis reconnects); a position
    older than the one already known is ignored so the map never moves a vehicle backward.
    """

    def __init__(self) -> None:
        self._vehicles: dict[str, Vehicle] = {}
        self._times: dict[str, datetime] = {}
        self._routes: dict[str, Any] = {}

    def __len__(self) -> int:
        return len(self._vehicles)

    def get(self, device: str) -> Vehicle | None:
        """The latest known state of `device`."""
        return self._vehicles.get(device)

    def apply(self, channel: str, message: Message) -> Update | None:
        """The update a bus message makes, or None if it changes nothing (or is malformed)."""
        kind = message.get("type")
        device = message.get("device")
        if not isinstance(device, str):
            return None
        if kind == "position" and channel == POSITIONS:
            return self._position(device, message)
        if kind == "route" and channel == ROUTES:
            return self._route(device, message)
        if kind == "event" and channel == EVENTS:
            event = message.get("event")
            if not isinstance(event, dict):
                return None
            return Update(device, event=event if "device" in event else {**event, "device": device})
        return None

    def absorb(self, vehicles: Iterable[Vehicle]) -> list[Vehicle]:
        """Merge loaded vehicles (from the database) with what the bus told us, newest fix
        winning, and return every known vehicle with its latest route summary."""
        for loaded in vehicles:
            try:
                device = loaded["id"]
                when = datetime.fromisoformat(loaded["time"])
            except (KeyError, TypeError, ValueError):
                continue
            known = self._times.get(device)
            if known is None or when > known:
                vehicle = {k: loaded.get(k) for k in _VEHICLE_KEYS}
                vehicle["route"] = self._routes.get(device)
                self._store(device, when, vehicle)
        return list(self._vehicles.values())

    def _position(self, device: str, message: Message) -> Update | None:
        try:
            when = datetime.fromisoformat(message["time"])
            vehicle: Vehicle = {
                "id": device,
                "name": str(message.get("name") or device),
                "time": message["time"],
                "lat": float(message["lat"]),
                "lon": float(message["lon"]),
                "speed": message.get("speed"),
                "course": message.get("course"),
                "accuracy": message.get("accuracy"),
                "route": self._routes.get(device),
            }
        except (KeyError, TypeError, ValueError):
            return None
        known = self._times.get(device)
        if known is not None and when <= known:
            return None
        self._store(device, when, vehicle)
        return Update(device, vehicle=vehicle)

    def _route(self, device: str, message: Message) -> Update | None:
        summary = {k: v for k, v in message.items() if k not in _ROUTE_ENVELOPE}
        # A message with nothing but the envelope clears the device's route.
        route = summary or None
        self._routes[device] = route
        known = self._vehicles.get(device)
        if known is None:
            return None
        vehicle = {**known, "route": route}
        self._vehicles[device] = vehicle
        return Update(device, vehicle=vehicle)

    def _store(self, device: str, when: datetime, vehicle: Vehicle) -> None:
        self._times[device] = when
        self._vehicles[device] = vehicle


def snapshot_message(now: datetime, vehicles: Iterable[Vehicle]) -> Message:
    """`{"type": "snapshot"}`: every vehicle's current state."""
    return {
        "type": "snapshot",
        "v": PROTOCOL_VERSION,
        "time": now.isoformat(),
        "vehicles": list(vehicles),
    }


def delta_message(now: datetime, changes: Changes) -> Message:
    """`{"type": "delta"}`: the vehicles that changed (latest state) and the events."""
    return {
        "type": "delta",
        "v": PROTOCOL_VERSION,
        "time": now.isoformat(),
        "vehicles": list(changes.vehicles.values()),
        "events": list(changes.events),
    }


def pong_message(now: datetime) -> Message:
    """`{"type": "pong"}`: the answer to a client's application-level ping."""
    return {"type": "pong", "v": PROTOCOL_VERSION, "time": now.isoformat()}
