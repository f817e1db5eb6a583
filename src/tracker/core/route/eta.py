"""Route progress by linear referencing, a robust speed estimate, and the ETA chain.

The pure pieces the per-route state machine (`progress`) combines:

- `PathIndex` measures where a position lies along the planned path. It only looks near
  the progress already made and prices candidates that are implausibly far behind or
  ahead, so a loop, a U-turn or a path that passes itself cannot make progress jump to
  another pass over the same street.
- `SpeedEstimate` is the speed along the route averaged over a recent stretch of time (red
  lights and traffic included, time at delivery stops excluded), blended with the planned
  speed as a prior worth a fixed number of seconds of observation: thin data or a long
  wait pull the estimate toward the plan rather than to zero.
- `Trust` is the long-run pace relative to the plan's: the posterior of a small normal
  model in which the plan may have the route's overall pace wrong and the pace varies from
  stretch to stretch of road. It says how much the drive so far should move the pace for
  the rest of the route, and, for a schedule that knows the roads, how much of a delay the
  faster roads ahead make up.
- `Profile` is the plan's own timing along the path when several stops carry planned
  arrivals (a slow city leg, a fast arterial leg), as planned metres.
- `Pace` says how the rest of the drive goes: the recent speed at first, handing over
  smoothly to the long-run pace, since the street a vehicle is in now says little about
  the roads twenty minutes ahead.
- `chain` turns a start point, a pace and the remaining stops into arrival times: driving
  plus the service times of the stops before, never earlier than a stop's window opens;
  stops passed without a visit come last.
"""

from __future__ import annotations

import itertools
import math
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import shapely
from shapely import LineString


@dataclass(frozen=True, slots=True)
class Location:
    """Where a position lies relative to the path: metres along it and metres off it."""

    along_m: float
    offset_m: float


class PathIndex:
    """A planned path in metres, cut into segments for windowed linear referencing.

    The segments are plain coordinate arrays, measured with numpy: one geometry object per
    segment would cost a GEOS call each and, kept for every route a server holds, make
    each of Python's full garbage collections walk hundreds of thousands of them.
    """

    __slots__ = (
        "_dx",
        "_dy",
        "_len",
        "_len2",
        "_starts",
        "_starts_list",
        "_x0",
        "_y0",
        "length_m",
        "line",
    )

    def __init__(self, line: LineString) -> None:
        xy = np.asarray(line.coords, dtype=float)[:, :2]
        d = np.diff(xy, axis=0)
        keep = (d[:, 0] != 0.0) | (d[:, 1] != 0.0)
        if not keep.any():
            raise ValueError("a path needs at least one segment of non-zero length")
        self.line = line
        self._x0: Any = np.ascontiguousarray(xy[:-1][keep, 0])
        self._y0: Any = np.ascontiguousarray(xy[:-1][keep, 1])
        self._dx: Any = np.ascontiguousarray(d[keep, 0])
        self._dy: Any = np.ascontiguousarray(d[keep, 1])
        self._len2: Any = self._dx * self._dx + self._dy * self._dy
        self._len: Any = np.sqrt(self._len2)
        self._starts: Any = self._len.cumsum() - self._len
        self._starts_list: list[float] = self._starts.tolist()
        self.length_m = float(self._len.sum())

    def _window(self, lo_m: float, hi_m: float) -> tuple[int, int]:
        starts = self._starts_list
        i0 = max(0, bisect_right(starts, lo_m) - 1)
        i1 = max(i0 + 1, bisect_right(starts, hi_m))
        return i0, min(i1, len(starts))

    def _measure(self, i0: int, i1: int, x: float, y: float) -> tuple[Any, Any]:
        """Distance from (x, y) to each segment in [i0, i1) and the metres along the path of
        the nearest point on it."""
        x0, y0 = self._x0[i0:i1], self._y0[i0:i1]
        dx, dy = self._dx[i0:i1], self._dy[i0:i1]
        t = (((x - x0) * dx + (y - y0) * dy) / self._len2[i0:i1]).clip(0.0, 1.0)
        dist = np.hypot(x - (x0 + t * dx), y - (y0 + t * dy))
        return dist, self._starts[i0:i1] + t * self._len[i0:i1]

    def _distance_at(self, m: float, x: float, y: float) -> float:
        end = shapely.line_interpolate_point(self.line, m)
        return math.hypot(x - end.x, y - end.y)

    def locate(
        self,
        x: float,
        y: float,
        window: tuple[float, float],
        expect: tuple[float, float],
        behind_cost: float = 1.0,
        ahead_cost: float = 0.5,
        bound: bool = False,
    ) -> Location:
        """The most plausible location of (x, y) on the path within `window` (metres along).

        Each candidate costs its distance from the path plus `behind_cost` per metre it lies
        before `expect[0]` and `ahead_cost` per metre past `expect[1]`, so where the path
        overlaps itself the pass the vehicle is actually on wins. The window is whole
        segments; with `bound`, no candidate lies beyond its end either.
        """
        i0, i1 = self._window(window[0], window[1])
        dist, along = self._measure(i0, i1, x, y)
        if bound:
            beyond = along > window[1]
            if beyond.any():
                dist[beyond] = self._distance_at(window[1], x, y)
                along = along.clip(max=window[1])
        cost = (
            dist
            + behind_cost * (expect[0] - along).clip(min=0.0)
            + ahead_cost * (along - expect[1]).clip(min=0.0)
        )
        k = int(cost.argmin())
        return Location(float(along[k]), float(dist[k]))

    def locate_in_order(
        self, points: Sequence[tuple[float, float]], tolerance_m: float
    ) -> list[float]:
        """Metres along the path of points visited in order (the stops).

        Each point takes the earliest location at or after the previous point's whose
        distance from the path is within `tolerance_m` of its nearest, so a stop on a street
        the path passes twice is placed on the pass that comes next.
        """
        out: list[float] = []
        prev = 0.0
        for x, y in points:
            i0, i1 = self._window(prev, self.length_m)
            dist, along = self._measure(i0, i1, x, y)
            behind = along < prev
            if behind.any():
                # The first segment may reach back before `prev`: measure from there on.
                dist[behind] = self._distance_at(prev, x, y)
                along = along.clip(min=prev)
            near = dist <= float(dist.min()) + tolerance_m
            prev = float(along[near].min())
            out.append(prev)
        return out


