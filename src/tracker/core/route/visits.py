"""Visits: arriving at a stop's geofence, departing from it, and stops passed without one."""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from dataclasses import replace

from tracker.core import motion
from tracker.core.model import EventType, StopStatus
from tracker.core.route.config import EtaConfig
from tracker.core.route.events import Emitter
from tracker.core.route.plan import RoutePlan
from tracker.core.route.state import StopState, next_pending, with_stop

# A pending stop passed without a visit: deferred to the end of the ETA chain.
DEFERRED = EventType.DEFERRED


def depart(
    stops: tuple[StopState, ...], k: int, t: float, emit: Emitter, cfg: EtaConfig
) -> tuple[StopState, ...]:
    """Leaving the stop being served. An arrival nobody closed becomes a visit (or, when
    the company lets departure complete stops, is completed)."""
    st = stops[k]
    arrived = st.arrived_s if st.arrived_s is not None else t
    emit(EventType.DEPARTED, k, dwell_s=round(t - arrived, 1))
    if st.status != StopStatus.ARRIVED:
        return with_stop(stops, k, replace(st, departed_s=t))
    if cfg.auto_complete == "departure":
        emit(EventType.COMPLETED, k, auto=True)
        return with_stop(stops, k, replace(st, status=StopStatus.COMPLETED, departed_s=t, done_s=t))
    emit(EventType.VISITED, k, dwell_s=round(t - arrived, 1))
    return with_stop(stops, k, replace(st, status=StopStatus.VISITED, departed_s=t))


def defer(
    plan: RoutePlan,
    stops: tuple[StopState, ...],
    deferred: tuple[int, ...],
    x: float,
    y: float,
    along: float,
    at: int | None,
    cfg: EtaConfig,
    emit: Emitter,
) -> tuple[int, ...]:
    """The deferred stops after this fix.

    A pending stop the progress has left `pass_m` behind, with the vehicle that far from it
    too (and farther than the stop is from the path), was passed without a visit: it is
    deferred (the ETA chain visits it after the others, and stop.deferred says so once).
    A deferred stop the progress has come back to (within half that distance) is in
    sequence again.
    """
    if deferred:
        back = tuple(k for k in deferred if along - plan.along_m[k] >= 0.5 * cfg.pass_m)
        if len(back) != len(deferred):
            deferred = back
    behind = along - cfg.pass_m
    k = next_pending(stops, deferred)
    while k is not None and k not in deferred and k != at and plan.along_m[k] < behind:
        sx, sy = plan.xy[k]
        d = math.hypot(x - sx, y - sy)
        if d <= max(cfg.pass_m, plan.reach_m[k]):
            break  # still by it (a stop set back from the road is reached off the path)
        deferred = tuple(sorted((*deferred, k)))
        emit(
            DEFERRED,
            k,
            passed_m=round(along - plan.along_m[k], 1),
            distance_m=round(d, 1),
        )
        k = next_pending(stops, deferred)
    return deferred


def by_a_stop(
    plan: RoutePlan,
    stops: tuple[StopState, ...],
    x: float,
    y: float,
    along: float,
    slack: float,
    cfg: EtaConfig,
) -> bool:
    """At a stop near the current progress, or on the way between it and the path."""
    near = plan.max_reach_m + slack + cfg.jitter_m
    lo = bisect_left(plan.along_m, along - near)
    hi = bisect_right(plan.along_m, along + near)
    for k in range(lo, hi):
        sx, sy = plan.xy[k]
        if math.hypot(x - sx, y - sy) <= plan.reach_m[k] + slack + cfg.depart_margin_m:
            return True
    return False


def arrival(
    plan: RoutePlan,
    stops: tuple[StopState, ...],
    deferred: tuple[int, ...],
    x: float,
    y: float,
    along: float,
    slack: float,
    moving: float | None,
    staying: float,
    cfg: EtaConfig,
) -> int | None:
    """The pending stop the vehicle has just arrived at, if any.

    Stops placed near the current progress along the path, the next stop in sequence and
    the deferred ones (the driver may come back to them by any road) arrive on the usual
    rule; any other pending stop only after a long stay inside its geofence, so passing a
    later stop on a street the path uses twice, or waiting at a light beside it, is no visit.
    """
    near = plan.max_radius_m + slack + cfg.jitter_m
    lo = bisect_left(plan.along_m, along - near)
    hi = bisect_right(plan.along_m, along + near)
    following = next_pending(stops, deferred)
    candidates: tuple[int, ...] = (*deferred, *range(lo, hi))
    if following is not None:
        candidates = (following, *candidates)
    for k in candidates:
        if stops[k].status != StopStatus.PENDING:
            continue
        sx, sy = plan.xy[k]
        d = math.hypot(x - sx, y - sy)
        if motion.arrives(
            d, plan.radius_m[k], slack, moving, staying, cfg.arrive_speed_mps, cfg.dwell_s
        ):
            return k
    if staying < cfg.stray_dwell_s:
        return None
    for k, st in enumerate(stops):
        if st.status != StopStatus.PENDING:
            continue
        sx, sy = plan.xy[k]
        if motion.inside(math.hypot(x - sx, y - sy), plan.radius_m[k], slack):
            return k
    return None
