"""Routes in the server: created, read and changed on request; advanced by the route work.

Pings advance routes in `tracker.services.route_work`, after the phone's ack. This
service creates routes (planning them once), reads them (after settling the device's
route work, so a read that follows an acknowledged ping shows what the ping did) and
applies explicit stop statuses from drivers and dispatchers, under the same per-device
advisory lock as the route work, so several server instances take turns and agree.
Everything it changes is stored with its events in one transaction and published after
the commit (`tracker.core.messages`: `events` and `routes`).

ETAs are computed from each fix's own time, never the server clock, so replaying a recorded
drive through the API produces exactly the ETAs it produced live.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

import asyncpg

from tracker.core import messages
from tracker.core.model import Event, EventType, JsonDict, Route, Stop, StopStatus
from tracker.core.route import progress
from tracker.core.route.progress import EtaConfig, RoutePlan, RouteState
from tracker.live.bus import Bus
from tracker.live.hub import Hub
from tracker.services.route_log import EventLog, EventSink
from tracker.services.route_plans import PlanCache
from tracker.services.route_work import RouteWork
from tracker.store import dispatch_board
from tracker.store import learning as learned
from tracker.store import routes as store
from tracker.store.devices import Device
from tracker.store.progress import stop_values

log = logging.getLogger(__name__)

# Statuses a driver or dispatcher may set; `arrived` is for a driver whose arrival the
# geofence missed (poor GPS, a stop placed on the wrong side of a block).
SETTABLE = frozenset(
    {StopStatus.ARRIVED, StopStatus.COMPLETED, StopStatus.FAILED, StopStatus.SKIPPED}
)

__all__ = ["SETTABLE", "EventSink", "RouteInvalid", "RouteNotFound", "RoutingService"]


class RouteInvalid(ValueError):
    """A route that cannot be planned (the message says why)."""


class RouteNotFound(LookupError):
    """No such route, or no such stop on it."""


class TransitionRefused(ValueError):
    """A stop status change that the stop's current status does not allow."""


def mark_arrived(
    plan: RoutePlan, state: RouteState, stop_id: int, when: datetime
) -> tuple[RouteState, list[Event]]:
    """An explicit arrival (the driver says so): pending -> arrived.

    Repeating it is a no-op; a stop already done cannot arrive again (ValueError). The
    stop becomes the one being served only if the vehicle's last fix lies inside its
    geofence, so that leaving it completes the stop automatically as usual; a driver who
    taps "arrived" away from the stop's pin is not auto-completed by driving off.
    """
    k = plan.position.get(stop_id)
    if k is None:
        raise ValueError(f"route {plan.route.id} has no stop {stop_id}")
    st = state.stops[k]
    if st.status == StopStatus.ARRIVED:
        return state, []
    if st.status != StopStatus.PENDING:
        raise ValueError(f"stop {stop_id} is already {st.status}; it cannot become arrived")
    stops = (
        *state.stops[:k],
        replace(st, status=StopStatus.ARRIVED, arrived_s=when.timestamp()),
        *state.stops[k + 1 :],
    )
    at = state.at_stop
    if state.x is not None and state.y is not None:
        sx, sy = plan.xy[k]
        if math.hypot(state.x - sx, state.y - sy) <= plan.radius_m[k]:
            at = k
    outside = 0 if at == k else state.outside_fixes
    new_state = replace(state, stops=stops, at_stop=at, outside_fixes=outside)
    route = plan.route
    event = Event(EventType.ARRIVED, when, route.device_id, route.id, stop_id, {"explicit": True})
    return new_state, [event]


