"""The per-route state machine: one fix in, new state, events and ETAs out.

`plan(route)` does the expensive work once per route (projection, path in metres, where
each stop lies along it). `step` then costs tens of microseconds per fix: locate the fix
near the last progress, watch the off-route and geofence rules, learn the speed along the
route and chain the ETAs of the remaining stops. Everything is computed from the fix's
own time, never the server clock, so replaying a recorded drive reproduces exactly the
ETAs and events it produced live. The state is plain data that round-trips through JSON,
so any server instance can take the next fix of a route.

What the ETAs learn on the way: the recent speed (for the next minutes), the pace
relative to the plan (for the rest of the route, as `eta.Trust` weighs it against the
plan's own standing), and how long visits take against their planned service. A pending
stop the vehicle has left well behind without a visit is deferred: the stops after it
get their ETAs from where the vehicle is, and the deferred stop comes after the last one
(the driver finishes the sequence, then goes back), announced once as stop.deferred.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, NamedTuple

import shapely

from tracker.core import motion
from tracker.core.geo import LocalProjection
from tracker.core.model import Event, EventType, Fix, JsonDict, Route, Stop, StopStatus
from tracker.core.route.eta import Chain, Pace, PathIndex, Profile, SpeedEstimate, Trust, chain

_EXPLICIT = frozenset({StopStatus.COMPLETED, StopStatus.FAILED, StopStatus.SKIPPED})
_EVENT_FOR = {
    StopStatus.COMPLETED: EventType.COMPLETED,
    StopStatus.FAILED: EventType.FAILED,
    StopStatus.SKIPPED: EventType.SKIPPED,
}
STATE_VERSION = 1
# A pending stop passed without a visit: deferred to the end of the ETA chain.
DEFERRED = EventType.DEFERRED


@dataclass(frozen=True, slots=True)
class EtaConfig:
    """Thresholds for progress, motion and ETA publication (one config for every route)."""

    planned_speed_mps: float = 30.0 / 3.6  # used when the route's stops carry no planned times
    # Recent speed (the last couple of minutes) holds for the next minutes of driving, its
    # weight fading over `near_s` seconds: the queue, the lights, the street it is in now.
    speed_prior_s: float = 60.0  # the long-run speed counts as this many seconds of driving
    speed_tau_s: float = 120.0  # observed speed fades with this time constant
    near_s: float = 120.0
    # Beyond that, the long-run pace: the plan's, corrected by the drive so far as a normal
    # model of relative pace says (eta.Trust). Standard deviations, relative to the pace:
    schedule_error: float = 0.15  # a route's own planned times, overall (a router's total)
    default_error: float = 0.3  # the default speed as a guess of a route's overall pace
    road_spread: float = 0.4  # between stretches of road (city streets vs arterials)
    traffic_spread: float = 0.3  # between stretches, from traffic no plan foresees
    stretch_s: float = 300.0  # how long a stretch of one kind lasts (planned seconds)
    trend_tau_s: float = 3600.0  # the drive's record fades with this time constant
    # Time at stops: the planned service, corrected by the visits so far (actual time from
    # arrival to departure against planned) with the plan worth this many planned seconds.
    service_prior_s: float = 180.0
    pass_m: float = 200.0  # a pending stop this far behind the progress, unvisited, is deferred
    min_speed_mps: float = 1.0
    max_speed_mps: float = 40.0
    reach_mps: float = 50.0  # fastest plausible progress between fixes (search window)
    search_back_m: float = 50.0
    search_ahead_m: float = 300.0
    jitter_m: float = 15.0  # a step back along the path shorter than this is GPS noise
    still_mps: float = 0.5  # a reported speed below this means standing still
    first_fix_ahead_cost: float = 0.02  # first fix: prefer the start, but find a mid-route start
    off_route_m: float = 50.0
    off_route_fixes: int = 3
    back_on_route_fixes: int = 2
    max_accuracy_m: float = 50.0  # a fix's accuracy widens geofences by at most this
    arrive_speed_mps: float = 2.0
    dwell_s: float = 30.0
    stay_radius_m: float = 20.0
    stray_dwell_s: float = 120.0  # staying this long at a pending stop the path is not at
    depart_margin_m: float = 10.0
    depart_fixes: int = 2
    eta_change_s: float = 30.0
    eta_change_frac: float = 0.05
    arriving_s: float = 300.0
    max_gap_s: float = 300.0  # longer silences teach the speed estimate nothing
    detour_factor: float = 1.3  # road metres per straight-line metre

    def __post_init__(self) -> None:
        positive = (
            "planned_speed_mps",
            "speed_tau_s",
            "trend_tau_s",
            "stretch_s",
            "min_speed_mps",
            "detour_factor",
        )
        for name in positive:
            if not getattr(self, name) > 0.0:
                raise ValueError(f"{name} must be positive")
        non_negative = (
            "speed_prior_s",
            "near_s",
            "schedule_error",
            "default_error",
            "road_spread",
            "traffic_spread",
            "service_prior_s",
            "pass_m",
        )
        for name in non_negative:
            if not getattr(self, name) >= 0.0:
                raise ValueError(f"{name} must not be negative")
        if self.max_speed_mps < self.min_speed_mps:
            raise ValueError("max_speed_mps must not be below min_speed_mps")
        if min(self.off_route_fixes, self.back_on_route_fixes, self.depart_fixes) < 1:
            raise ValueError("fix counts must be at least 1")


@dataclass(frozen=True, slots=True)
class StopEta:
    """A stop's status and expected arrival (None once done) with the distance to go."""

    stop_id: int
    seq: int
    status: str
    eta: datetime | None
    distance_m: float | None


