"""The dispatcher's route changes: cancel a route, hand it to another van, and end a van's
old route when a new one starts.

Each change takes the device's route-progress lock (every instance), stores a
`route.cancelled` or `route.reassigned` event, and publishes after the commit: the event on
the `events` channel and the route on `routes` (an envelope with no route clears a van's
route on the live map).

A van drives one route at a time. A new route for a van whose route is still active
cancels the old one (`ended_reason` "replaced", the event names the new route): pings then
advance only the new route, and the old route's customer links close as for any route that
is no longer active.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

import asyncpg

from tracker import metrics
from tracker.core import messages
from tracker.core.model import Event, JsonDict
from tracker.core.route import progress
from tracker.core.route.progress import RouteState
from tracker.live.bus import Bus
from tracker.services.routing import RouteNotFound, RoutingService, TransitionRefused
from tracker.store import dispatch_board as board
from tracker.store import routes as store
from tracker.store.devices import Device


class RouteDesk:
    """Cancels and reassigns routes; publishes what changed."""

    def __init__(self, pool: asyncpg.Pool, bus: Bus, routing: RoutingService) -> None:
        self._pool = pool
        self._bus = bus
        self._routing = routing

    async def cancel(self, route_id: int, reason: str | None, now: datetime) -> JsonDict:
        """Cancel an active route (again: no change). RouteNotFound, or TransitionRefused
        for a completed route."""
        device_id = await store.route_device(self._pool, route_id)
        if device_id is None:
            raise RouteNotFound(f"no route {route_id}")
        events: list[Event] = []
        async with self._pool.acquire() as conn, conn.transaction():
            await store.lock_device(conn, device_id)
            head = await store.route_head(conn, route_id)
            assert head is not None  # routes are never deleted
            if head.status == store.COMPLETED:
                raise TransitionRefused(f"route {route_id} is completed; it cannot be cancelled")
            if head.status == store.ACTIVE:
                await board.end_routes(conn, [route_id], board.CANCELLED_BY_DISPATCHER)
                data: JsonDict = {"reason": board.CANCELLED_BY_DISPATCHER}
                if reason:
                    data["note"] = reason
                events.append(Event(board.ROUTE_CANCELLED, now, device_id, route_id, None, data))
                await store.insert_events(conn, events)
            body = await _route(conn, route_id)
        if events:
            await self._publish(body["device"], events)
            await self._bus.publish(messages.ROUTES, {"type": "route", "device": body["device"]})
        return body

    async def reassign(self, route_id: int, device: Device, now: datetime) -> JsonDict:
        """Hand an active route to `device`: its done stops stay done, progress starts
        afresh from the new van's next ping, and the new van's own active route (if any)
        is cancelled as replaced. RouteNotFound, TransitionRefused when not active."""
        old_device = await store.route_device(self._pool, route_id)
        if old_device is None:
            raise RouteNotFound(f"no route {route_id}")
        if old_device == device.id:
            body = await self._routing.route(route_id)
            assert body is not None
            return body
        events: list[Event] = []
        async with self._pool.acquire() as conn, conn.transaction():
            # Both vans' locks, in id order so two opposite hand-overs cannot deadlock.
            for locked in sorted((old_device, device.id)):
                await store.lock_device(conn, locked)
            head = await store.route_head(conn, route_id)
            assert head is not None
            if head.status != store.ACTIVE or head.device_id != old_device:
                raise TransitionRefused(
                    f"route {route_id} is {head.status}; only active routes move"
                )
            old_uid = await conn.fetchval("SELECT unique_id FROM devices WHERE id = $1", old_device)
            ended = await board.end_active(conn, device.id, route_id, now)
            plan = progress.plan(await store.load_route(conn, route_id))
            state = RouteState.from_json(head.state)
            # Keep what happened at the stops; where the old van was means nothing now.
            fresh = replace(
                progress.start(plan),
                stops=tuple(replace(s, announced=False) for s in state.stops),
                published=state.published,
                last_s=now.timestamp(),
                completed=state.completed,
            )
            await board.move_route(conn, route_id, device.id, fresh.to_json())
            events = [
                *ended,
                Event(
                    board.ROUTE_REASSIGNED,
                    now,
                    device.id,
                    route_id,
                    None,
                    {"from": old_uid, "to": device.unique_id},
                ),
            ]
            await store.insert_events(conn, events)
            body = await _route(conn, route_id)
        self._routing.forget_plan(route_id)
        await self._publish(device.unique_id, events)
        await self._bus.publish(messages.ROUTES, {"type": "route", "device": old_uid})
        await self._bus.publish(messages.ROUTES, messages.route(body))
        return body

    async def _publish(self, device: str, events: list[Event]) -> None:
        for event in events:
            metrics.ROUTE_EVENTS.labels(event.type).inc()
            await self._bus.publish(messages.EVENTS, messages.event(device, event))


async def _route(conn: asyncpg.Connection, route_id: int) -> JsonDict:
    body = await store.route_by_id(conn, route_id)
    assert body is not None
    return {**body, "ended_reason": await board.ended_reason(conn, route_id)}
