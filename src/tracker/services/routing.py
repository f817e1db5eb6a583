"""Live route progress in the server: pings advance the device's route, events are stored
and published, stop statuses change on request.

The pure core (`tracker.core.route.progress`) does the work; this service loads a route's state from
PostgreSQL, applies the device's newly stored fixes in time order under a per-device
advisory lock (so several server instances take turns and agree), writes the new state,
stop columns and events in the same transaction, and publishes after the commit:

- bus channel `"events"`: `{"type": "event", "device": unique_id, "event": {...}}` per event;
- bus channel `"routes"`: `{"type": "route", ...Route JSON...}` whenever something changed
  (the live hub merges everything but `type`, `device` and `v` into the vehicle's `route`).

ETAs are computed from each fix's own time, never the server clock, so replaying a recorded
drive through the API produces exactly the ETAs it produced live.

Devices without an active route cost nothing per ping: whether a device has one is cached
in-process for `cache_s` seconds (TRACKER_ROUTE_CACHE_S). A route created on this instance
is seen at once; one created on another instance within that time. Pings stored meanwhile
are not lost to the route: progress is always advanced from the stored positions newer than
the state's last fix, so they are applied, in order, with the next ping.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from tracker import metrics
from tracker.core.model import Event, EventType, Fix, JsonDict, Route, Stop, StopStatus
from tracker.core.route import progress
from tracker.core.route.progress import EtaConfig, RoutePlan, RouteState
from tracker.live.bus import Bus
from tracker.live.hub import Hub
from tracker.store import dispatch_board
from tracker.store import learning as learned
from tracker.store import routes as store
from tracker.store.devices import Device

log = logging.getLogger(__name__)

ROUTES_CHANNEL = "routes"
EVENTS_CHANNEL = "events"

# Statuses a driver or dispatcher may set; `arrived` is for a driver whose arrival the
# geofence missed (poor GPS, a stop placed on the wrong side of a block).
SETTABLE = frozenset(
    {StopStatus.ARRIVED, StopStatus.COMPLETED, StopStatus.FAILED, StopStatus.SKIPPED}
)
_BATCH = 5000  # stored fixes applied per query; a longer backlog takes several rounds
_PLANS = 1024  # route plans kept per instance (a plan is built once per route)
_EPSILON = timedelta(microseconds=1)


# Called inside the transaction that stores events, with the device's unique id and each
# event with its id: the place for work that must happen exactly once per stored event
# (a webhook outbox, say), committed or rolled back with it.
EventSink = Callable[[asyncpg.Connection, str, list[tuple[int, Event]]], Awaitable[None]]


class RouteInvalid(ValueError):
    """A route that cannot be planned (the message says why)."""


class RouteNotFound(LookupError):
    """No such route, or no such stop on it."""


class TransitionRefused(ValueError):
    """A stop status change that the stop's current status does not allow."""


def event_json(event: Event) -> JsonDict:
    """An event as published and as the API shows it."""
    return {
        "type": event.type,
        "time": event.time.isoformat(),
        "route_id": event.route_id,
        "stop_id": event.stop_id,
        "data": event.data,
    }


def route_message(route: JsonDict) -> JsonDict:
    """The `routes` bus message for a Route JSON (which carries the device's unique id)."""
    return {"type": "route", **route}


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


def _when(epoch_s: float | None) -> datetime | None:
    return None if epoch_s is None else datetime.fromtimestamp(epoch_s, UTC)


def stop_values(
    plan: RoutePlan, state: RouteState, etas: progress.Progress
) -> list[store.StopValues]:
    """Every stop's live columns from a state and the ETAs computed with it."""
    out: list[store.StopValues] = []
    for k, eta in enumerate(etas.etas):
        st = state.stops[k]
        out.append(
            store.StopValues(
                stop_id=plan.stop_ids[k],
                status=st.status,
                reason=st.reason,
                arrived_at=_when(st.arrived_s),
                completed_at=_when(st.done_s),
                eta=eta.eta,
                eta_earliest=eta.eta_earliest,
                eta_latest=eta.eta_latest,
                deferred=k in state.deferred,
            )
        )
    return out