class _Ledger(NamedTuple):
    """The raw material of a Progress's StopEta list (epoch seconds, seq order)."""

    ids: tuple[int, ...]
    seqs: tuple[int, ...]
    position: dict[int, int]
    stops: tuple[StopState, ...]
    etas: list[float | None]
    dists: list[float | None]

    def all(self) -> tuple[StopEta, ...]:
        arrived = StopStatus.ARRIVED
        out = []
        # One tight pass: this runs for every published update of a long route.
        for sid, seq, st, e, d in zip(
            self.ids, self.seqs, self.stops, self.etas, self.dists, strict=True
        ):
            if e is not None:
                out.append(StopEta(sid, seq, st.status, _utc(e), d))
            elif st.status == arrived and st.arrived_s is not None:
                out.append(StopEta(sid, seq, st.status, _utc(st.arrived_s), 0.0))
            else:
                out.append(StopEta(sid, seq, st.status, None, None))
        return tuple(out)

    def one(self, k: int) -> StopEta:
        st = self.stops[k]
        e = self.etas[k]
        if e is not None:
            return StopEta(self.ids[k], self.seqs[k], st.status, _utc(e), self.dists[k])
        if st.status == StopStatus.ARRIVED and st.arrived_s is not None:
            return StopEta(self.ids[k], self.seqs[k], st.status, _utc(st.arrived_s), 0.0)
        return StopEta(self.ids[k], self.seqs[k], st.status, None, None)


