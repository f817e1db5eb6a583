"""Route events: stored with their sinks in the transaction that makes them, published on
the bus after its commit."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import asyncpg

from tracker import metrics
from tracker.core import messages
from tracker.core.model import Event, JsonDict
from tracker.live.bus import Bus
from tracker.store import routes as store

# Events stored in one statement, by device: (unique id, [(event id, event)]).
Stored = Sequence[tuple[str, list[tuple[int, Event]]]]

# Called inside the transaction that stores events, with every device's events of that
# statement: the place for work that must happen exactly once per stored event (a webhook
# outbox, say), committed or rolled back with it; one call for a whole round of devices.
EventSink = Callable[[asyncpg.Connection, Stored], Awaitable[None]]

# The same, one device at a time (a sink with nothing to share between devices).
DeviceSink = Callable[[asyncpg.Connection, str, list[tuple[int, Event]]], Awaitable[None]]


def per_device(sink: DeviceSink) -> EventSink:
    """An event sink that hands `sink` each device's events in turn."""

    async def each(conn: asyncpg.Connection, stored: Stored) -> None:
        for device, events in stored:
            await sink(conn, device, events)

    return each


class EventLog:
    """Stores route events (and runs the sinks) and publishes them."""

    def __init__(self, bus: Bus) -> None:
        self._bus = bus
        self.sinks: list[EventSink] = []

    async def store(
        self, conn: asyncpg.Connection, batch: Sequence[tuple[str, Sequence[Event]]]
    ) -> None:
        """Store the events of several devices (unique id, events) in one statement."""
        flat = [e for _, events in batch for e in events]
        if not flat:
            return
        ids = iter(await store.insert_events(conn, flat))
        stored = [(device, [(next(ids), e) for e in events]) for device, events in batch]
        stored = [(device, events) for device, events in stored if events]
        for sink in self.sinks:
            await sink(conn, stored)

    async def publish(
        self, device: str, events: Sequence[Event], route: JsonDict | None = None
    ) -> None:
        """After the commit: each event, then the route if it changed."""
        for event in events:
            metrics.ROUTE_EVENTS.labels(event.type).inc()
            await self._bus.publish(messages.EVENTS, messages.event(device, event))
        if route is not None:
            await self._bus.publish(messages.ROUTES, messages.route(route))