@dataclass(frozen=True, slots=True)
class SpeedEstimate:
    """Exponentially weighted metres and seconds travelled along the route.

    The metres may be planned metres (see `Profile`): then the estimate is the pace
    relative to the plan's, which is what the long-run learning needs.
    """

    distance_m: float = 0.0
    time_s: float = 0.0

    def learn(self, moved_m: float, dt_s: float, tau_s: float) -> SpeedEstimate:
        """Add `moved_m` metres of progress made in `dt_s` seconds, older data fading."""
        if dt_s <= 0.0:
            return self
        keep = math.exp(-dt_s / tau_s)
        return SpeedEstimate(self.distance_m * keep + max(0.0, moved_m), self.time_s * keep + dt_s)

    def speed(self, prior_mps: float, prior_s: float, low: float, high: float) -> float:
        """Observed speed blended with the prior, held within [low, high] m/s.

        The prior counts as `prior_s` seconds of driving at `prior_mps`; an infinite
        weight means the prior alone.
        """
        if math.isinf(prior_s):
            return min(high, max(low, prior_mps))
        v = (self.distance_m + prior_mps * prior_s) / (self.time_s + prior_s)
        return min(high, max(low, v))


@dataclass(frozen=True, slots=True)
class Trust:
    """How far a plan's pace is believed, as seconds of observed driving it is worth.

    A normal model of the route's log pace relative to the plan's: an overall factor the
    plan may have wrong (relative standard deviation `error`), times variation from stretch to
    stretch of road, correlated over stretches of a few minutes and independent between
    them. Part of that variation is the road mix (city streets, arterials), part traffic
    no plan foresees. Two weights follow, in planned seconds of driving:

    - `fit_s` (traffic variance x stretch / error variance): how much observation it
      takes to move the overall pace halfway from the plan to what was observed;
    - `shape_s` (road-mix variance x stretch / error variance): for a plan that knows the
      roads (a router's schedule), how strongly its total is known to include slow and
      fast stretches it does not place along the path, so that time lost on a slow start
      is expected back on faster roads later. A default speed knows no roads: its
      `shape_s` is 0 and the road mix is noise like traffic.
    """

    fit_s: float
    shape_s: float = 0.0
    error: float = 0.0

    @classmethod
    def of(
        cls,
        error: float,
        road_spread: float,
        traffic_spread: float,
        stretch_s: float,
        knows_roads: bool,
    ) -> Trust:
        """The weights from relative standard deviations: of the plan's overall pace, of
        pace between stretches of road and of pace due to traffic."""
        if error <= 0.0:
            return cls(math.inf, math.inf if knows_roads else 0.0, 0.0)
        var = error * error
        road = road_spread * road_spread * stretch_s / var
        traffic = traffic_spread * traffic_spread * stretch_s / var
        if knows_roads:
            return cls(traffic, road, error)
        return cls(traffic + road, 0.0, error)

    def factor(self, observed_s: float, planned_s: float, remaining_s: float) -> float:
        """The rest of the route's pace relative to the plan's (1 = as planned).

        `observed_s` seconds were spent driving what the plan gives `planned_s` seconds,
        and `remaining_s` planned seconds of driving are left. This is the posterior of the
        model above: observation pulls the overall pace toward what was seen, and for a
        plan that knows the roads, the share of a deviation its road mix explains is made
        up on the rest of the route (all of it when the plan is believed exactly).

        The plan's times are taken as expected (mean) times. Travel times are skewed
        (a pace can double, not halve to nothing), so with the factor's remaining
        uncertainty lognormal, the time that minimises the absolute error, its median,
        lies below the mean by exp(-variance / 2): the factor returned is that median.
        """
        if math.isinf(self.fit_s):
            if math.isinf(self.shape_s) and remaining_s > 0.0:
                # A plan believed exactly: whatever happened, its total is kept.
                return (remaining_s + planned_s - observed_s) / remaining_s
            return 1.0
        median = math.exp(-0.5 * self.error * self.error * self.fit_s / (planned_s + self.fit_s))
        if planned_s <= 0.0:
            return median
        total = planned_s + remaining_s
        a = self.shape_s
        weight = planned_s * (1.0 - a / total) / (planned_s + a * remaining_s / total + self.fit_s)
        # Deviations are relative, so the model works on log pace: a drive three times
        # slower than planned counts as much as one three times faster, and no deviation
        # however large can turn the rest of the route into an impossible sprint.
        return median * math.exp(weight * math.log(max(observed_s, 1e-3) / planned_s))


