"""Editing a proposal before it is dispatched: move an order to a place in a van's route,
to another van, or off the routes; the routes it changes are re-evaluated at once.

The edited routes are evaluated by VROOM's plan mode (`solver.check`) on the same kind of
travel matrix the plan was made with (road network, else straight lines): the same
arrivals the solver would give for that order of stops, and every constraint the forced
order breaks reported on its stop or route (`tracker.planning.edits`). Their road paths
are drawn again through the new order, the plan's totals recomputed and the stored
proposal replaced, so `GET` shows it and `dispatch` sends exactly it. Routes the edit does
not touch keep their arrivals as planned.

One edit or dispatch of a plan at a time: the dispatch's advisory lock.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Any

import asyncpg

from tracker.core.model import JsonDict
from tracker.planning import edits, proposal, solution, solver
from tracker.planning.model import PLANNED, UNPLANNED, Depot, Order, Vehicle
from tracker.planning.problem import Problem, ProblemInvalid, build
from tracker.services.plan_errors import PlanConflict, PlanNotFound, PlanRefused
from tracker.services.travel import Measured, Travel
from tracker.store import fleet as fleet_store
from tracker.store import orders as order_store
from tracker.store import plans as store

PLANNABLE = (UNPLANNED, PLANNED)
VehicleRef = int | str  # a vehicle's id in the plan, or its name (a vehicle given inline)


async def route_bodies(
    travel: Travel,
    problem: Problem,
    measured: Measured,
    routes: Sequence[solution.PlannedRoute],
    broken: Mapping[int, Mapping[str, Any]] | None = None,
) -> list[JsonDict]:
    """Each route's JSON with its road path to the last stop and back (`broken`: its
    violations by van index, from `edits.violations`)."""
    outbound = [
        ([r.start.location] if r.van.start is not None else []) + [s.location for s in r.stops]
        for r in routes
    ]
    back = [
        [r.stops[-1].location, r.end.location] if r.van.end is not None else [r.stops[-1].location]
        for r in routes
    ]
    paths = await travel.paths(measured, [*outbound, *back])
    index = {id(v): k for k, v in enumerate(problem.vans)}
    return [
        proposal.route_json(
            problem,
            r,
            paths[k].points,
            paths[k].leg_m,
            paths[len(outbound) + k].points,
            paths[len(outbound) + k].length_m,
            None if broken is None else broken.get(index[id(r.van)]),
        )
        for k, r in enumerate(routes)
    ]


def _identity(item: Mapping[str, Any]) -> tuple[Any, ...]:
    return (item.get("vehicle_id"), item.get("vehicle"), item.get("device"))


async def _vehicles(pool: asyncpg.Pool, plan: JsonDict, now: datetime) -> list[Vehicle]:
    """The plan's vehicles as planned; a plan stored before plans kept them falls back to
    the registered vehicles of its routes."""
    if "vehicles" in plan:
        return [edits.vehicle_of(v, now) for v in plan["vehicles"]]
    ids = [r["vehicle_id"] for r in plan["routes"]]
    if any(i is None for i in ids):
        raise PlanConflict("this plan does not record its inline vehicles: make a new plan")
    found = await fleet_store.vehicles_by_ids(pool, ids)
    if len(found) != len(set(ids)):
        raise PlanConflict("a vehicle of this plan is gone: make a new plan")
    return [found[i] for i in ids]


def _target(vehicles: Sequence[Vehicle], ref: VehicleRef, plan_id: int) -> int:
    if isinstance(ref, int):
        hits = [k for k, v in enumerate(vehicles) if v.id == ref]
    else:
        hits = [k for k, v in enumerate(vehicles) if v.name == ref]
    if not hits:
        raise PlanRefused(f"vehicle: no vehicle {ref!r} in plan {plan_id}")
    if len(hits) > 1:
        raise PlanRefused(f"vehicle: {ref!r} names more than one vehicle of plan {plan_id}")
    return hits[0]


def _route_vans(routes: Sequence[JsonDict], vehicles: Sequence[Vehicle]) -> list[int]:
    # Each route's vehicle: the first not yet matched with the same id, name and device.
    # (A plan that fell back on the registered vehicles matches on the id alone.)
    taken: set[int] = set()
    out = []
    for r in routes:
        free = [k for k in range(len(vehicles)) if k not in taken]
        same = [
            k
            for k in free
            if (vehicles[k].id or None, vehicles[k].name, vehicles[k].device) == _identity(r)
        ]
        same = same or [
            k for k in free if r.get("vehicle_id") and vehicles[k].id == r["vehicle_id"]
        ]
        if not same:
            raise PlanConflict(
                f"vehicle {r.get('vehicle')!r} of this plan is unknown: make a new plan"
            )
        taken.add(same[0])
        out.append(same[0])
    return out


def _problem(
    day: date,
    orders: Sequence[Order],
    vehicles: Sequence[Vehicle],
    depots: Mapping[int, Depot],
    now: datetime,
) -> Problem:
    """The problem of the changed routes: every window kept (a dispatcher may put an order
    past its window on purpose), no van leaving before now."""
    try:
        problem = build(day, orders, vehicles, depots)
    except ProblemInvalid as exc:
        raise PlanConflict(f"{exc}: make a new plan") from exc
    if problem.set_aside:
        first = problem.set_aside[0]
        raise PlanConflict(f"order {first.order_id}: {first.reason}")
    floor = problem.seconds(now)
    vans = tuple(
        dataclasses.replace(v, window=(max(v.window[0], floor), max(v.window[1], floor)))
        for v in problem.vans
    )
    return dataclasses.replace(problem, vans=vans)


async def move(
    pool: asyncpg.Pool,
    travel: Travel,
    plan_id: int,
    order_id: int,
    vehicle: VehicleRef | None,
    position: int | None,
    now: datetime,
) -> JsonDict:
    """Put order `order_id` of plan `plan_id` at `position` (0-based among the van's other
    stops; None: where it breaks least and costs least) of `vehicle`'s route, or off the
    routes (`vehicle` None). Returns the re-evaluated plan's JSON."""
    async with store.plan_lock(pool, plan_id):
        stored = await store.get_plan(pool, plan_id)
        if stored is None:
            raise PlanNotFound(f"no plan {plan_id}")
        if stored.status == store.DISPATCHED or stored.routes:
            raise PlanConflict(f"plan {plan_id} is dispatched already: move its live stops instead")
        plan = stored.proposal
        order = await order_store.get_order(pool, order_id)
        if order is None:
            raise PlanRefused(f"order_id: no order {order_id}")
        vehicles = await _vehicles(pool, plan, now)
        vans = _route_vans(plan["routes"], vehicles)
        lists: dict[int, list[int]] = {k: [] for k in range(len(vehicles))}
        for k, r in zip(vans, plan["routes"], strict=True):
            lists[k] = [int(s["order_id"]) for s in r["stops"]]
        source = next((k for k, ids in lists.items() if order_id in ids), None)
        waiting = {int(u["order_id"]) for u in plan["unassigned"]}
        if source is None and order_id not in waiting:
            raise PlanRefused(f"order_id: order {order_id} is not in plan {plan_id}")
        target = None if vehicle is None else _target(vehicles, vehicle, plan_id)
        if target is not None and order.status not in PLANNABLE:
            raise PlanConflict(f"order {order_id} is {order.status} now: it cannot be planned")
        if target is None and position is not None:
            raise PlanRefused("position: only with a vehicle")
        if source is not None:
            lists[source].remove(order_id)
        if target is not None and position is not None and not 0 <= position <= len(lists[target]):
            raise PlanRefused(f"position: must be from 0 to {len(lists[target])} for this vehicle")
        changed = sorted({k for k in (source, target) if k is not None})
        if not changed:
            return stored.to_json()  # an unassigned order left unassigned

        # Re-evaluate the changed routes (the moved order goes in once placed).
        day = stored.date
        ids = sorted(
            {o for k in changed for o in lists[k]} | ({order_id} if target is not None else set())
        )
        orders = await order_store.orders_for_planning(pool, day, ids) if ids else []
        gone = set(ids) - {o.id for o in orders}
        if gone:
            raise PlanConflict(f"order {min(gone)} is deleted now: make a new plan")
        for o in orders:
            if o.status not in PLANNABLE:
                raise PlanConflict(f"order {o.id} is {o.status} now: make a new plan")
        used = [vehicles[k] for k in changed]
        depot_ids = {d for v in used for d in (v.start_depot_id, v.end_depot_id) if d is not None}
        depots = await fleet_store.depots_by_ids(pool, sorted(depot_ids))
        problem = _problem(day, orders, used, depots, now)
        measured = await travel.measure(problem.locations)
        if measured.roads != stored.roads:
            raise PlanConflict(
                "the road network was "
                + ("removed" if stored.roads else "imported")
                + " since this plan was made: make a new plan"
            )
        local = {k: n for n, k in enumerate(changed)}
        if target is not None:
            where = position
            if where is None:
                where = await asyncio.to_thread(
                    edits.cheapest_position,
                    problem,
                    measured.seconds,
                    local[target],
                    lists[target],
                    order_id,
                )
            lists[target].insert(where, order_id)
        steps = {local[k]: lists[k] for k in changed}
        answer = await asyncio.to_thread(solver.check, problem, measured.seconds, steps)
        solved = solution.read(problem, answer, measured.seconds)
        broken = edits.violations(problem, answer)
        fresh = await route_bodies(travel, problem, measured, solved.routes, broken)
        index = {id(v): n for n, v in enumerate(problem.vans)}
        by_van = {
            changed[index[id(r.van)]]: body for r, body in zip(solved.routes, fresh, strict=True)
        }
        routes = []
        old = dict(zip(vans, plan["routes"], strict=True))
        for k in range(len(vehicles)):
            if k in local:
                if k in by_van:
                    routes.append(by_van[k])
            elif k in old:
                routes.append(old[k])
        unassigned = [u for u in plan["unassigned"] if int(u["order_id"]) != order_id]
        if target is None:
            unassigned.append(
                {
                    "order_id": order_id,
                    "external_id": order.external_id,
                    "reason": edits.UNASSIGNED_BY_HAND,
                }
            )
        unassigned.sort(key=lambda u: int(u["order_id"]))
        edited = {
            **plan,
            "routes": routes,
            "unassigned": unassigned,
            "summary": proposal.summary(routes, len(unassigned), len(vehicles)),
            "edited_at": now.isoformat(),
        }
        if "vehicles" not in plan:
            edited["vehicles"] = [proposal.vehicle_json(v) for v in vehicles]
        if not await store.update_proposal(pool, plan_id, edited):
            raise PlanConflict(f"plan {plan_id} is dispatched already")
        again = await store.get_plan(pool, plan_id)
        assert again is not None
        return again.to_json()
