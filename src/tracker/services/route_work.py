"""Route progress after the ack: per device in fix-time order, once per stored fix, in
batches.

The ingest service acknowledges a phone's pings as soon as they are committed and tells
this service which devices have new fixes (`notify`, no I/O). A loop then takes the due
devices in rounds of up to `batch`: one transaction takes their route locks without
waiting (PostgreSQL advisory locks, shared by every instance), reads their active routes
and the stored fixes each has not applied yet, runs the pure pipeline
(`tracker.core.pipeline.advance`), and writes states, stops, events and the events'
outbox rows back before the commit; the bus hears of them after it. A device whose lock
another instance holds is tried again a moment later, by then with nothing left to do or
with what that instance did not see yet.

Exactly once and in order, whatever crashes: progress is always derived from the stored
positions newer than the state's last fix, and the state, its events and their outbox
rows commit together. A SIGKILL between the ack and the round loses nothing either: every
`sweep_s` seconds (and at start) the routes whose device has a newer stored fix than
their progress are taken up by whichever instance sweeps first.

A route whose plan this instance has not built yet (a restart, a route created elsewhere)
leaves the round at once: a builder task makes the plan meanwhile and brings the device
back, so one cold route never holds up the warm ones, nor their locks.

Devices without a route cost one round trip, then nothing: "no active route" is kept per
device until a `routes` message about it arrives on the bus (any instance creating,
handing over or cancelling a route publishes one), or `cache_s` at the latest.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import asyncpg
from cachetools import LRUCache, TTLCache

from tracker.core import messages, pipeline
from tracker.core.model import Event, Fix, JsonDict
from tracker.core.route.progress import EtaConfig, RouteState
from tracker.services.route_log import EventLog
from tracker.services.route_plans import PlanCache
from tracker.store import progress as progress_store
from tracker.store import routes as store
from tracker.store.db import DB_ERRORS

log = logging.getLogger(__name__)

_LIMIT = 5000  # stored fixes applied per device and round; a longer backlog takes more
_EPSILON = timedelta(microseconds=1)
_CACHE_SIZE = 200_000
_STATES = 20_000  # route states kept (a 30-stop state is a few kB)


@dataclass(slots=True)
class _Due:
    device_id: int
    device: str  # unique id, for events and messages
    first: datetime | None  # earliest newly stored fix; None: catch up from the store


@dataclass(slots=True)
class _Round:
    busy: list[_Due] = field(default_factory=list)  # locked elsewhere: again later
    cold: list[tuple[_Due, int, int]] = field(default_factory=list)  # (due, route, revision)
    more: list[_Due] = field(default_factory=list)  # a backlog longer than one round
    out: list[tuple[str, list[Event], JsonDict | None]] = field(default_factory=list)
    applied: dict[str, datetime] = field(default_factory=dict)


class RouteWork:
    """Applies stored fixes to active routes, off the phones' critical path."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        plans: PlanCache,
        events: EventLog,
        cfg: EtaConfig,
        *,
        batch: int = 256,
        sweep_s: float = 5.0,
        cache_s: float = 3600.0,
    ) -> None:
        self._pool = pool
        self._plans = plans
        self._events = events
        self._cfg = cfg
        self._batch = batch
        self._sweep_s = sweep_s
        self._due: dict[int, _Due] = {}
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        # unique id -> True: the device has no active route (until the bus says otherwise)
        self._no_route: TTLCache[str, bool] = TTLCache(_CACHE_SIZE, ttl=max(cache_s, 1e-3))
        self._cache_routes = cache_s > 0
        # route id -> (state_seq, state) as this process last wrote it
        self._states: LRUCache[int, tuple[int, RouteState]] = LRUCache(_STATES)
        # unique id -> newest fix applied here: older pings need no round trip
        self._seen: LRUCache[str, datetime] = LRUCache(_CACHE_SIZE)
        # Routes whose plan is being built: their devices wait outside the rounds.
        self._warming: set[int] = set()
        self._cold: asyncio.Queue[tuple[_Due, int, int]] = asyncio.Queue()

    # -- producers (no I/O) ----------------------------------------------------------------

    def notify(self, device_id: int, device: str, fixes: list[Fix]) -> None:
        """Newly committed fixes of a device, in time order: its route is due for a round."""
        if not fixes or device in self._no_route:
            return
        seen = self._seen.get(device)
        if seen is not None and fixes[-1].time <= seen:
            return
        self._enqueue(_Due(device_id, device, fixes[0].time))

    def on_bus(self, channel: str, message: JsonDict) -> None:
        """Bus handler: a route of this device changed somewhere, look again."""
        device = messages.route_device(channel, message)
        if device is not None:
            self._no_route.pop(device, None)
            self._seen.pop(device, None)

    def on_bus_resumed(self) -> None:
        """Bus handler for a reconnect: route changes may have been missed meanwhile."""
        self._no_route.clear()
        self._seen.clear()

    # -- consumers -------------------------------------------------------------------------

    async def run(self) -> None:
        """The loop: rounds of due devices until cancelled."""
        builder = asyncio.create_task(self._builder())
        try:
            await self._rounds()
        finally:
            builder.cancel()

    async def _rounds(self) -> None:
        backoff = 0.05
        while True:
            if not self._due:
                self._idle.set()
                await self._wakeup.wait()
                self._wakeup.clear()
                continue
            due = [self._due.pop(d) for d in list(self._due)[: self._batch]]
            try:
                done = await self._round(due, wait=False)
            except (*DB_ERRORS, asyncpg.PostgresError) as exc:
                log.warning("route work for %d devices postponed: %s", len(due), exc)
                for item in due:
                    self._enqueue(item)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            except Exception:
                # A bug on some route: the fixes stay stored, the sweep tries again later.
                log.exception("route work failed for %d devices", len(due))
                continue
            backoff = 0.05
            await self._finish(done)
            for item in (*done.busy, *done.more):
                self._enqueue(item)
            if done.cold:
                self._warm(done.cold)
            if done.busy and len(done.busy) == len(due):
                await asyncio.sleep(0.005)  # all held by another instance: let it finish

    async def sweep(self) -> None:
        """Every `sweep_s` (first at start): take up routes behind their stored fixes."""
        while True:
            try:
                for device_id, device in await progress_store.behind(self._pool):
                    if device_id not in self._due:
                        self._enqueue(_Due(device_id, device, None))
            except (*DB_ERRORS, asyncpg.PostgresError) as exc:
                log.warning("could not look for routes behind their fixes: %s", exc)
            await asyncio.sleep(self._sweep_s)

    async def settle(self, device_id: int, device: str) -> None:
        """Apply whatever this device has stored now (waiting for its lock): a read that
        follows an acknowledged ping sees what it did, on any instance."""
        done = await self._round([_Due(device_id, device, None)], wait=True)
        await self._finish(done)

    async def drain(self) -> None:
        """Wait until every due device has had its round (tests, graceful shutdown)."""
        while self._due or self._warming or not self._idle.is_set():
            self._wakeup.set()
            await asyncio.sleep(0.002)

    # -- internals -------------------------------------------------------------------------

    def _enqueue(self, item: _Due) -> None:
        known = self._due.get(item.device_id)
        if known is not None and known.first is not None:
            item.first = known.first if item.first is None else min(known.first, item.first)
        self._due[item.device_id] = item
        self._idle.clear()
        self._wakeup.set()

    def _warm(self, cold: list[tuple[_Due, int, int]]) -> None:
        # A plan takes milliseconds to build (tens for a long road path): built in a round,
        # the round's other devices and their locks would wait for every cold one.
        for entry in cold:
            self._warming.add(entry[1])
            self._cold.put_nowait(entry)

    async def _builder(self) -> None:
        while True:
            item, route_id, revision = await self._cold.get()
            try:
                async with self._pool.acquire() as conn:
                    await self._plans.get(conn, route_id, revision)
            except Exception:
                # The fixes stay stored: the sweep brings the device back in `sweep_s`.
                log.exception("could not build the plan of route %d", route_id)
            else:
                self._enqueue(item)
            finally:
                self._warming.discard(route_id)

    async def _finish(self, done: _Round) -> None:
        for device, when in done.applied.items():
            self._seen[device] = when
        for device, events, route in done.out:
            await self._events.publish(device, events, route)

    async def _states_of(
        self, conn: asyncpg.Connection, heads: Iterable[progress_store.Head]
    ) -> dict[int, RouteState]:
        # The state this process wrote last is still the stored one unless its sequence
        # number moved on: then (and for routes new here) it is read and parsed again.
        out: dict[int, RouteState] = {}
        missing: dict[int, int] = {}
        for head in heads:
            cached = self._states.get(head.id)
            if cached is not None and cached[0] == head.state_seq:
                out[head.device_id] = cached[1]
            else:
                missing[head.id] = head.device_id
        if missing:
            for route_id, data in (await progress_store.states(conn, list(missing))).items():
                out[missing[route_id]] = RouteState.from_json(data)
        return out

    async def _round(self, due: list[_Due], wait: bool) -> _Round:
        done = _Round()
        by_id = {item.device_id: item for item in due}
        async with self._pool.acquire() as conn, conn.transaction():
            if wait:
                for device_id in sorted(by_id):
                    await store.lock_device(conn, device_id)
                locked = sorted(by_id)
            else:
                locked = await progress_store.try_lock(conn, list(by_id))
            held = set(locked)
            done.busy = [item for item in due if item.device_id not in held]
            heads = await progress_store.active_heads(conn, locked)
            if self._cache_routes:
                for device_id in held - heads.keys():
                    self._no_route[by_id[device_id].device] = True
            if not wait:
                # Built outside the round; the builder enqueues the device again.
                for device_id, head in list(heads.items()):
                    if self._plans.cached(head.id, head.revision) is None:
                        del heads[device_id]
                        if head.id not in self._warming:
                            done.cold.append((by_id[device_id], head.id, head.revision))
            states = await self._states_of(conn, heads.values())
            # A fresh route takes the pings received since it was created, a replayed
            # (older) drive too, from its first ping on.
            fresh = {
                d: head.created_at
                for d, head in heads.items()
                if states[d].last_fix_time is None and by_id[d].first is None
            }
            received = await progress_store.first_received(conn, fresh) if fresh else {}
            after: dict[int, datetime] = {}
            for device_id, head in heads.items():
                last = states[device_id].last_fix_time
                first = by_id[device_id].first or received.get(device_id, head.created_at)
                after[device_id] = last or min(head.created_at, first) - _EPSILON
            fixes = await progress_store.positions_after(conn, after, _LIMIT)
            rows: list[progress_store.StateRow] = []
            kept: dict[int, RouteState] = {}
            stops: list[tuple[int, list[store.StopValues]]] = []
            logged: list[tuple[str, list[Event]]] = []
            changed: list[tuple[str, int, list[Event]]] = []
            for device_id, head in heads.items():
                item = by_id[device_id]
                if len(fixes[device_id]) == _LIMIT:
                    done.more.append(item)
                plan = await self._plans.get(conn, head.id, head.revision)
                moved = pipeline.advance(plan, states[device_id], fixes[device_id], self._cfg)
                if moved.etas is None:
                    continue
                state = kept[head.id] = moved.state
                status = store.COMPLETED if state.completed else store.ACTIVE
                rows.append(
                    progress_store.StateRow(head.id, state.to_json(), state.off_route, status)
                )
                if state.last_fix_time is not None:
                    done.applied[item.device] = state.last_fix_time
                if moved.events:
                    stops.append((head.id, progress_store.stop_values(plan, state, moved.etas)))
                    logged.append((item.device, moved.events))
                    changed.append((item.device, head.id, moved.events))
            seqs = await progress_store.save_states(conn, rows)
            await store.save_stops_of(conn, stops)
            await self._events.store(conn, logged)
            bodies = await store.routes_by_ids(conn, [r for _, r, _ in changed])
            done.out.extend((device, events, bodies.get(r)) for device, r, events in changed)
        # Committed: these states are the stored ones, at these sequence numbers.
        for route_id, seq in seqs.items():
            self._states[route_id] = (seq, kept[route_id])
        return done