class Profile:
    """The plan's timing along the path, in planned metres: metres weighted by how slow the
    plan expects each stretch relative to its average driving pace.

    With planned arrival times at several stops, each leg between them has its own planned
    pace (a router's schedule knows which legs are city streets); without, or with one,
    planned metres are just metres. Distances in planned metres times the average pace
    give planned seconds of driving.
    """

    __slots__ = ("_knots_e", "_knots_m", "_ratios", "flat")

    def __init__(self, knots: Sequence[tuple[float, float]]) -> None:
        """`knots`: (metres along, planned driving seconds) at stops with planned times, in
        order; inconsistent ones (not later than the one before) are ignored."""
        pts = [(0.0, 0.0)]
        for m, s in knots:
            if m > pts[-1][0] and s > pts[-1][1]:
                pts.append((m, s))
        self._knots_m: list[float] = [m for m, _ in pts]
        if len(pts) < 3:
            self.flat = True
            self._knots_e: list[float] = self._knots_m
            self._ratios: list[float] = [1.0] * len(pts)
            return
        mean_pace = pts[-1][1] / pts[-1][0]
        self.flat = False
        self._knots_e = [s / mean_pace for _, s in pts]
        self._ratios = [
            (s1 - s0) / (m1 - m0) / mean_pace for (m0, s0), (m1, s1) in itertools.pairwise(pts)
        ]
        self._ratios.append(1.0)  # beyond the last timed stop: the average

    def _leg(self, along_m: float) -> int:
        return max(0, bisect_right(self._knots_m, along_m) - 1)

    def planned_m(self, along_m: float) -> float:
        """Planned metres from the start of the path to `along_m` metres along it."""
        if self.flat:
            return along_m
        k = self._leg(along_m)
        return self._knots_e[k] + (along_m - self._knots_m[k]) * self._ratios[k]

    def ratio(self, along_m: float) -> float:
        """Planned metres per metre at `along_m` (above 1 where the plan expects slow going)."""
        return 1.0 if self.flat else self._ratios[self._leg(along_m)]


