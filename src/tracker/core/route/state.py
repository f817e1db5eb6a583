"""A route's live state between fixes: plain data that round-trips through JSON."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tracker.core import motion
from tracker.core.model import JsonDict, StopStatus
from tracker.core.route.eta import SpeedEstimate
from tracker.core.route.plan import RoutePlan

STATE_VERSION = 1


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
    # When each stop's ETA was last published (epoch s); empty (states saved before, or
    # rebuilt on reassignment) means unknown: no hold on the next change.
    published_s: tuple[float | None, ...] = ()
    # Epoch seconds of the newest fix near the path (the first fix counts): off the path,
    # the vehicle cannot have got farther along it than it could drive since then.
    on_path_s: float | None = None

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
            "published_s": list(self.published_s),
            "on_path_s": self.on_path_s,
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
                published_s=tuple(_opt(p) for p in data.get("published_s", ())),
                on_path_s=_opt(data.get("on_path_s")),
            )
        except (KeyError, IndexError, TypeError) as exc:
            raise ValueError(f"route state is damaged: {exc!r}") from exc


def _opt(value: Any) -> float | None:
    return None if value is None else float(value)


def start(plan: RoutePlan) -> RouteState:
    """The state of a route before its first fix; stop statuses come from the route."""
    stops = tuple(StopState(status=s.status) for s in sorted(plan.route.stops, key=lambda s: s.seq))
    return RouteState(stops=stops, published=(None,) * len(stops))


def all_done(stops: tuple[StopState, ...] | list[StopState]) -> bool:
    """Every stop has an outcome."""
    return all(s.status in StopStatus.DONE for s in stops)


def next_pending(stops: tuple[StopState, ...], deferred: tuple[int, ...] = ()) -> int | None:
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


def with_stop(stops: tuple[StopState, ...], k: int, st: StopState) -> tuple[StopState, ...]:
    """The stop states with stop `k`'s replaced."""
    return (*stops[:k], st, *stops[k + 1 :])