class Progress:
    """Where a route stands as of one fix: the update to publish.

    `etas` holds one StopEta per stop in sequence order: for a pending stop its ETA and
    the distance to drive, for a stop being served its arrival time, for a done stop
    None. The list is built on first access (a hundred datetimes cost more than the ETA
    update itself); `eta_for` builds just one stop's, e.g. for a customer's page.
    """

    __slots__ = (
        "_built",
        "_ledger",
        "next_stop_id",
        "off_route",
        "progress_m",
        "remaining_m",
        "speed_mps",
        "straight_line",
        "time",
    )

    def __init__(
        self,
        time: datetime,
        progress_m: float,
        remaining_m: float,
        off_route: bool,
        straight_line: bool,
        speed_mps: float,
        next_stop_id: int | None,
        etas: tuple[StopEta, ...] | _Ledger,
    ) -> None:
        self.time = time
        self.progress_m = progress_m
        self.remaining_m = remaining_m
        self.off_route = off_route
        self.straight_line = straight_line
        self.speed_mps = speed_mps
        self.next_stop_id = next_stop_id
        self._built: tuple[StopEta, ...] | None = None
        self._ledger: _Ledger | None = None
        if isinstance(etas, _Ledger):
            self._ledger = etas
        else:
            self._built = tuple(etas)

    @property
    def etas(self) -> tuple[StopEta, ...]:
        """Every stop's status and ETA, in sequence order."""
        if self._built is None:
            assert self._ledger is not None
            self._built = self._ledger.all()
        return self._built

    def eta_for(self, stop_id: int) -> StopEta | None:
        """One stop's entry (None for a stop not on the route), without building the rest."""
        if self._ledger is None:
            return next((e for e in self.etas if e.stop_id == stop_id), None)
        k = self._ledger.position.get(stop_id)
        return None if k is None else self._ledger.one(k)

    def to_json(self) -> JsonDict:
        """JSON-ready dict: times as ISO-8601 strings, distances in metres."""
        return {
            "time": self.time.isoformat(),
            "progress_m": round(self.progress_m, 1),
            "remaining_m": round(self.remaining_m, 1),
            "off_route": self.off_route,
            "straight_line": self.straight_line,
            "speed_mps": round(self.speed_mps, 2),
            "next_stop_id": self.next_stop_id,
            "etas": [
                {
                    "stop_id": e.stop_id,
                    "seq": e.seq,
                    "status": e.status,
                    "eta": None if e.eta is None else e.eta.isoformat(),
                    "distance_m": None if e.distance_m is None else round(e.distance_m, 1),
                }
                for e in self.etas
            ],
        }

    def _key(self) -> tuple[object, ...]:
        return (
            self.time,
            self.progress_m,
            self.remaining_m,
            self.off_route,
            self.straight_line,
            self.speed_mps,
            self.next_stop_id,
            self.etas,
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Progress) and self._key() == other._key()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"Progress(time={self.time.isoformat()}, progress_m={self.progress_m:.1f}, "
            f"remaining_m={self.remaining_m:.1f}, off_route={self.off_route}, "
            f"straight_line={self.straight_line}, speed_mps={self.speed_mps:.2f}, "
            f"next_stop_id={self.next_stop_id}, etas=<{len(self.etas)} stops>)"
        )


def _utc(epoch_s: float, _at: Any = datetime.fromtimestamp) -> datetime:
    return _at(epoch_s, UTC)  # type: ignore[no-any-return]