@dataclass(frozen=True, slots=True)
class Pace:
    """How fast the rest of the drive goes: `near_mps` (the recent speed) now, handing over
    to `far_mps` per planned metre (the long-run pace) over about `near_s` seconds of
    driving: recent conditions (a queue, the street the vehicle is in) persist a while and
    say less and less about the roads further ahead. `local` is planned metres per metre
    where the vehicle is, so the hand-over is to the far pace of this stretch."""

    near_mps: float
    far_mps: float
    near_s: float
    local: float = 1.0

    def drive_s(self, distance_m: float, planned_m: float | None = None) -> float:
        """Seconds of driving to cover `distance_m` metres (`planned_m` planned metres)."""
        planned = distance_m if planned_m is None else planned_m
        far = planned / self.far_mps
        reach = self.near_mps * self.near_s
        if reach <= 0.0:
            return far
        excess = (1.0 / self.near_mps - self.local / self.far_mps) * reach
        return far + excess * -math.expm1(-distance_m / reach)


class Chain(NamedTuple):
    """ETAs (epoch seconds) and distances per stop, and which ETAs moved enough to publish."""

    etas: list[float | None]
    dists: list[float | None]
    moved: list[int]


def chain(
    start_m: float,
    start_s: float,
    pace: Pace,
    along_m: Sequence[float],
    service_s: Sequence[float],
    opens_s: Sequence[float | None],
    active: Sequence[bool],
    published: Sequence[float | None],
    floor_s: float = 30.0,
    frac: float = 0.05,
    lead_m: float = 0.0,
    planned_m: Sequence[float] | None = None,
    start_planned_m: float | None = None,
    later: Sequence[bool] | None = None,
    service_scale: float = 1.0,
) -> Chain:
    """Arrival times and travel distances for the active stops, in order.

    Travel starts at `start_m` along the path at `start_s` (epoch seconds), after
    `lead_m` metres of driving to get there (back from a detour, say). Each active
    stop is reached after driving its cumulative distance at `pace`, plus the service
    times of the active stops before it and any wait for a window to open; a stop behind
    the start is reached by going back along the path. Inactive stops (done, or the one
    being served) get None. `planned_m` (with `start_planned_m`) places the stops in
    planned metres when the plan's pace differs between legs.

    Stops flagged in `later` (deferred: passed without a visit) are visited after all the
    others, in sequence order, driving back along the path to each. Service times are
    scaled by `service_scale` (how long visits actually take per planned second).

    `moved` lists the stops whose ETA differs from `published` by more than `floor_s`
    seconds and more than `frac` of the time still to go, or that had none published:
    the changes that matter to a customer. It is worked out in the same pass because this
    loop runs for every stop on every fix.
    """
    n = len(along_m)
    etas: list[float | None] = [None] * n
    dists: list[float | None] = [None] * n
    moved: list[int] = []
    plan_m = along_m if planned_m is None else planned_m
    pos = start_m
    ppos = start_m if start_planned_m is None else start_planned_m
    travelled = lead_m
    ptravelled = lead_m * pace.local
    extra = 0.0  # service and waiting so far
    far_pace = 1.0 / pace.far_mps
    reach = pace.near_mps * pace.near_s
    excess = (1.0 / pace.near_mps - pace.local * far_pace) * reach
    fade = -1.0 / reach if reach > 0.0 else -math.inf
    # Beyond ten reaches the hand-over is done: what is left of the excess (at most
    # `near_s` seconds) is under a hundredth of a second.
    settled = 10.0 * reach
    exp = math.exp
    if later is None or not any(later):
        order: Sequence[int] = range(n)
        deferred_from = n
    else:
        first = [k for k in range(n) if not later[k]]
        deferred_from = len(first)
        order = first + [k for k in range(n) if later[k]]
    for k in order:
        if not active[k]:
            continue
        a = along_m[k]
        e = plan_m[k]
        travelled += a - pos if a >= pos else pos - a
        ptravelled += e - ppos if e >= ppos else ppos - e
        pos = a
        ppos = e
        t = start_s + ptravelled * far_pace + extra + excess
        if travelled < settled:
            t -= excess * exp(travelled * fade)
        opens = opens_s[k]
        if opens is not None and t < opens:
            extra += opens - t
            t = opens
        etas[k] = t
        dists[k] = travelled
        old = published[k]
        if old is None:
            moved.append(k)
        else:
            change = t - old if t >= old else old - t
            if change > floor_s and change > frac * (t - start_s):
                moved.append(k)
        extra += service_s[k] * service_scale
    if deferred_from < n:
        moved.sort()
    return Chain(etas, dists, moved)
