"""Re-planning during the day: insert a new order into the live routes at least cost,
re-optimise what is left of a route, move stops from one route to another.

Each change rewrites a live route in place, in one transaction under the device's route
lock (the one the ping pipeline takes): stops already done keep their place; the stop
being served stays first; the remaining stops get their new order and planned arrivals,
and the path becomes the stretch already driven followed by the road path from the
vehicle's position through the remaining stops. The route's state starts afresh on the
new path at the vehicle's position (its last fix is kept, so no ping is applied twice),
its revision goes up (every instance rebuilds its cached plan), and the new Route JSON is
published at once: maps, driver and customer pages show the new ETAs without a ping.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from datetime import datetime, timedelta

import asyncpg

from tracker.core import messages
from tracker.core.model import JsonDict, Route, Stop, StopStatus
from tracker.core.route import progress
from tracker.core.route.progress import EtaConfig, RouteState
from tracker.live.bus import Bus
from tracker.planning import insertion, solver
from tracker.planning.insertion import LiveChain, Visit
from tracker.planning.model import DISPATCHED, Order
from tracker.planning.problem import Job, Problem, Van
from tracker.planning.solver import SolverOptions
from tracker.services.planning import STOP_RADIUS_M, PlanConflict, PlanNotFound
from tracker.services.travel import Measured, Travel
from tracker.store import orders as order_store
from tracker.store import plans as store
from tracker.store import routes as route_store

DONE = frozenset({StopStatus.COMPLETED, StopStatus.FAILED, StopStatus.SKIPPED})
CANDIDATE_ROUTES = 4  # routes nearest to a new order that are priced for it


@dataclasses.dataclass(frozen=True, slots=True)
class Live:
    """A live route loaded for re-planning."""

    route: Route
    head: route_store.RouteHead
    done: tuple[Stop, ...]
    serving: Stop | None  # the stop the vehicle is at (arrived)
    pending: tuple[Stop, ...]
    position: tuple[float, float]  # where the vehicle is (or will start)
    start: datetime  # when it drives on from there


def _window(stop: Stop, t0: datetime) -> tuple[float, float] | None:
    if stop.window_start is None and stop.window_end is None:
        return None
    a = (stop.window_start - t0).total_seconds() if stop.window_start else 0.0
    b = (stop.window_end - t0).total_seconds() if stop.window_end else 1e9
    return (a, b)


class ReplanningService:
    """Changes live routes; needs the roads (or straight lines) of the planner's Travel."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        bus: Bus,
        travel: Travel,
        cfg: EtaConfig,
        options: SolverOptions,
    ) -> None:
        self._pool = pool
        self._bus = bus
        self._travel = travel
        self._cfg = cfg
        self._options = options

    # -- loading -----------------------------------------------------------------------------

    async def _live(self, conn: asyncpg.Connection, route_id: int, now: datetime) -> Live:
        head = await route_store.route_head(conn, route_id)
        if head is None:
            raise PlanNotFound(f"no route {route_id}")
        if head.status != route_store.ACTIVE:
            raise PlanConflict(f"route {route_id} is {head.status}: only live routes change")
        route = await route_store.load_route(conn, route_id)
        stops = sorted(route.stops, key=lambda s: s.seq)
        done = tuple(s for s in stops if s.status in DONE)
        serving = next((s for s in stops if s.status == StopStatus.ARRIVED), None)
        pending = tuple(s for s in stops if s.status == StopStatus.PENDING)
        lives = await store.live_routes(conn, [route_id])
        fix = lives[0].position if lives else None
        state = RouteState.from_json(head.state)
        if serving is not None:
            position = (serving.lat, serving.lon)
        elif fix is not None and state.last_s is not None:
            position = fix
        else:
            position = route.path[0]
        start = max(now, route.planned_start) if state.last_s is None else now
        return Live(route, head, done, serving, pending, position, start)

    # -- writing -----------------------------------------------------------------------------

    async def _rewrite(
        self,
        conn: asyncpg.Connection,
        live: Live,
        order: Sequence[Stop],
        now: datetime,
        added: Sequence[Stop] = (),
        moved_in: Sequence[Stop] = (),
        measured: Measured | None = None,
    ) -> JsonDict:
        """Give `live` the remaining stops `order` (its own, `added` new ones and stops
        `moved_in` from other routes, in driving order); `measured`: the matrix between the
        vehicle's position and `order`, when the caller has it already."""
        route = live.route
        head_stops = [*live.done, *([live.serving] if live.serving else [])]
        points = [live.position, *[(s.lat, s.lon) for s in order]]
        if measured is None or measured.points != tuple(points):
            measured = await self._travel.measure(points)
        (path,) = await self._travel.paths(measured, [list(range(len(points)))])
        chain = insertion.timing(
            measured.seconds,
            0,
            (live.start - now).total_seconds() + (live.serving.service_s if live.serving else 0.0),
            [Visit(k, k + 1, s.service_s, _window(s, now)) for k, s in enumerate(order)],
        )
        # The stretch already driven stays the start of the path, so stops done lie on it.
        old_state = RouteState.from_json(live.head.state)
        driven: list[tuple[float, float]] = []
        if old_state.progress_m > 1.0 and old_state.last_s is not None:
            driven = await store.driven_path(conn, route.id, old_state.progress_m)
        full = [*driven, *path.points]
        if len(set(full)) < 2:
            full = [
                live.position,
                *[(s.lat, s.lon) for s in head_stops],
                *[(s.lat, s.lon) for s in order],
            ]
        stops: list[Stop] = []
        seq = 0
        for s in head_stops:
            seq += 1
            stops.append(dataclasses.replace(s, seq=seq))
        own = {s.id for s in route.stops}
        kept: list[Stop] = []
        new: list[Stop] = []
        moved: list[Stop] = []
        for k, s in enumerate(order):
            seq += 1
            planned = now + timedelta(seconds=chain.starts[k])
            stop = dataclasses.replace(
                s, seq=seq, planned_arrival=planned, status=StopStatus.PENDING
            )
            stops.append(stop)
            if any(a is s for a in added):
                new.append(stop)
            elif s.id in own:
                kept.append(stop)
            else:
                moved.append(stop)
        straight = not measured.roads
        edited = dataclasses.replace(
            route, stops=tuple(stops), path=tuple(full), straight_line=straight
        )
        plan = progress.plan(edited)
        state = progress.start(plan)
        along = 0.0
        if len(set([*driven, live.position])) >= 2:
            along = plan.projection.line([*driven, live.position]).length
        x, y = plan.projection.to_xy(*live.position)
        at = next((k for k, s in enumerate(stops) if s.status == StopStatus.ARRIVED), None)
        state = dataclasses.replace(
            state,
            progress_m=along,
            last_s=old_state.last_s,
            x=x if old_state.last_s is not None else None,
            y=y if old_state.last_s is not None else None,
            speed=old_state.speed,
            trend=old_state.trend,
            at_stop=at,
            served_s=old_state.served_s,
            service_planned_s=old_state.service_planned_s,
        )
        etas = progress.current(plan, state, now, self._cfg)
        by_id = {e.stop_id: e.eta for e in etas.etas}
        await store.replace_stops(
            conn,
            route.id,
            [s for s in stops[: len(head_stops)]] + kept,
            new,
            moved,
            full,
            straight,
            state.to_json(),
            by_id,
        )
        body = await route_store.route_by_id(conn, route.id)
        assert body is not None
        return body

    async def _publish(self, bodies: Sequence[JsonDict]) -> None:
        for body in bodies:
            await self._bus.publish(messages.ROUTES, messages.route(body))

    # -- the three changes ---------------------------------------------------------------------

    async def insert(
        self, order: Order, now: datetime, route_ids: Sequence[int] | None = None
    ) -> JsonDict:
        """Put `order` into the live route where it costs least; the new Route JSON with
        `inserted` = {order_id, stop_id, position, added_s}."""
        if order.lat is None or order.lon is None or not order.located:
            raise PlanConflict(f"order {order.id} has no coordinates")
        if order.status not in ("unplanned", "planned"):
            raise PlanConflict(f"order {order.id} is {order.status} already")
        # Price in full the routes passing nearest to the order (by straight line, cheap).
        async with self._pool.acquire() as conn:
            nearest = await store.nearest_routes(
                conn, order.lat, order.lon, CANDIDATE_ROUTES, route_ids
            )
            if not nearest:
                raise PlanConflict("no live route to insert into")
            near = [await self._live(conn, rid, now) for rid in nearest]
        points: list[tuple[float, float]] = [(order.lat, order.lon)]
        chains: list[LiveChain] = []
        bases: dict[int, int] = {}
        for lv in near:
            base = len(points)
            bases[lv.route.id] = base
            points.append(lv.position)
            points.extend((s.lat, s.lon) for s in lv.pending)
            serving_s = lv.serving.service_s if lv.serving else 0.0
            chains.append(
                LiveChain(
                    lv.route.id,
                    base,
                    (lv.start - now).total_seconds() + serving_s,
                    tuple(
                        Visit(s.id, base + 1 + k, s.service_s, _window(s, now))
                        for k, s in enumerate(lv.pending)
                    ),
                )
            )
        measured = await self._travel.measure(points)
        windows = [
            ((w.start - now).total_seconds(), (w.end - now).total_seconds()) for w in order.windows
        ]
        open_windows: list[tuple[float, float] | None] = [w for w in windows if w[1] >= 0]
        if windows and not open_windows:
            raise PlanConflict(f"order {order.id}: every time window of it is over")
        best = None
        chosen: tuple[float, float] | None = None
        for w in open_windows or [None]:
            found = insertion.best_insertion(
                measured.seconds, chains, Visit(0, 0, order.service_s, w)
            )
            if found is not None and (best is None or found.added_s < best.added_s):
                best, chosen = found, w
        if best is None:
            raise PlanConflict(
                f"order {order.id}: no live route can serve it within its time windows "
                "without making another stop late"
            )
        lv = next(lv for lv in near if lv.route.id == best.route)
        window = chosen
        async with self._pool.acquire() as conn, conn.transaction():
            await route_store.lock_device(conn, lv.route.device_id)
            lv = await self._live(conn, lv.route.id, now)
            _, ids = await route_store.reserve_ids(conn, 1)
            stop = Stop(
                id=ids[0],
                seq=0,
                lat=order.lat,
                lon=order.lon,
                name=(order.address or f"Order {order.external_id or order.id}")[:500],
                recipient=order.recipient[:500],
                service_s=order.service_s,
                radius_m=STOP_RADIUS_M,
                window_start=None if window is None else now + timedelta(seconds=window[0]),
                window_end=None if window is None else now + timedelta(seconds=window[1]),
            )
            k = min(best.index, len(lv.pending))
            sequence = [*lv.pending[:k], stop, *lv.pending[k:]]
            # The matrix priced above covers this route (unless it changed meanwhile).
            base = bases[lv.route.id]
            own = [base + 1 + j for j in range(len(lv.pending))]
            sub = measured.subset([base, *own[:k], 0, *own[k:]])
            body = await self._rewrite(conn, lv, sequence, now, added=[stop], measured=sub)
            await order_store.link_orders(conn, [(order.id, lv.route.id, stop.id)], DISPATCHED)
        await self._publish([body])
        return {
            **body,
            "inserted": {
                "order_id": order.id,
                "stop_id": stop.id,
                "position": k + 1,
                "added_s": round(best.added_s, 1),
            },
        }

    async def reoptimise(self, route_id: int, now: datetime) -> JsonDict:
        """Re-order the route's remaining stops with VROOM (from where the vehicle is now);
        stops it cannot fit in their windows go last, in their old order."""
        device_id = await route_store.route_device(self._pool, route_id)
        if device_id is None:
            raise PlanNotFound(f"no route {route_id}")
        async with self._pool.acquire() as conn, conn.transaction():
            await route_store.lock_device(conn, device_id)
            live = await self._live(conn, route_id, now)
            order = await self._best_order(live, now)
            body = await self._rewrite(conn, live, order, now)
        await self._publish([body])
        return body

    async def _best_order(self, live: Live, now: datetime) -> list[Stop]:
        if len(live.pending) < 2:
            return list(live.pending)
        points = [live.position, *[(s.lat, s.lon) for s in live.pending]]
        measured = await self._travel.measure(points)
        begin = max(0, round((live.start - now).total_seconds()))
        jobs = tuple(
            Job(
                id=k + 1,
                location=k + 1,
                service_s=round(s.service_s),
                delivery=(),
                pickup=(),
                skills=frozenset(),
                priority=0,
                windows=()
                if (w := _window(s, now)) is None
                else ((max(0, round(w[0])), max(0, round(min(w[1], 9e8)))),),
            )
            for k, s in enumerate(live.pending)
        )
        problem = Problem(
            day=now.date(),
            t0=now,
            units=(),
            skills=(),
            locations=tuple(points),
            jobs=jobs,
            # One anonymous van from where the vehicle is, open-ended.
            vans=(Van(None, 0, None, (), frozenset(), (begin, begin + 7 * 86_400), None),),
            orders={},
            depots={},
            set_aside=(),
        )
        answer = await asyncio.to_thread(solver.solve, problem, measured.seconds, self._options)
        steps = answer["routes"][0]["steps"] if answer.get("routes") else []
        ranked = [int(s["id"]) - 1 for s in steps if s["type"] == "job"]
        rest = [k for k in range(len(live.pending)) if k not in set(ranked)]
        return [live.pending[k] for k in [*ranked, *rest]]

    async def move(self, stop_ids: Sequence[int], target: int, now: datetime) -> list[JsonDict]:
        """Move pending stops to route `target` (each where it adds least time); returns the
        Route JSON of the target and of every route the stops left."""
        sources: dict[int, int] = {}
        for sid in stop_ids:
            rid = await store.stop_route(self._pool, sid)
            if rid is None:
                raise PlanNotFound(f"no stop {sid}")
            sources[sid] = rid
        route_ids = sorted({target, *sources.values()})
        devices = []
        for rid in route_ids:
            dev = await route_store.route_device(self._pool, rid)
            if dev is None:
                raise PlanNotFound(f"no route {rid}")
            devices.append(dev)
        bodies: list[JsonDict] = []
        async with self._pool.acquire() as conn, conn.transaction():
            for dev in sorted(set(devices)):  # a fixed order: two moves cannot deadlock
                await route_store.lock_device(conn, dev)
            lives = {rid: await self._live(conn, rid, now) for rid in route_ids}
            moving: list[Stop] = []
            for sid in stop_ids:
                src = lives[sources[sid]]
                stop = next((s for s in src.pending if s.id == sid), None)
                if stop is None:
                    raise PlanConflict(f"stop {sid} is not pending: only stops still to do move")
                if sources[sid] != target:
                    moving.append(stop)
            dest = lives[target]
            sequence = list(dest.pending)
            for stop in moving:
                points = [dest.position, *[(s.lat, s.lon) for s in sequence], (stop.lat, stop.lon)]
                measured = await self._travel.measure(points)
                chain = LiveChain(
                    target,
                    0,
                    (dest.start - now).total_seconds(),
                    tuple(
                        Visit(s.id, k + 1, s.service_s, _window(s, now))
                        for k, s in enumerate(sequence)
                    ),
                )
                new = Visit(stop.id, len(points) - 1, stop.service_s, _window(stop, now))
                found = insertion.best_insertion(
                    measured.seconds, [chain], new, feasible_only=False
                )
                k = found.index if found is not None else len(sequence)
                sequence.insert(k, stop)
            bodies.append(await self._rewrite(conn, dest, sequence, now, moved_in=moving))
            moved_ids = {s.id for s in moving}
            for rid in route_ids:
                if rid == target:
                    continue
                src = lives[rid]
                left = [s for s in src.pending if s.id not in moved_ids]
                if not left and src.serving is None:
                    # Nothing left to do on it: the route is over.
                    await store.complete_route(conn, rid)
                    body = await route_store.route_by_id(conn, rid)
                else:
                    body = await self._rewrite(conn, src, left, now)
                assert body is not None
                bodies.append(body)
            await store.follow_stops(conn, target, sorted(moved_ids))
        await self._publish(bodies)
        return bodies
