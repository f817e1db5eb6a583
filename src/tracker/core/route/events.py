"""The events of one fix or command, all stamped with the same time."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tracker.core.model import Event
from tracker.core.route.plan import RoutePlan


def iso(epoch_s: float) -> str:
    """Epoch seconds as an ISO-8601 UTC string (event payloads)."""
    return datetime.fromtimestamp(epoch_s, UTC).isoformat()


class Emitter:
    """Collects events of one fix or command, all stamped with the same time."""

    __slots__ = ("events", "plan", "time")

    def __init__(self, plan: RoutePlan, time: datetime) -> None:
        self.plan = plan
        self.time = time
        self.events: list[Event] = []

    def __call__(self, type_: str, stop: int | None = None, **data: Any) -> None:
        route = self.plan.route
        stop_id = None if stop is None else self.plan.stop_ids[stop]
        self.events.append(Event(type_, self.time, route.device_id, route.id, stop_id, data))