class RoutingService:
    """Creates routes, advances them with each device's stored pings, changes stop statuses."""

    def __init__(self, pool: asyncpg.Pool, bus: Bus, cfg: EtaConfig, cache_s: float) -> None:
        self._pool = pool
        self._bus = bus
        self._cfg = cfg
        self._cache_s = cache_s
        # device id -> (has an active route, valid until monotonic time)
        self._active: dict[int, tuple[bool, float]] = {}
        # device id -> newest fix time applied here: older pings need no database round trip
        self._seen: dict[int, datetime] = {}
        # route id -> (revision, plan): re-planning bumps a route's revision
        self._plans: OrderedDict[int, tuple[int, RoutePlan]] = OrderedDict()
        # device id -> [lock, requests using it]: one waiter per device holds a connection
        self._locks: dict[int, tuple[asyncio.Lock, list[int]]] = {}
        self.event_sinks: list[EventSink] = []

    # -- ingest hook ------------------------------------------------------------------------

    async def on_commit(self, device: Device, fixes: list[Fix]) -> None:
        """IngestService.after_commit hook: advance the device's active route, if any."""
        if not fixes:
            return
        hit = self._active.get(device.id)
        if hit is not None and not hit[0] and hit[1] > time.monotonic():
            return
        newest = fixes[-1].time
        seen = self._seen.get(device.id)
        if seen is not None and newest <= seen:
            return
        lock, users = self._locks.setdefault(device.id, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            # Requests of one device queue here, so only one of them holds a pooled
            # connection while waiting for the advisory lock.
            async with lock:
                seen = self._seen.get(device.id)
                if seen is not None and newest <= seen:
                    return
                outcome = await self._advance(device, fixes[0].time)
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._locks[device.id]
        if outcome is not None:
            await self._publish(device.unique_id, *outcome)

    async def _advance(
        self, device: Device, first: datetime
    ) -> tuple[list[Event], JsonDict] | None:
        device_id = device.id
        async with self._pool.acquire() as conn, conn.transaction():
            await store.lock_device(conn, device_id)
            head = await store.active_route(conn, device_id)
            self._remember(device_id, head is not None)
            if head is None:
                return None
            plan = await self._plan(conn, head.id, head.revision)
            state = RouteState.from_json(head.state)
            # A fresh route takes the pings stored since it was created, and a replayed
            # (older) drive from its first ping on.
            after = state.last_fix_time or min(head.created_at, first) - _EPSILON
            events: list[Event] = []
            latest: progress.Progress | None = None
            while True:
                fixes = await store.positions_after(conn, device_id, after, _BATCH)
                for fix in fixes:
                    state, new_events, moved = progress.step(plan, state, fix, self._cfg)
                    events.extend(new_events)
                    latest = moved or latest
                if len(fixes) < _BATCH:
                    break
                after = fixes[-1].time
            route: JsonDict | None = None
            if latest is not None:
                status = store.COMPLETED if state.completed else store.ACTIVE
                await store.save_state(conn, head.id, state.to_json(), state.off_route, status)
            if latest is not None and events:
                await store.save_stops(conn, head.id, stop_values(plan, state, latest))
                await self._store_events(conn, device.unique_id, events)
                route = await store.route_by_id(conn, head.id)
        # Only once committed: a rolled-back round must not hide these pings next time.
        if state.last_fix_time is not None:
            self._seen[device_id] = state.last_fix_time
        return (events, route) if route is not None else None

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
        self._keep_plan(route_id, plan)
        self._remember(device.id, True)
        self._seen.pop(device.id, None)
        if ended:
            await self._publish(device.unique_id, ended, None)
        await self._bus.publish(ROUTES_CHANNEL, route_message(body))
        return body

    async def route(self, route_id: int) -> JsonDict | None:
        """Route JSON of a route, with the ETAs last published."""
        return await store.route_by_id(self._pool, route_id)

    async def set_stop_status(
        self, route_id: int, stop_id: int, status: str, reason: str | None, now: datetime
    ) -> JsonDict:
        """An explicit stop status from the driver or dispatcher at request time `now`.

        Raises RouteNotFound, or TransitionRefused when the stop's status does not allow it
        (a stop that is done stays done; repeating the current status changes nothing).
        """
        device_id = await store.route_device(self._pool, route_id)
        if device_id is None:
            raise RouteNotFound(f"no route {route_id}")
        async with self._pool.acquire() as conn, conn.transaction():
            await store.lock_device(conn, device_id)
            head = await store.route_head(conn, route_id)
            assert head is not None  # routes are never deleted
            plan = await self._plan(conn, route_id, head.revision)
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

    def forget(self, *device_ids: int, plan_of: int | None = None) -> None:
        """Drop what this instance cached about devices whose route changed (cancelled,
        handed to another van) and, with `plan_of`, that route's plan."""
        for device_id in device_ids:
            self._active.pop(device_id, None)
            self._seen.pop(device_id, None)
        if plan_of is not None:
            self._plans.pop(plan_of, None)

    # -- internals --------------------------------------------------------------------------

    def _remember(self, device_id: int, active: bool) -> None:
        if self._cache_s <= 0:
            return
        if len(self._active) > 100_000:
            self._active.clear()
        self._active[device_id] = (active, time.monotonic() + self._cache_s)

    async def _plan(self, conn: asyncpg.Connection, route_id: int, revision: int) -> RoutePlan:
        cached = self._plans.get(route_id)
        if cached is not None and cached[0] == revision:
            self._plans.move_to_end(route_id)
            return cached[1]
        route = await store.load_route(conn, route_id)
        plan = progress.plan(route, await learned.snapshot(conn, route.path))
        self._keep_plan(route_id, plan, revision)
        return plan

    def _keep_plan(self, route_id: int, plan: RoutePlan, revision: int = 0) -> None:
        self._plans[route_id] = (revision, plan)
        while len(self._plans) > _PLANS:
            self._plans.popitem(last=False)

    async def _store_events(
        self, conn: asyncpg.Connection, device: str, events: list[Event]
    ) -> None:
        ids = await store.insert_events(conn, events)
        stored = list(zip(ids, events, strict=True))
        for sink in self.event_sinks:
            await sink(conn, device, stored)

    async def _publish(self, device: str, events: list[Event], route: JsonDict | None) -> None:
        for event in events:
            metrics.ROUTE_EVENTS.labels(event.type).inc()
            await self._bus.publish(
                EVENTS_CHANNEL, {"type": "event", "device": device, "event": event_json(event)}
            )
        if route is not None:
            await self._bus.publish(ROUTES_CHANNEL, route_message(route))


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
            message = route_message(route)
            known = live.fleet.get(device)
            if known is not None and known.get("route") == _summary(message):
                continue
            live.on_bus(ROUTES_CHANNEL, message)
        return vehicles

    return load_with_routes


def _summary(message: JsonDict) -> JsonDict:
    # What the hub keeps of a route message as the vehicle's `route`.
    return {k: v for k, v in message.items() if k not in ("type", "device", "v")}