class RoutingService:
    """Creates routes, reads them, changes stop statuses."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        bus: Bus,
        cfg: EtaConfig,
        plans: PlanCache,
        events: EventLog,
        work: RouteWork,
    ) -> None:
        self._pool = pool
        self._bus = bus
        self._cfg = cfg
        self._plans = plans
        self._events = events
        self.work = work

    @property
    def event_sinks(self) -> list[EventSink]:
        """Work that must happen once per stored event, in its transaction (outboxes)."""
        return self._events.sinks

    # -- requests ---------------------------------------------------------------------------

    async def create(
        self,
        device: Device,
        planned_start: datetime,
        stops: Sequence[Stop],
        path: tuple[tuple[float, float], ...],
        straight_line: bool,
        now: datetime,
        tracking: Sequence[bytes] | None = None,
        details: Sequence[JsonDict] | None = None,
    ) -> JsonDict:
        """Store a new active route for `device`; raises RouteInvalid if it cannot be planned.

        `tracking`: the digests of the stops' customer tracking tokens, in stop order;
        `details`: the stops' doorstep columns (address, phone, parcels...), in stop order.

        ETAs before the first ping assume the drive starts at the later of the planned start
        and `now`, from the beginning of the path.
        """
        async with self._pool.acquire() as conn, conn.transaction():
            await store.lock_device(conn, device.id)
            route_id, stop_ids = await store.reserve_ids(conn, len(stops))
            ordered = sorted(stops, key=lambda s: s.seq)
            route = Route(
                id=route_id,
                device_id=device.id,
                planned_start=planned_start,
                stops=tuple(
                    replace(s, id=i, status=StopStatus.PENDING)
                    for s, i in zip(ordered, stop_ids, strict=True)
                ),
                path=path,
                straight_line=straight_line,
            )
            try:
                plan = progress.plan(route, await learned.snapshot(conn, route.path))
            except ValueError as exc:
                raise RouteInvalid(str(exc)) from exc
            state = progress.start(plan)
            etas = progress.current(plan, state, now, self._cfg)
            # A van drives one route at a time: the new one ends its old one.
            ended = await dispatch_board.end_active(conn, device.id, route_id, now)
            await store.insert_route(
                conn,
                route,
                state.to_json(),
                {e.stop_id: e.eta for e in etas.etas},
                tracking,
                details,
            )
            if ended:
                await self._store_events(conn, device.unique_id, ended)
            await store.save_stops(conn, route_id, stop_values(plan, state, etas))  # intervals
            body = await store.route_by_id(conn, route_id)
        assert body is not None
        self._plans.keep(route_id, plan)
        if ended:
            await self._publish(device.unique_id, ended, None)
        # Every instance's route work hears of the new route from this message.
        await self._bus.publish(messages.ROUTES, messages.route(body))
        return body

    async def route(self, route_id: int) -> JsonDict | None:
        """Route JSON of a route, with what every acknowledged ping did to it."""
        owner = await store.route_owner(self._pool, route_id)
        if owner is None:
            return None
        await self.work.settle(*owner)
        return await store.route_by_id(self._pool, route_id)

    async def set_stop_status(
        self, route_id: int, stop_id: int, status: str, reason: str | None, now: datetime
    ) -> JsonDict:
        """An explicit stop status from the driver or dispatcher at request time `now`.

        Raises RouteNotFound, or TransitionRefused when the stop's status does not allow it
        (a stop that is done stays done; repeating the current status changes nothing).
        """
        owner = await store.route_owner(self._pool, route_id)
        if owner is None:
            raise RouteNotFound(f"no route {route_id}")
        # The pings acknowledged before this request count first (an arrival, say).
        await self.work.settle(*owner)
        device_id = owner[0]
        async with self._pool.acquire() as conn, conn.transaction():
            await store.lock_device(conn, device_id)
            head = await store.route_head(conn, route_id)
            assert head is not None  # routes are never deleted
            plan = await self._plans.get(conn, route_id, head.revision)
            if stop_id not in plan.position:
                raise RouteNotFound(f"route {route_id} has no stop {stop_id}")
            if head.status == store.CANCELLED:
                raise TransitionRefused(f"route {route_id} is cancelled")
            state = RouteState.from_json(head.state)
            try:
                if status == StopStatus.ARRIVED:
                    state, events = mark_arrived(plan, state, stop_id, now)
                else:
                    state, events = progress.set_status(plan, state, stop_id, status, now, reason)
            except ValueError as exc:
                raise TransitionRefused(str(exc)) from exc
            if events:
                etas = progress.current(plan, state, now, self._cfg)
                new_status = store.COMPLETED if state.completed else head.status
                await store.save_state(conn, route_id, state.to_json(), state.off_route, new_status)
                await store.save_stops(conn, route_id, stop_values(plan, state, etas))
            body = await store.route_by_id(conn, route_id)
            assert body is not None
            if events:
                await self._store_events(conn, body["device"], events)
        if events:
            await self._publish(body["device"], events, body)
        return body

    def forget_plan(self, route_id: int) -> None:
        """Drop the plan of a route that changed hands; what instances cached about the
        devices goes with the `routes` message the change publishes."""
        self._plans.forget(route_id)

    async def _store_events(
        self, conn: asyncpg.Connection, device: str, events: list[Event]
    ) -> None:
        await self._events.store(conn, [(device, events)])

    async def _publish(self, device: str, events: list[Event], route: JsonDict | None) -> None:
        await self._events.publish(device, events, route)


Loader = Callable[[], Awaitable[list[dict[str, Any]]]]


def with_routes(pool: asyncpg.Pool, load: Loader, hub: Callable[[], Hub]) -> Loader:
    """Wrap the live hub's vehicle loader so every snapshot carries the active routes.

    The hub learns routes from `routes` bus messages; this also hands it the stored ones
    (through its bus handler) before each snapshot, so an instance that just started, or
    lost the bus for a while, shows every active route with its ETAs. A route the hub
    already holds unchanged is not handed over again (that would resend it to every map).
    `hub` returns the hub (which takes this loader when it is built).
    """

    async def load_with_routes() -> list[dict[str, Any]]:
        vehicles = await load()
        live = hub()
        for device, route in (await store.active_route_summaries(pool)).items():
            message = messages.route(route)
            known = live.fleet.get(device)
            if known is not None and known.get("route") == _summary(message):
                continue
            live.on_bus(messages.ROUTES, message)
        return vehicles

    return load_with_routes


def _summary(message: JsonDict) -> JsonDict:
    # What the hub keeps of a route message as the vehicle's `route`.
    return {k: v for k, v in message.items() if k not in ("type", "device", "v")}