class RoutePlan:
    """Everything about a route that does not change between fixes, computed once."""

    __slots__ = (
        "_trust",
        "along_m",
        "index",
        "max_radius_m",
        "max_reach_m",
        "opens_s",
        "planned_average_mps",
        "planned_m",
        "planned_speed_mps",
        "position",
        "profile",
        "projection",
        "radius_m",
        "reach_m",
        "route",
        "seqs",
        "service_s",
        "stop_ids",
        "straight_line",
        "xy",
    )

    def __init__(self, route: Route) -> None:
        if not route.stops:
            raise ValueError("a route needs at least one stop")
        if len(route.path) < 2:
            raise ValueError("a route needs a path of at least two points")
        stops = sorted(route.stops, key=lambda s: s.seq)
        ids = [s.id for s in stops]
        if len(set(ids)) != len(ids):
            raise ValueError("stop ids must be unique within a route")
        self.route = route
        self.projection = LocalProjection.around(list(route.path) + [(s.lat, s.lon) for s in stops])
        self.index = PathIndex(self.projection.line(route.path))
        self.xy = tuple(self.projection.many_to_xy([(s.lat, s.lon) for s in stops]))
        self.along_m = tuple(self.index.locate_in_order(self.xy, tolerance_m=25.0))
        self.radius_m = tuple(s.radius_m for s in stops)
        # A stop set back from the path (a yard, a depot) is reached by leaving the path:
        # within this distance of the stop a vehicle is on its way in or out, not astray.
        offsets = shapely.distance(self.index.line, shapely.points(list(self.xy)))
        self.reach_m = tuple(max(r, float(d)) for r, d in zip(self.radius_m, offsets, strict=True))
        self.max_reach_m = max(self.reach_m)
        self.stop_ids = tuple(ids)
        self.seqs = tuple(s.seq for s in stops)
        self.max_radius_m = max(self.radius_m)
        self.service_s = tuple(max(0.0, s.service_s) for s in stops)
        self.opens_s = tuple(
            s.window_start.timestamp() if s.window_start is not None else None for s in stops
        )
        self.position = {sid: k for k, sid in enumerate(ids)}
        self.straight_line = route.straight_line
        self.planned_speed_mps, self.planned_average_mps = self._planned_speeds(stops)
        self.profile = Profile(self._knots(stops))
        self.planned_m = tuple(self.profile.planned_m(a) for a in self.along_m)
        self._trust: tuple[EtaConfig, Trust] | None = None

    def _planned_speeds(self, stops: list[Stop]) -> tuple[float | None, float | None]:
        """The speeds the plan assumed, from the last stop with a planned arrival: driving
        (service times taken out) and average (service included), both m/s along the path."""
        start = self.route.planned_start.timestamp()
        for k in range(len(stops) - 1, -1, -1):
            planned = stops[k].planned_arrival
            if planned is None:
                continue
            total = planned.timestamp() - start
            driving = total - sum(self.service_s[:k])
            if driving > 0.0 and self.along_m[k] > 0.0:
                return self.along_m[k] / driving, self.along_m[k] / total
            return None, None
        return None, None

    def _knots(self, stops: list[Stop]) -> list[tuple[float, float]]:
        """(metres along, planned driving seconds) at each stop with a planned arrival.

        A planned arrival at the opening of the stop's window may include waiting for it,
        which is no driving: such a stop does not shape the profile.
        """
        if self.planned_speed_mps is None:
            return []
        start = self.route.planned_start.timestamp()
        knots = []
        for k, stop in enumerate(stops):
            planned = stop.planned_arrival
            if planned is None:
                continue
            opens = stop.window_start
            if opens is not None and planned <= opens:
                continue
            knots.append((self.along_m[k], planned.timestamp() - start - sum(self.service_s[:k])))
        return knots

    def prior_speed(self, cfg: EtaConfig) -> float:
        """The planned driving speed along this route's path (m/s)."""
        if self.planned_speed_mps is not None:
            return self.planned_speed_mps
        # A straight-line path is shorter than the roads, so progress along it is slower.
        v = cfg.planned_speed_mps
        return v / cfg.detour_factor if self.straight_line else v

    def trust(self, cfg: EtaConfig) -> Trust:
        """How far this route's plan is believed: a schedule knows the roads, a default
        speed does not (cached for the last config, which is the one in use)."""
        cached = self._trust
        if cached is not None and cached[0] is cfg:
            return cached[1]
        scheduled = self.planned_speed_mps is not None
        trust = Trust.of(
            cfg.schedule_error if scheduled else cfg.default_error,
            cfg.road_spread,
            cfg.traffic_spread,
            cfg.stretch_s,
            knows_roads=scheduled,
        )
        self._trust = (cfg, trust)
        return trust

    def average_speed(self, cfg: EtaConfig) -> float:
        """The route's average planned speed, stops included (m/s): what a naive ETA uses.

        Path length over planned duration: the last planned arrival when the stops carry
        times, else driving the path at the prior speed plus every stop's service time, so
        a naive ETA sees the same plan (speed and service) as ours.
        """
        if self.planned_average_mps is not None:
            return self.planned_average_mps
        length = self.along_m[-1]
        if length <= 0.0:
            return self.prior_speed(cfg)
        return length / (length / self.prior_speed(cfg) + sum(self.service_s[:-1]))


def plan(route: Route) -> RoutePlan:
    """Build the per-route plan; cache it with the route, it is reused for every fix."""
    return RoutePlan(route)


@dataclass(frozen=True, slots=True)
class StopState:
    """What has happened at one stop; times are epoch seconds."""

    status: str = StopStatus.PENDING
    arrived_s: float | None = None
    departed_s: float | None = None
    done_s: float | None = None
    reason: str | None = None
    announced: bool = False  # stop.arriving has been sent


