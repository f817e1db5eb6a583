"""Planning a day: orders, depots and vehicles → a VROOM proposal → dispatched routes.

`propose` reads the orders (the day's unplanned ones unless named), measures travel
between every depot and order (road network, else straight lines), solves with VROOM in a
worker thread (it is CPU-bound), adds each route's road path and stores the proposal.
`dispatch` turns a stored proposal into routes through the routing service's own `create`
(road path as the route's path, planned arrivals, customer tracking links), then marks the
orders dispatched with their route and stop. The planned arrivals are the solver's, on
the same travel times, and a route's ETAs follow its planned arrivals, so at departure
the live ETAs and the plan agree.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

import asyncpg

from tracker.core import pathcodec, tokens
from tracker.core.model import JsonDict, Stop
from tracker.planning import proposal, solution, solver
from tracker.planning.model import DISPATCHED, PLANNED, UNPLANNED, Order, Vehicle, Window
from tracker.planning.problem import ProblemInvalid, build
from tracker.planning.solver import SolverOptions
from tracker.services import plan_edits
from tracker.services.plan_errors import PlanConflict, PlanNotFound, PlanRefused
from tracker.services.routing import RouteInvalid, RoutingService
from tracker.services.travel import Travel
from tracker.store import devices as device_store
from tracker.store import fleet as fleet_store
from tracker.store import orders as order_store
from tracker.store import plans as store

PLANNABLE = (UNPLANNED, PLANNED)
STOP_RADIUS_M = 50.0

__all__ = ["PlanConflict", "PlanNotFound", "PlanRefused", "PlanningService", "stop_of"]


@dataclasses.dataclass(frozen=True, slots=True)
class Dispatched:
    """A dispatched route and the fresh tracking tokens of its stops, in stop order."""

    route: JsonDict
    tokens: list[str]


def _window_for(arrival: datetime, windows: Sequence[Window]) -> Window | None:
    # A stop has one window: the one its planned arrival falls in, else the next one.
    for w in windows:
        if w.start <= arrival <= w.end:
            return w
    later = [w for w in windows if w.start > arrival]
    return later[0] if later else (windows[-1] if windows else None)


def stop_of(item: JsonDict, order: Order | None, seq: int) -> Stop:
    """A route stop from one stop of a stored proposal (and its order, for the window)."""
    arrival = datetime.fromisoformat(item["arrival"])
    window = _window_for(arrival, order.windows if order is not None else ())
    name = item.get("address") or (
        f"Order {item['external_id']}" if item.get("external_id") else f"Order {item['order_id']}"
    )
    return Stop(
        id=seq,
        seq=seq,
        lat=float(item["lat"]),
        lon=float(item["lon"]),
        name=name[:500],
        recipient=(item.get("recipient") or "")[:500],
        service_s=float(item["service_s"]),
        radius_m=STOP_RADIUS_M,
        planned_arrival=arrival,
        window_start=window.start if window else None,
        window_end=window.end if window else None,
    )


class PlanningService:
    """Proposes plans and dispatches them."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        routing: RoutingService,
        travel: Travel,
        options: SolverOptions,
        max_path_points: int | None = None,
    ) -> None:
        self._pool = pool
        self._routing = routing
        self.travel = travel
        self.options = options
        # Road paths of a long day can run to tens of thousands of points: dispatched
        # routes get the same bound as routes posted to the API (TRACKER_MAX_PATH_POINTS).
        self._max_path_points = max_path_points

    # -- proposals ---------------------------------------------------------------------------

    async def vehicles(self, ids: Sequence[int] | None) -> list[Vehicle]:
        """Stored vehicles by id (PlanRefused for an unknown or inactive one), or every
        active vehicle."""
        if ids is None:
            found = await fleet_store.list_vehicles(self._pool, active=True)
            if not found:
                raise PlanRefused("vehicles: none given and no active vehicle is registered")
            return found
        by_id = await fleet_store.vehicles_by_ids(self._pool, list(ids))
        out: list[Vehicle] = []
        for k, vid in enumerate(ids):
            vehicle = by_id.get(vid)
            if vehicle is None:
                raise PlanRefused(f"vehicles[{k}]: no vehicle {vid}")
            if not vehicle.active:
                raise PlanRefused(f"vehicles[{k}]: vehicle {vid} is not active")
            out.append(vehicle)
        return out

    async def device_id(self, unique_id: str) -> int | None:
        """The internal id of a registered device (for an inline vehicle), or None."""
        device = await device_store.device_by_unique_id(self._pool, unique_id)
        return None if device is None else device.id

    async def propose(
        self,
        day: date,
        vehicles: Sequence[Vehicle],
        order_ids: Sequence[int] | None,
        now: datetime,
    ) -> JsonDict:
        """Plan `day` and store the proposal; returns its JSON."""
        began = time.perf_counter()
        orders = await order_store.orders_for_planning(self._pool, day, order_ids)
        if order_ids is not None:
            known = {o.id for o in orders}
            missing = [i for i in order_ids if i not in known]
            if missing:
                raise PlanRefused(f"orders: no order {missing[0]}")
        refused = [o for o in orders if o.status not in PLANNABLE]
        plannable = [o for o in orders if o.status in PLANNABLE]
        depot_ids = {
            d for v in vehicles for d in (v.start_depot_id, v.end_depot_id) if d is not None
        }
        depots = await fleet_store.depots_by_ids(self._pool, sorted(depot_ids))
        try:
            problem = build(day, plannable, vehicles, depots, not_before=now)
        except ProblemInvalid as exc:
            raise PlanRefused(str(exc)) from exc
        measured = await self.travel.measure(problem.locations)
        matrix_s = time.perf_counter() - began
        answer = await asyncio.to_thread(solver.solve, problem, measured.seconds, self.options)
        solved = solution.read(problem, answer, measured.seconds)
        solve_s = time.perf_counter() - began - matrix_s
        if refused:
            extra = [solution.Unassigned(o, f"it is {o.status} already") for o in refused]
            solved = dataclasses.replace(
                solved,
                unassigned=tuple(sorted([*solved.unassigned, *extra], key=lambda u: u.order.id)),
            )
        routes = await plan_edits.route_bodies(self.travel, problem, measured, solved.routes)
        model = self.travel.model
        note = None
        if not measured.roads:
            note = proposal.STRAIGHT_NOTE.format(detour=model.detour, speed=model.speed_mps * 3.6)
        timing = {
            "matrix_s": matrix_s,
            "solve_s": solve_s,
            "paths_s": time.perf_counter() - began - matrix_s - solve_s,
        }
        body = proposal.plan_json(problem, solved, routes, measured.roads, note, timing)
        body["timing"]["total_s"] = round(time.perf_counter() - began, 3)
        stored = await store.insert_plan(self._pool, day, measured.roads, body)
        return stored.to_json()

    async def plan(self, plan_id: int) -> JsonDict:
        """A stored plan's JSON (PlanNotFound)."""
        stored = await store.get_plan(self._pool, plan_id)
        if stored is None:
            raise PlanNotFound(f"no plan {plan_id}")
        return stored.to_json()

    async def move(
        self,
        plan_id: int,
        order_id: int,
        vehicle: plan_edits.VehicleRef | None,
        position: int | None,
        now: datetime,
    ) -> JsonDict:
        """Edit a proposal before dispatch: order `order_id` to `position` of `vehicle`'s
        route (None: the cheapest place), or off the routes; the plan re-evaluated."""
        return await plan_edits.move(
            self._pool, self.travel, plan_id, order_id, vehicle, position, now
        )

    # -- dispatch ----------------------------------------------------------------------------

    async def dispatch(self, plan_id: int, now: datetime) -> tuple[JsonDict, list[Dispatched]]:
        """Create a route per vehicle of the plan and mark its orders dispatched.

        One dispatch of a plan at a time (a session advisory lock, every instance). Each
        route is recorded in the plan as soon as it exists, so a dispatch interrupted by an
        outage resumes with the routes still missing when asked again.
        """
        async with store.plan_lock(self._pool, plan_id):
            return await self._dispatch(plan_id, now)

    async def _dispatch(self, plan_id: int, now: datetime) -> tuple[JsonDict, list[Dispatched]]:
        stored = await store.get_plan(self._pool, plan_id)
        if stored is None:
            raise PlanNotFound(f"no plan {plan_id}")
        if stored.status == store.DISPATCHED:
            raise PlanConflict(f"plan {plan_id} is dispatched already")
        todo = [(k, r) for k, r in enumerate(stored.proposal["routes"]) if k not in stored.routes]
        order_ids = [s["order_id"] for _, r in todo for s in r["stops"]]
        statuses = await store.order_statuses(self._pool, order_ids)
        for oid in order_ids:
            if statuses.get(oid) not in PLANNABLE:
                what = statuses.get(oid, "deleted")
                raise PlanConflict(f"order {oid} is {what} now: make a new plan")
        orders = {
            o.id: o
            for o in await order_store.orders_for_planning(self._pool, stored.date, order_ids)
        }
        devices = {}
        for _, r in todo:
            if not r.get("device"):
                raise PlanConflict(f"vehicle {r['vehicle']!r} has no device to send the route to")
            device = await device_store.device_by_unique_id(self._pool, r["device"])
            if device is None:
                raise PlanConflict(f"vehicle {r['vehicle']!r}: device {r['device']!r} is gone")
            devices[r["device"]] = device
        made: list[Dispatched] = []
        for k, r in todo:
            stops = [stop_of(s, orders.get(s["order_id"]), n + 1) for n, s in enumerate(r["stops"])]
            try:
                if r["path"] is not None:
                    path = pathcodec.from_polyline(r["path"]["polyline"], r["path"]["precision"])
                else:
                    path = pathcodec.from_stops(stops)
            except pathcodec.PathError as exc:
                raise PlanConflict(
                    f"vehicle {r['vehicle']!r}: its route has no path to follow ({exc}); "
                    "give the vehicle a start depot"
                ) from exc
            if self._max_path_points is not None:
                path = pathcodec.simplified(path, self._max_path_points)
            fresh = [tokens.new_token() for _ in stops]
            try:
                body = await self._routing.create(
                    devices[r["device"]],
                    datetime.fromisoformat(r["start"]["time"]),
                    stops,
                    path,
                    not stored.roads,
                    now,
                    [tokens.digest(t) for t in fresh],
                )
            except RouteInvalid as exc:
                raise PlanConflict(f"vehicle {r['vehicle']!r}: {exc}") from exc
            by_seq = {s["seq"]: s["id"] for s in body["stops"]}
            links = [(s["order_id"], body["id"], by_seq[n + 1]) for n, s in enumerate(r["stops"])]
            async with self._pool.acquire() as conn, conn.transaction():
                await order_store.link_orders(conn, links, DISPATCHED)
                await store.record_route(conn, plan_id, k, body["id"])
            made.append(Dispatched(body, fresh))
        await store.mark_dispatched(self._pool, plan_id)
        return await self.plan(plan_id), made

    # -- used by the API's request parsing ----------------------------------------------------

    @staticmethod
    def inline_vehicle(fields: dict[str, Any], device_id: int | None, now: datetime) -> Vehicle:
        """A vehicle given in the plan request itself (validated column values)."""
        return Vehicle(
            id=0,
            name=fields["name"],
            device_id=device_id,
            device=fields.get("device"),
            capacity=fields.get("capacity", {}),
            shift_start=fields.get("shift_start"),
            shift_end=fields.get("shift_end"),
            time_zone=fields.get("time_zone", "UTC"),
            start_depot_id=fields.get("start_depot_id"),
            end_depot_id=fields.get("end_depot_id"),
            skills=tuple(fields.get("skills", ())),
            max_duration_s=fields.get("max_duration_s"),
            active=True,
            created_at=now,
            updated_at=now,
        )
