"""The ETAs of the remaining stops: recent speed handing over to the long-run pace, the
time at stops as the visits so far suggest, chained along the path from where the drive
resumes."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from tracker.core.model import StopStatus
from tracker.core.route.config import EtaConfig
from tracker.core.route.eta import Chain, Pace, SpeedEstimate, chain
from tracker.core.route.ledger import Ledger, Progress
from tracker.core.route.plan import RoutePlan
from tracker.core.route.state import RouteState, next_pending


def service_scale(state: RouteState, cfg: EtaConfig) -> float:
    """Time at a stop per planned second of service, as the visits so far suggest."""
    prior = cfg.service_prior_s
    if state.service_planned_s <= 0.0 or math.isinf(prior):
        return 1.0
    return (state.served_s + prior) / (state.service_planned_s + prior)


def chain_start(
    plan: RoutePlan, state: RouteState, t: float, cfg: EtaConfig
) -> tuple[float, float, float]:
    """Where the rest of the drive starts: metres along the path, when (epoch s), and how
    many metres must be driven first to get there."""
    at = state.at_stop
    if at is not None:
        st = state.stops[at]
        if st.status == StopStatus.ARRIVED and st.arrived_s is not None:
            # Still being served: the drive resumes when its service time is up.
            service = plan.service_s[at] * service_scale(state, cfg)
            return plan.along_m[at], max(t, st.arrived_s + service), 0.0
        return plan.along_m[at], t, 0.0
    if plan.straight_line and state.x is not None and state.y is not None:
        # The stops joined by straight lines are no road to measure progress on: the
        # way to the next stop is its own straight-line distance, like every later leg.
        k = next_pending(state.stops, state.deferred)
        if k is not None:
            sx, sy = plan.xy[k]
            return plan.along_m[k], t, math.hypot(state.x - sx, state.y - sy)
    if state.off_route:
        # Off the path: first back to it (crow-flies, times the detour factor).
        return state.rejoin_m, t, state.offset_m * cfg.detour_factor
    return state.progress_m, t, 0.0


def eta_chain(plan: RoutePlan, state: RouteState, t: float, pace: Pace, cfg: EtaConfig) -> Chain:
    start_m, start_s, lead_m = chain_start(plan, state, t, cfg)
    pending = StopStatus.PENDING
    active = [s.status == pending for s in state.stops]
    later = None
    if state.deferred:
        later = [False] * len(active)
        for k in state.deferred:
            later[k] = True
    profile = plan.profile
    return chain(
        start_m,
        start_s,
        pace,
        plan.along_m,
        plan.service_s,
        plan.opens_s,
        active,
        state.published,
        cfg.eta_change_s,
        cfg.eta_change_frac,
        lead_m,
        None if profile.flat else plan.planned_m,
        None if profile.flat else profile.planned_m(start_m),
        later,
        service_scale(state, cfg),
    )


def speed_now(plan: RoutePlan, speed: SpeedEstimate, cfg: EtaConfig) -> float:
    return speed.speed(
        plan.prior_speed(cfg), cfg.speed_prior_s, cfg.min_speed_mps, cfg.max_speed_mps
    )


def pace_of(plan: RoutePlan, state: RouteState, cfg: EtaConfig) -> Pace:
    """Recent speed handing over to the long-run pace the drive so far suggests."""
    prior = plan.prior_speed(cfg)
    lo, hi = cfg.min_speed_mps, cfg.max_speed_mps
    profile = plan.profile
    done_m = profile.planned_m(state.progress_m)
    remaining_m = max(0.0, plan.planned_m[-1] - done_m)
    g = plan.trust(cfg).factor(
        state.trend.time_s, state.trend.distance_m / prior, remaining_m / prior
    )
    far = hi if g * hi <= prior else min(hi, max(lo, prior / g))
    local = profile.ratio(state.progress_m)
    near = state.speed.speed(far / local, cfg.speed_prior_s, lo, hi)
    return Pace(near, far, cfg.near_s, local)


def progress_of(
    plan: RoutePlan, state: RouteState, t: float, pace: Pace, ch: Chain, cfg: EtaConfig
) -> Progress:
    """The update to publish: every stop's ETA with its interval, and the next stop."""
    stops = state.stops
    ids = plan.stop_ids
    etas, dists = ch.etas, ch.dists
    remaining = 0.0
    for d in reversed(dists):
        if d is not None:
            remaining = d
            break
    next_id: int | None = None
    deferred = state.deferred
    for k, e in enumerate(etas):
        if (e is not None and k not in deferred) or stops[k].status == StopStatus.ARRIVED:
            next_id = ids[k]
            break
    if next_id is None and deferred:
        next_id = ids[deferred[0]]

    return Progress(
        time=datetime.fromtimestamp(t, UTC),
        progress_m=state.progress_m,
        remaining_m=remaining,
        off_route=state.off_route,
        straight_line=plan.straight_line,
        speed_mps=pace.near_mps,
        next_stop_id=next_id,
        etas=Ledger(ids, plan.seqs, plan.position, stops, etas, dists, t, cfg.spread),
    )