@dataclass(frozen=True, slots=True)
class RouteState:
    """A route's live state between fixes; plain data, round-trips through JSON.

    Positions (`x`, `y`, the stay anchor) are metres in the plan's projection, so a state
    belongs to the plan it was started from: re-plan an edited route with `start`.
    """

    stops: tuple[StopState, ...]
    published: tuple[float | None, ...]  # last published ETA per stop, epoch seconds
    progress_m: float = 0.0
    last_s: float | None = None
    x: float | None = None
    y: float | None = None
    speed: SpeedEstimate = field(default_factory=SpeedEstimate)
    # The drive's record in planned metres per second: its pace relative to the plan.
    trend: SpeedEstimate = field(default_factory=SpeedEstimate)
    stay: motion.Stay | None = None
    at_stop: int | None = None  # index (in seq order) of the stop the vehicle is at
    outside_fixes: int = 0
    off_route: bool = False
    flip_fixes: int = 0  # consecutive fixes pointing to the other side of on/off route
    rejoin_m: float = 0.0
    offset_m: float = 0.0
    completed: bool = False
    deferred: tuple[int, ...] = ()  # pending stops passed without a visit, in seq order
    served_s: float = 0.0  # seconds from arrival to departure at the stops visited so far
    service_planned_s: float = 0.0  # the planned service of those stops

    @property
    def last_fix_time(self) -> datetime | None:
        """Time of the newest fix applied."""
        return None if self.last_s is None else datetime.fromtimestamp(self.last_s, UTC)

    def to_json(self) -> JsonDict:
        """Plain JSON-ready dict (for the state table / Redis hash)."""
        return {
            "v": STATE_VERSION,
            "stops": [
                [s.status, s.arrived_s, s.departed_s, s.done_s, s.reason, s.announced]
                for s in self.stops
            ],
            "published": list(self.published),
            "progress_m": self.progress_m,
            "last_s": self.last_s,
            "xy": None if self.x is None else [self.x, self.y],
            "speed": [self.speed.distance_m, self.speed.time_s],
            "trend": [self.trend.distance_m, self.trend.time_s],
            "stay": None if self.stay is None else [self.stay.x, self.stay.y, self.stay.since],
            "at_stop": self.at_stop,
            "outside_fixes": self.outside_fixes,
            "off_route": self.off_route,
            "flip_fixes": self.flip_fixes,
            "rejoin_m": self.rejoin_m,
            "offset_m": self.offset_m,
            "completed": self.completed,
            "deferred": list(self.deferred),
            "service": [self.served_s, self.service_planned_s],
        }

    @classmethod
    def from_json(cls, data: JsonDict) -> RouteState:
        """The inverse of `to_json`; raises ValueError on a foreign or damaged dict."""
        if not isinstance(data, dict) or data.get("v") != STATE_VERSION:
            raise ValueError(f"route state must be a version {STATE_VERSION} dict")
        try:
            stops = tuple(
                StopState(str(s[0]), _opt(s[1]), _opt(s[2]), _opt(s[3]), s[4], bool(s[5]))
                for s in data["stops"]
            )
            published = tuple(_opt(p) for p in data["published"])
            if len(published) != len(stops):
                raise ValueError("published ETAs and stops differ in length")
            xy = data["xy"]
            stay = data["stay"]
            at_stop = data["at_stop"]
            return cls(
                stops=stops,
                published=published,
                progress_m=float(data["progress_m"]),
                last_s=_opt(data["last_s"]),
                x=None if xy is None else float(xy[0]),
                y=None if xy is None else float(xy[1]),
                speed=SpeedEstimate(float(data["speed"][0]), float(data["speed"][1])),
                # States saved before the long-run estimate existed start it afresh.
                trend=SpeedEstimate(*(float(v) for v in data.get("trend", (0.0, 0.0)))),
                stay=None
                if stay is None
                else motion.Stay(float(stay[0]), float(stay[1]), float(stay[2])),
                at_stop=None if at_stop is None else int(at_stop),
                outside_fixes=int(data["outside_fixes"]),
                off_route=bool(data["off_route"]),
                flip_fixes=int(data["flip_fixes"]),
                rejoin_m=float(data["rejoin_m"]),
                offset_m=float(data["offset_m"]),
                completed=bool(data["completed"]),
                # States saved before deferral and service learning existed lack these.
                deferred=tuple(int(k) for k in data.get("deferred", ())),
                served_s=float(data.get("service", (0.0, 0.0))[0]),
                service_planned_s=float(data.get("service", (0.0, 0.0))[1]),
            )
        except (KeyError, IndexError, TypeError) as exc:
            raise ValueError(f"route state is damaged: {exc!r}") from exc


def _opt(value: Any) -> float | None:
    return None if value is None else float(value)


