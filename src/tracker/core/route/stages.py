"""The stages of one fix through a route, in the order `progress.step` runs them.

1. `locate`: where along the path the fix lies, near the last progress (or anywhere
   ahead when lost), and whether it is far from the path.
2. `advance`: the progress that location justifies (forward while moving, back only
   beyond the noise, unchanged while standing still).
3. `visit`: geofences: departure from the stop being served, else arrival at a pending
   one; stops passed without a visit are deferred.
4. `wander`: off route after several far fixes in a row, back on after several near ones.
5. `learn`: the recent speed and the pace relative to the plan, from progress between stops.
6. `publish`: the ETAs, and the events of the ones that changed materially or are near.

Each stage takes what the earlier ones found and returns plain values; none reads a clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from tracker.core import motion
from tracker.core.model import EventType, Fix, StopStatus
from tracker.core.route.config import EtaConfig
from tracker.core.route.eta import Location, SpeedEstimate
from tracker.core.route.events import Emitter, iso
from tracker.core.route.forecast import eta_chain, pace_of, progress_of, speed_now
from tracker.core.route.ledger import Progress
from tracker.core.route.plan import RoutePlan
from tracker.core.route.publication import became_next_s, material
from tracker.core.route.state import RouteState, StopState, next_pending, with_stop
from tracker.core.route.visits import arrival, by_a_stop, defer, depart


@dataclass(frozen=True, slots=True)
class Sample:
    """One fix in the plan's metres: where, when, how sure, how fast."""

    t: float
    x: float
    y: float
    slack: float  # the fix's accuracy as it widens geofences
    dt: float  # seconds since the previous fix (0 for the first)
    moving: float | None  # reported speed, else the speed from the previous fix
    reported_speed: float | None

    @classmethod
    def of(cls, plan: RoutePlan, state: RouteState, fix: Fix, cfg: EtaConfig) -> Sample:
        """The fix projected into the plan's frame, against the state's previous fix."""
        t = fix.time.timestamp()
        last_s = state.last_s
        x, y = plan.projection.to_xy(fix.lat, fix.lon)
        slack = motion.slack(fix.accuracy, cfg.max_accuracy_m)
        dt = 0.0 if last_s is None else t - last_s
        if fix.speed is not None and fix.speed >= 0.0:
            moving: float | None = fix.speed
        elif state.x is not None and state.y is not None and last_s is not None:
            moving = motion.speed_between(state.x, state.y, last_s, x, y, t)
        else:
            moving = None
        return cls(t, x, y, slack, dt, moving, fix.speed)


def locate(plan: RoutePlan, state: RouteState, s: Sample, cfg: EtaConfig) -> tuple[Location, bool]:
    """Stage 1: where along the path, and whether the fix is far from it."""
    index = plan.index
    p = state.progress_m
    x, y, slack, dt = s.x, s.y, s.slack, s.dt
    if state.last_s is None:
        loc = index.locate(x, y, (0.0, index.length_m), (0.0, 0.0), 1.0, cfg.first_fix_ahead_cost)
    elif state.off_route:
        lo = p - cfg.search_back_m
        hi = index.length_m
        bound = state.on_path_s is not None
        if state.on_path_s is not None:
            # Anywhere ahead, but no farther along than the vehicle could have driven since
            # it was last near the path: where the path passes the same streets again
            # later, a vehicle off it near the start must not be taken for one far ahead.
            hi = min(hi, p + cfg.search_ahead_m + cfg.max_speed_mps * (s.t - state.on_path_s))
        loc = index.locate(x, y, (lo, hi), (p, p), 1.0, cfg.first_fix_ahead_cost, bound)
    else:
        reach = cfg.search_ahead_m + cfg.reach_mps * dt
        fast = max(speed_now(plan, state.speed, cfg), s.moving or 0.0)
        hi = p + 2.0 * fast * dt + cfg.jitter_m + slack
        # Candidates behind the progress already made cost extra, so where the path
        # doubles back on itself the pass ahead wins a tie.
        lo = p - cfg.jitter_m - slack - cfg.search_back_m
        loc = index.locate(x, y, (lo, p + reach), (p, hi))
    # A straight-line route is no road: being far from it is no detour.
    far = not plan.straight_line and loc.offset_m - slack > cfg.off_route_m
    return loc, far


