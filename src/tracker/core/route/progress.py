"""The per-route state machine: one fix in, new state, events and ETAs out.

`plan(route)` does the expensive work once per route (projection, path in metres, where
each stop lies along it). `step` then costs tens of microseconds per fix: locate the fix
near the last progress, watch the off-route and geofence rules, learn the speed along the
route and chain the ETAs of the remaining stops (`stages` holds each of those steps).
Everything is computed from the fix's own time, never the server clock, so replaying a
recorded drive reproduces exactly the ETAs and events it produced live. The state is
plain data that round-trips through JSON, so any server instance can take the next fix
of a route.

What the ETAs learn on the way: the recent speed (for the next minutes), the pace
relative to the plan (for the rest of the route, as `eta.Trust` weighs it against the
plan's own standing), and how long visits take against their planned service. A pending
stop the vehicle has left well behind without a visit is deferred: the stops after it
get their ETAs from where the vehicle is, and the deferred stop comes after the last one
(the driver finishes the sequence, then goes back), announced once as stop.deferred.

This module is the public entry: the plan, state, config and update types live in their
own modules (`plan`, `state`, `config`, `ledger`) and are re-exported here.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from tracker.core.model import Event, EventType, Fix, Route, StopStatus
from tracker.core.route import stages
from tracker.core.route.config import EtaConfig
from tracker.core.route.events import Emitter
from tracker.core.route.forecast import eta_chain, pace_of, progress_of
from tracker.core.route.history import Snapshot
from tracker.core.route.ledger import Progress, StopEta
from tracker.core.route.plan import RoutePlan
from tracker.core.route.state import STATE_VERSION, RouteState, StopState, all_done, start
from tracker.core.route.visits import DEFERRED

__all__ = [
    "DEFERRED",
    "STATE_VERSION",
    "EtaConfig",
    "Progress",
    "RoutePlan",
    "RouteState",
    "StopEta",
    "StopState",
    "current",
    "plan",
    "set_status",
    "start",
    "step",
]

_EXPLICIT = frozenset({StopStatus.COMPLETED, StopStatus.FAILED, StopStatus.SKIPPED})
_EVENT_FOR = {
    StopStatus.COMPLETED: EventType.COMPLETED,
    StopStatus.FAILED: EventType.FAILED,
    StopStatus.SKIPPED: EventType.SKIPPED,
}


def plan(route: Route, history: Snapshot | None = None) -> RoutePlan:
    """Build the per-route plan; cache it with the route, it is reused for every fix.

    `history` is a snapshot of the travel times learned near the route's path (the store
    loads it, `history.cells_of_path` says which cells to load); without, or where it knows
    nothing, the route's own plan stands."""
    return RoutePlan(route, history)


def step(
    plan: RoutePlan, state: RouteState, fix: Fix, cfg: EtaConfig
) -> tuple[RouteState, list[Event], Progress | None]:
    """Apply one fix. A fix not newer than the last one changes nothing: (state, [], None)."""
    last_s = state.last_s
    if last_s is not None and fix.time.timestamp() <= last_s:
        return state, [], None
    emit = Emitter(plan, fix.time)
    s = stages.Sample.of(plan, state, fix, cfg)
    loc, far = stages.locate(plan, state, s, cfg)
    new_p, stay = stages.advance(state, s, loc, far, cfg)
    v = stages.visit(plan, state, s, new_p, stay, far, cfg, emit)
    new_p = v.progress_m
    course = stages.wander(plan, state, s, loc, far, new_p, v, cfg, emit)
    speed, trend = stages.learn(plan, state, s, far, new_p, v, course, cfg)

    completed = state.completed
    if not completed and v.at is None and all_done(v.stops):
        completed = True
        emit(EventType.ROUTE_COMPLETED)

    new_state = RouteState(
        stops=v.stops,
        published=state.published,
        published_s=state.published_s,
        progress_m=new_p,
        last_s=s.t,
        x=s.x,
        y=s.y,
        speed=speed,
        trend=trend,
        stay=stay,
        at_stop=v.at,
        outside_fixes=v.outside_fixes,
        off_route=course.off_route,
        flip_fixes=course.flip_fixes,
        rejoin_m=course.rejoin_m,
        offset_m=course.offset_m,
        completed=completed,
        deferred=v.deferred,
        served_s=v.served_s,
        service_planned_s=v.service_planned_s,
        on_path_s=s.t if not far or last_s is None else state.on_path_s,
    )
    new_state, update = stages.publish(plan, new_state, s.t, cfg, emit)
    return new_state, emit.events, update


def set_status(
    plan: RoutePlan,
    state: RouteState,
    stop_id: int,
    status: str,
    time: datetime,
    reason: str | None = None,
) -> tuple[RouteState, list[Event]]:
    """An explicit status change from the driver or dispatcher: completed, failed or skipped.

    Repeating a stop's current status is a no-op (so retried requests are harmless); moving
    a stop that is already done to another outcome, or to a status that is not explicit,
    raises ValueError. `failed` needs a reason. A skipped stop drops out of the ETA chain
    and its arrival, if any, no longer counts.
    """
    k = plan.position.get(stop_id)
    if k is None:
        raise ValueError(f"route {plan.route.id} has no stop {stop_id}")
    if status not in _EXPLICIT:
        allowed = ", ".join(sorted(_EXPLICIT))
        raise ValueError(f"status must be one of {allowed}, not {status!r}")
    current_status = state.stops[k].status
    if current_status == status:
        return state, []
    if current_status in StopStatus.DONE:
        raise ValueError(f"stop {stop_id} is already {current_status}; it cannot become {status}")
    if status == StopStatus.FAILED and not (reason and reason.strip()):
        raise ValueError("a failed stop needs a reason")
    emit = Emitter(plan, time)
    st = replace(state.stops[k], status=status, done_s=time.timestamp(), reason=reason)
    stops = (*state.stops[:k], st, *state.stops[k + 1 :])
    at = state.at_stop
    if status == StopStatus.SKIPPED and at == k:
        at = None
    data: dict[str, Any] = {"explicit": True}
    if reason:
        data["reason"] = reason
    emit(_EVENT_FOR[status], k, **data)
    completed = state.completed
    if not completed and all_done(stops):
        completed = True
        emit(EventType.ROUTE_COMPLETED)
    deferred = tuple(j for j in state.deferred if j != k)
    new_state = replace(state, stops=stops, at_stop=at, completed=completed, deferred=deferred)
    return new_state, emit.events


def current(
    plan: RoutePlan, state: RouteState, time: datetime, cfg: EtaConfig | None = None
) -> Progress:
    """ETAs as of the last fix (for snapshots); identical to what that fix's step returned.

    Before the first fix the drive is assumed to start at the later of the planned start
    and `time`, from the beginning of the path.
    """
    cfg = cfg or EtaConfig()
    pace = pace_of(plan, state, cfg)
    if state.last_s is None:
        t = max(plan.route.planned_start.timestamp(), time.timestamp())
    else:
        t = state.last_s
    return progress_of(plan, state, t, pace, eta_chain(plan, state, t, pace, cfg), cfg)