def start(plan: RoutePlan) -> RouteState:
    """The state of a route before its first fix; stop statuses come from the route."""
    stops = tuple(StopState(status=s.status) for s in sorted(plan.route.stops, key=lambda s: s.seq))
    return RouteState(stops=stops, published=(None,) * len(stops))


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat()


class _Emitter:
    """Collects events of one fix or command, all stamped with the same time."""

    __slots__ = ("events", "plan", "time")

    def __init__(self, plan: RoutePlan, time: datetime) -> None:
        self.plan = plan
        self.time = time
        self.events: list[Event] = []

    def __call__(self, type_: str, stop: int | None = None, **data: Any) -> None:
        route = self.plan.route
        stop_id = None if stop is None else self.plan.stop_ids[stop]
        self.events.append(Event(type_, self.time, route.device_id, route.id, stop_id, data))


def _all_done(stops: tuple[StopState, ...] | list[StopState]) -> bool:
    return all(s.status in StopStatus.DONE for s in stops)


def _next_pending(stops: tuple[StopState, ...], deferred: tuple[int, ...] = ()) -> int | None:
    """The first stop in sequence still to be visited, deferred ones last."""
    pending = StopStatus.PENDING
    if not deferred:
        for k, st in enumerate(stops):
            if st.status == pending:
                return k
        return None
    for k, st in enumerate(stops):
        if st.status == pending and k not in deferred:
            return k
    return deferred[0]


def _service_scale(state: RouteState, cfg: EtaConfig) -> float:
    """Time at a stop per planned second of service, as the visits so far suggest."""
    prior = cfg.service_prior_s
    if state.service_planned_s <= 0.0 or math.isinf(prior):
        return 1.0
    return (state.served_s + prior) / (state.service_planned_s + prior)


def _chain_start(
    plan: RoutePlan, state: RouteState, t: float, cfg: EtaConfig
) -> tuple[float, float, float]:
    """Where the rest of the drive starts: metres along the path, when (epoch s), and how
    many metres must be driven first to get there."""
    at = state.at_stop
    if at is not None:
        st = state.stops[at]
        if st.status == StopStatus.ARRIVED and st.arrived_s is not None:
            # Still being served: the drive resumes when its service time is up.
            service = plan.service_s[at] * _service_scale(state, cfg)
            return plan.along_m[at], max(t, st.arrived_s + service), 0.0
        return plan.along_m[at], t, 0.0
    if plan.straight_line and state.x is not None and state.y is not None:
        # The stops joined by straight lines are no road to measure progress on: the
        # way to the next stop is its own straight-line distance, like every later leg.
        k = _next_pending(state.stops, state.deferred)
        if k is not None:
            sx, sy = plan.xy[k]
            return plan.along_m[k], t, math.hypot(state.x - sx, state.y - sy)
    if state.off_route:
        # Off the path: first back to it (crow-flies, times the detour factor).
        return state.rejoin_m, t, state.offset_m * cfg.detour_factor
    return state.progress_m, t, 0.0


def _chain(plan: RoutePlan, state: RouteState, t: float, pace: Pace, cfg: EtaConfig) -> Chain:
    start_m, start_s, lead_m = _chain_start(plan, state, t, cfg)
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
        _service_scale(state, cfg),
    )


def _speed(plan: RoutePlan, speed: SpeedEstimate, cfg: EtaConfig) -> float:
    return speed.speed(
        plan.prior_speed(cfg), cfg.speed_prior_s, cfg.min_speed_mps, cfg.max_speed_mps
    )


def _pace(plan: RoutePlan, state: RouteState, cfg: EtaConfig) -> Pace:
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


def _progress(plan: RoutePlan, state: RouteState, t: float, pace: Pace, ch: Chain) -> Progress:
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
        etas=_Ledger(ids, plan.seqs, plan.position, stops, etas, dists),
    )