def advance(
    state: RouteState, s: Sample, loc: Location, far: bool, cfg: EtaConfig
) -> tuple[float, motion.Stay]:
    """Stage 2: progress moves with a trustworthy location: forward while moving, back
    only beyond the noise; a vehicle standing still stays put, however its fixes scatter."""
    p = state.progress_m
    stay = motion.Stay(s.x, s.y, s.t) if state.stay is None else state.stay
    stay = stay.update(s.x, s.y, s.t, cfg.stay_radius_m)
    speed = s.reported_speed
    stopped = speed is not None and 0.0 <= speed < cfg.still_mps
    still = stopped or stay.duration(s.t) >= cfg.dwell_s
    new_p = p
    if not far:
        moved = loc.along_m - p
        # Accuracy is a 68 % radius; two of them cover the scatter of a standing phone.
        band = cfg.jitter_m + 2.0 * s.slack
        if moved < -band or moved > (band if still else 0.0):
            new_p = loc.along_m
    return new_p, stay


@dataclass(frozen=True, slots=True)
class Visits:
    """What stage 3 leaves: stop states, the stop being served and visit bookkeeping."""

    stops: tuple[StopState, ...]
    deferred: tuple[int, ...]
    at: int | None
    outside_fixes: int
    served_s: float
    service_planned_s: float
    progress_m: float  # the progress, corrected by an arrival


def visit(
    plan: RoutePlan,
    state: RouteState,
    s: Sample,
    new_p: float,
    stay: motion.Stay,
    far: bool,
    cfg: EtaConfig,
    emit: Emitter,
) -> Visits:
    """Stage 3: departure from the stop being served, else arrival at a pending one (which
    may correct the progress: `Visits.progress_m`)."""
    x, y, t, slack = s.x, s.y, s.t, s.slack
    stops = state.stops
    deferred = state.deferred
    served_s, service_planned_s = state.served_s, state.service_planned_s
    at = state.at_stop
    outside_fixes = state.outside_fixes
    if at is not None:
        sx, sy = plan.xy[at]
        gone = motion.outside(
            math.hypot(x - sx, y - sy), plan.radius_m[at], slack, cfg.depart_margin_m
        )
        outside_fixes = outside_fixes + 1 if gone else 0
        if outside_fixes >= cfg.depart_fixes:
            arrived_s = stops[at].arrived_s
            if arrived_s is not None and plan.service_s[at] > 0.0:
                # The visit's length teaches how long visits take.
                served_s += t - arrived_s
                service_planned_s += plan.service_s[at]
            stops = depart(stops, at, t, emit, cfg)
            at, outside_fixes = None, 0
    if at is None:
        k = arrival(plan, stops, deferred, x, y, new_p, slack, s.moving, stay.duration(t), cfg)
        if k is not None:
            stops = with_stop(stops, k, replace(stops[k], status=StopStatus.ARRIVED, arrived_s=t))
            sx, sy = plan.xy[k]
            emit(EventType.ARRIVED, k, distance_m=round(math.hypot(x - sx, y - sy), 1))
            at, outside_fixes = k, 0
            if abs(new_p - plan.along_m[k]) > cfg.pass_m:
                # Being at a stop says where along the path the vehicle is better than a
                # match on a street the path uses twice (a terminal loop, say): progress
                # that had run far ahead of (or behind) the stop comes back to it.
                new_p = plan.along_m[k]
            if k in deferred:
                deferred = tuple(j for j in deferred if j != k)
    if not (far or state.off_route or plan.straight_line):
        # (Along stops joined by straight lines, progress is no road travelled: there is
        # nothing to pass a stop on. Off the route, one fix near the path again is no
        # proof yet of where along it the vehicle is: stops are deferred once it is back.)
        deferred = defer(plan, stops, deferred, x, y, new_p, at, cfg, emit)
    return Visits(stops, deferred, at, outside_fixes, served_s, service_planned_s, new_p)


@dataclass(frozen=True, slots=True)
class Course:
    """What stage 4 leaves: on or off route, and where the way back joins the path."""

    off_route: bool
    flip_fixes: int
    rejoin_m: float
    offset_m: float


def wander(
    plan: RoutePlan,
    state: RouteState,
    s: Sample,
    loc: Location,
    far: bool,
    new_p: float,
    v: Visits,
    cfg: EtaConfig,
    emit: Emitter,
) -> Course:
    """Stage 4: off route after several far fixes in a row, back on after several near
    ones; a vehicle at or by a stop (a yard, a depot set back from the road) is where it
    should be."""
    p = state.progress_m
    astray = far and v.at is None and not by_a_stop(plan, v.stops, s.x, s.y, new_p, s.slack, cfg)
    off_route = state.off_route
    flips = state.flip_fixes + 1 if astray != off_route else 0
    if not off_route and flips >= cfg.off_route_fixes:
        off_route, flips = True, 0
        emit(EventType.OFF_ROUTE, distance_m=round(loc.offset_m, 1), progress_m=round(p, 1))
    elif off_route and flips >= cfg.back_on_route_fixes:
        off_route, flips = False, 0
        emit(EventType.BACK_ON_ROUTE, progress_m=round(max(p, loc.along_m), 1))

    rejoin_m, offset_m = new_p, loc.offset_m
    if off_route and far:
        # Head back for the path before the next stop rather than wherever it passes
        # nearest: a path that later comes close must not pull the ETAs past stops.
        k = next_pending(v.stops, v.deferred)
        index = plan.index
        end = index.length_m if k is None else max(p, plan.along_m[k]) + plan.max_radius_m
        lo = p - cfg.search_back_m
        back = index.locate(s.x, s.y, (lo, end), (p, p), 1.0, cfg.first_fix_ahead_cost)
        rejoin_m, offset_m = back.along_m, back.offset_m
    return Course(off_route, flips, rejoin_m, offset_m)


