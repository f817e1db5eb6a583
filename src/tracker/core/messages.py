"""The bus: its channel names and the messages sent on them, built in one place.

Every instance publishes and subscribes to the same channels (Redis pub/sub, or in-process
for a single instance); the live hub, the authenticator, the ingest service and the route
work all read these shapes:

- `positions`: `{"type": "position", "device": unique_id, "name", "time", "lat", "lon",
  "speed", "course", "accuracy"}`, a device's new last position;
- `events`: `{"type": "event", "device": unique_id, "event": {...}}` per route event;
- `routes`: `{"type": "route", "device": unique_id, ...Route JSON...}` whenever a route
  changed (created, advanced by an event, re-planned, cancelled, handed over);
- `auth`: credential changes (see `tracker.services.auth`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tracker.core.model import Event, Fix, JsonDict

POSITIONS = "positions"
ROUTES = "routes"
EVENTS = "events"
AUTH = "auth"


def position(device: str, name: str | None, fix: Fix) -> JsonDict:
    """A device's new last position."""
    return {
        "type": "position",
        "device": device,
        "name": name,
        "time": fix.time.isoformat(),
        "lat": fix.lat,
        "lon": fix.lon,
        "speed": fix.speed,
        "course": fix.course,
        "accuracy": fix.accuracy,
    }


def position_fix(device_id: int, message: JsonDict) -> Fix | None:
    """The fix a `position` message carries (for another instance's jump filter), or None
    when the message is not one."""
    try:
        when = datetime.fromisoformat(message["time"])
        lat = float(message["lat"])
        lon = float(message["lon"])
    except (KeyError, TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return Fix(
        device_id=device_id,
        time=when,
        lat=lat,
        lon=lon,
        speed=_number(message.get("speed")),
        course=_number(message.get("course")),
        accuracy=_number(message.get("accuracy")),
    )


def event_json(event: Event) -> JsonDict:
    """An event as published and as the API shows it."""
    return {
        "type": event.type,
        "time": event.time.isoformat(),
        "route_id": event.route_id,
        "stop_id": event.stop_id,
        "data": event.data,
    }


def event(device: str, item: Event) -> JsonDict:
    """The `events` message for one route event."""
    return {"type": "event", "device": device, "event": event_json(item)}


def route(body: JsonDict) -> JsonDict:
    """The `routes` message for a Route JSON (which carries the device's unique id)."""
    return {"type": "route", **body}


def route_device(channel: str, message: JsonDict) -> str | None:
    """The device a `routes` message is about, or None for any other message."""
    device = message.get("device")
    if channel != ROUTES or message.get("type") != "route" or not isinstance(device, str):
        return None
    return device


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None