def step(
    plan: RoutePlan, state: RouteState, fix: Fix, cfg: EtaConfig
) -> tuple[RouteState, list[Event], Progress | None]:
    """Apply one fix. A fix not newer than the last one changes nothing: (state, [], None)."""
    t = fix.time.timestamp()
    last_s = state.last_s
    if last_s is not None and t <= last_s:
        return state, [], None
    emit = _Emitter(plan, fix.time)
    x, y = plan.projection.to_xy(fix.lat, fix.lon)
    slack = motion.slack(fix.accuracy, cfg.max_accuracy_m)
    dt = 0.0 if last_s is None else t - last_s
    if fix.speed is not None and fix.speed >= 0.0:
        moving: float | None = fix.speed
    elif state.x is not None and state.y is not None and last_s is not None:
        moving = motion.speed_between(state.x, state.y, last_s, x, y, t)
    else:
        moving = None

    # 1. Where along the path: near the last progress, or anywhere ahead when lost.
    index = plan.index
    p = state.progress_m
    if last_s is None:
        loc = index.locate(x, y, (0.0, index.length_m), (0.0, 0.0), 1.0, cfg.first_fix_ahead_cost)
    elif state.off_route:
        lo = p - cfg.search_back_m
        loc = index.locate(x, y, (lo, index.length_m), (p, p), 1.0, cfg.first_fix_ahead_cost)
    else:
        reach = cfg.search_ahead_m + cfg.reach_mps * dt
        fast = max(_speed(plan, state.speed, cfg), moving or 0.0)
        hi = p + 2.0 * fast * dt + cfg.jitter_m + slack
        # Candidates behind the progress already made cost extra, so where the path
        # doubles back on itself the pass ahead wins a tie.
        lo = p - cfg.jitter_m - slack - cfg.search_back_m
        loc = index.locate(x, y, (lo, p + reach), (p, hi))
    # A straight-line route is no road: being far from it is no detour.
    far = not plan.straight_line and loc.offset_m - slack > cfg.off_route_m

    # 2. Progress moves with a trustworthy location: forward while moving, back only
    # beyond the noise; a vehicle standing still stays put, however its fixes scatter.
    stay = motion.Stay(x, y, t) if state.stay is None else state.stay
    stay = stay.update(x, y, t, cfg.stay_radius_m)
    stopped = fix.speed is not None and 0.0 <= fix.speed < cfg.still_mps
    still = stopped or stay.duration(t) >= cfg.dwell_s
    new_p = p
    if not far:
        moved = loc.along_m - p
        # Accuracy is a 68 % radius; two of them cover the scatter of a standing phone.
        band = cfg.jitter_m + 2.0 * slack
        if moved < -band or moved > (band if still else 0.0):
            new_p = loc.along_m

    # 3. Geofences: departure from the stop being served, else arrival at a pending one.
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
            stops = _depart(stops, at, t, emit)
            at, outside_fixes = None, 0
    if at is None:
        k = _arrival(plan, stops, deferred, x, y, new_p, slack, moving, stay.duration(t), cfg)
        if k is not None:
            stops = _with(stops, k, replace(stops[k], status=StopStatus.ARRIVED, arrived_s=t))
            sx, sy = plan.xy[k]
            emit(EventType.ARRIVED, k, distance_m=round(math.hypot(x - sx, y - sy), 1))
            at, outside_fixes = k, 0
            if k in deferred:
                deferred = tuple(j for j in deferred if j != k)
    if not (far or plan.straight_line):
        # (Along stops joined by straight lines, progress is no road travelled: there is
        # nothing to pass a stop on.)
        deferred = _defer(plan, stops, deferred, x, y, new_p, at, cfg, emit)

    # 4. Off route after several far fixes in a row, back on after several near ones; a
    # vehicle at or by a stop (a yard, a depot set back from the road) is where it should be.
    astray = far and at is None and not _by_a_stop(plan, stops, x, y, new_p, slack, cfg)
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
        k = _next_pending(stops, deferred)
        end = index.length_m if k is None else max(p, plan.along_m[k]) + plan.max_radius_m
        lo = p - cfg.search_back_m
        back = index.locate(x, y, (lo, end), (p, p), 1.0, cfg.first_fix_ahead_cost)
        rejoin_m, offset_m = back.along_m, back.offset_m

    # 5. Learn the speed from progress on the path between stops (service time is planned),
    # and the pace relative to the plan from the same progress in planned metres.
    speed, trend = state.speed, state.trend
    if (
        last_s is not None
        and dt <= cfg.max_gap_s
        and not (far or state.off_route or off_route)
        and state.at_stop is None
        and at is None
    ):
        moved = new_p - p
        profile = plan.profile
        planned = moved if profile.flat else profile.planned_m(new_p) - profile.planned_m(p)
        if plan.straight_line and state.x is not None and state.y is not None:
            # Without a road to follow, progress is how much closer the next stop got.
            k = _next_pending(stops, deferred)
            if k is not None:
                sx, sy = plan.xy[k]
                moved = math.hypot(state.x - sx, state.y - sy) - math.hypot(x - sx, y - sy)
                planned = moved * profile.ratio(p)
        if trend.distance_m > 0.0 or moved > 0.0:
            # (Waiting before the drive gets going is a late start, not the route's pace.)
            speed = speed.learn(moved, dt, cfg.speed_tau_s)
            trend = trend.learn(planned, dt, cfg.trend_tau_s)

    completed = state.completed
    if not completed and at is None and _all_done(stops):
        completed = True
        emit(EventType.ROUTE_COMPLETED)

    new_state = RouteState(
        stops=stops,
        published=state.published,
        progress_m=new_p,
        last_s=t,
        x=x,
        y=y,
        speed=speed,
        trend=trend,
        stay=stay,
        at_stop=at,
        outside_fixes=outside_fixes,
        off_route=off_route,
        flip_fixes=flips,
        rejoin_m=rejoin_m,
        offset_m=offset_m,
        completed=completed,
        deferred=deferred,
        served_s=served_s,
        service_planned_s=service_planned_s,
    )

    # 6. ETAs, and events for the ones that moved enough to matter or are close now.
    pace = _pace(plan, new_state, cfg)
    ch = _chain(plan, new_state, t, pace, cfg)
    published = new_state.published
    if ch.moved:
        pub = list(published)
        for k in ch.moved:
            e = ch.etas[k]
            assert e is not None
            old = pub[k]
            emit(
                EventType.ETA_CHANGED,
                k,
                eta=_iso(e),
                previous=None if old is None else _iso(old),
                distance_m=round(ch.dists[k] or 0.0, 1),
                straight_line=plan.straight_line,
            )
            pub[k] = e
        published = tuple(pub)
    soon = t + cfg.arriving_s
    for k, e in enumerate(ch.etas):
        if e is None:
            continue
        if e > soon:
            if deferred:
                continue  # deferred stops come last, out of sequence
            break  # ETAs only grow along the chain
        if not stops[k].announced:
            emit(EventType.ARRIVING, k, eta=_iso(e))
            stops = _with(stops, k, replace(stops[k], announced=True))
    if published is not new_state.published or stops is not new_state.stops:
        new_state = replace(new_state, stops=stops, published=published)
    return new_state, emit.events, _progress(plan, new_state, t, pace, ch)