def learn(
    plan: RoutePlan,
    state: RouteState,
    s: Sample,
    far: bool,
    new_p: float,
    v: Visits,
    course: Course,
    cfg: EtaConfig,
) -> tuple[SpeedEstimate, SpeedEstimate]:
    """Stage 5: the speed from progress on the path between stops (service time is
    planned), and the pace relative to the plan from the same progress in planned metres."""
    speed, trend = state.speed, state.trend
    if (
        state.last_s is None
        or s.dt > cfg.max_gap_s
        or far
        or state.off_route
        or course.off_route
        or state.at_stop is not None
        or v.at is not None
    ):
        return speed, trend
    p = state.progress_m
    moved = new_p - p
    profile = plan.profile
    planned = moved if profile.flat else profile.planned_m(new_p) - profile.planned_m(p)
    if plan.straight_line and state.x is not None and state.y is not None:
        # Without a road to follow, progress is how much closer the next stop got.
        k = next_pending(v.stops, v.deferred)
        if k is not None:
            sx, sy = plan.xy[k]
            moved = math.hypot(state.x - sx, state.y - sy) - math.hypot(s.x - sx, s.y - sy)
            planned = moved * profile.ratio(p)
    if trend.distance_m > 0.0 or moved > 0.0:
        # (Waiting before the drive gets going is a late start, not the route's pace.)
        speed = speed.learn(moved, s.dt, cfg.speed_tau_s)
        trend = trend.learn(planned, s.dt, cfg.trend_tau_s)
    return speed, trend


def publish(
    plan: RoutePlan, state: RouteState, t: float, cfg: EtaConfig, emit: Emitter
) -> tuple[RouteState, Progress]:
    """Stage 6: the ETAs, events for the ones that changed materially (`publication`:
    the shown minute, a move that matters for the time to go, a hold between events of a
    stop unless the move is large; looser when the stop becomes next or is arriving), and
    stop.arriving once per stop when it is close."""
    pace = pace_of(plan, state, cfg)
    ch = eta_chain(plan, state, t, pace, cfg)
    stops = state.stops
    deferred = state.deferred
    soon = t + cfg.arriving_s
    arriving: list[int] = []
    for k, e in enumerate(ch.etas):
        if e is None:
            continue
        if e > soon:
            if deferred:
                continue  # deferred stops come last, out of sequence
            break  # ETAs only grow along the chain
        if not stops[k].announced:
            arriving.append(k)
    published = state.published
    n = len(published)
    pub_s = state.published_s if len(state.published_s) == n else (None,) * n
    nxt = next_pending(stops, deferred) if state.at_stop is None else None
    fresh_next = False
    if nxt is not None:
        last = pub_s[nxt]
        fresh_next = last is None or last < became_next_s(stops)
    pub: list[float | None] | None = None
    pub_t: list[float | None] | None = None
    for k, e in enumerate(ch.etas):
        if e is None:
            continue
        old = published[k]
        relaxed = (k == nxt and fresh_next) or k in arriving
        if not material(old, e, t, pub_s[k], relaxed, cfg):
            continue
        lo, hi = cfg.spread.bounds(t, e)
        emit(
            EventType.ETA_CHANGED,
            k,
            eta=iso(e),
            eta_earliest=iso(lo),
            eta_latest=iso(hi),
            previous=None if old is None else iso(old),
            distance_m=round(ch.dists[k] or 0.0, 1),
            straight_line=plan.straight_line,
        )
        if pub is None or pub_t is None:
            pub, pub_t = list(published), list(pub_s)
        pub[k], pub_t[k] = e, t
    for k in arriving:
        e = ch.etas[k]
        assert e is not None
        emit(EventType.ARRIVING, k, eta=iso(e))
        stops = with_stop(stops, k, replace(stops[k], announced=True))
    if pub is not None and pub_t is not None:
        state = replace(state, published=tuple(pub), published_s=tuple(pub_t))
    if stops is not state.stops:
        state = replace(state, stops=stops)
    return state, progress_of(plan, state, t, pace, ch, cfg)