def _with(stops: tuple[StopState, ...], k: int, st: StopState) -> tuple[StopState, ...]:
    return (*stops[:k], st, *stops[k + 1 :])


def _depart(
    stops: tuple[StopState, ...], k: int, t: float, emit: _Emitter
) -> tuple[StopState, ...]:
    """Leaving the stop being served; an arrival not yet closed by hand completes it."""
    st = stops[k]
    arrived = st.arrived_s if st.arrived_s is not None else t
    emit(EventType.DEPARTED, k, dwell_s=round(t - arrived, 1))
    if st.status == StopStatus.ARRIVED:
        emit(EventType.COMPLETED, k, auto=True)
        return _with(stops, k, replace(st, status=StopStatus.COMPLETED, departed_s=t, done_s=t))
    return _with(stops, k, replace(st, departed_s=t))


def _defer(
    plan: RoutePlan,
    stops: tuple[StopState, ...],
    deferred: tuple[int, ...],
    x: float,
    y: float,
    along: float,
    at: int | None,
    cfg: EtaConfig,
    emit: _Emitter,
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
    k = _next_pending(stops, deferred)
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
        k = _next_pending(stops, deferred)
    return deferred


def _by_a_stop(
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


def _arrival(
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
    following = _next_pending(stops, deferred)
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
    emit = _Emitter(plan, time)
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
    if not completed and _all_done(stops):
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
    pace = _pace(plan, state, cfg)
    if state.last_s is None:
        t = max(plan.route.planned_start.timestamp(), time.timestamp())
    else:
        t = state.last_s
    return _progress(plan, state, t, pace, _chain(plan, state, t, pace, cfg))
