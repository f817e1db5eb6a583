"""Route progress by linear referencing, a robust speed estimate, and the ETA chain.

Three pure pieces the per-route state machine (`progress`) combines:

- `PathIndex` measures where a position lies along the planned path. It only looks near
  the progress already made and prices candidates that are implausibly far behind or
  ahead, so a loop, a U-turn or a path that passes itself cannot make progress jump to
  another pass over the same street.
- `SpeedEstimate` is the speed along the route averaged over a recent stretch of time (red
  lights and traffic included, time at delivery stops excluded), blended with the planned
  speed as a prior worth a fixed number of seconds of observation: thin data or a long
  wait pull the estimate toward the plan rather than to zero.
- `Pace` says how the rest of the drive goes: the recent speed for the next minutes, the
  long-run (planned) speed after that, since the street a vehicle is in now says little
  about the roads twenty minutes ahead.
- `chain` turns a start point, a pace and the remaining stops into arrival times: driving
  plus the service times of the stops before, never earlier than a stop's window opens.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import shapely
from shapely import LineString, Point


@dataclass(frozen=True, slots=True)
class Location:
    """Where a position lies relative to the path: metres along it and metres off it."""

    along_m: float
    offset_m: float


class PathIndex:
    """A planned path in metres, cut into segments for windowed linear referencing."""

    __slots__ = ("_segments", "_starts", "_starts_list", "length_m", "line")

    def __init__(self, line: LineString) -> None:
        coords = [(float(x), float(y)) for x, y in line.coords]
        pairs = [
            [coords[i], coords[i + 1]] for i in range(len(coords) - 1) if coords[i] != coords[i + 1]
        ]
        if not pairs:
            raise ValueError("a path needs at least one segment of non-zero length")
        self.line = line
        self._segments: Any = shapely.linestrings(pairs)
        lengths: Any = shapely.length(self._segments)
        self._starts: Any = lengths.cumsum() - lengths
        self._starts_list: list[float] = [float(s) for s in self._starts]
        self.length_m = float(lengths.sum())

    def _window(self, lo_m: float, hi_m: float) -> tuple[int, int]:
        starts = self._starts_list
        i0 = max(0, bisect_right(starts, lo_m) - 1)
        i1 = max(i0 + 1, bisect_right(starts, hi_m))
        return i0, min(i1, len(starts))

    def locate(
        self,
        x: float,
        y: float,
        window: tuple[float, float],
        expect: tuple[float, float],
        behind_cost: float = 1.0,
        ahead_cost: float = 0.5,
    ) -> Location:
        """The most plausible location of (x, y) on the path within `window` (metres along).

        Each candidate costs its distance from the path plus `behind_cost` per metre it lies
        before `expect[0]` and `ahead_cost` per metre past `expect[1]`, so where the path
        overlaps itself the pass the vehicle is actually on wins.
        """
        i0, i1 = self._window(window[0], window[1])
        segs = self._segments[i0:i1]
        pt = Point(x, y)
        dist: Any = shapely.distance(segs, pt)
        along: Any = shapely.line_locate_point(segs, pt) + self._starts[i0:i1]
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
            segs = self._segments[i0:i1]
            pt = Point(x, y)
            dist: Any = shapely.distance(segs, pt)
            along: Any = shapely.line_locate_point(segs, pt) + self._starts[i0:i1]
            behind = along < prev
            if behind.any():
                # The first segment may reach back before `prev`: measure from there on.
                start = shapely.line_interpolate_point(self.line, prev)
                dist[behind] = shapely.distance(start, pt)
                along = along.clip(min=prev)
            near = dist <= float(dist.min()) + tolerance_m
            prev = float(along[near].min())
            out.append(prev)
        return out


@dataclass(frozen=True, slots=True)
class SpeedEstimate:
    """Exponentially weighted metres and seconds travelled along the route."""

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
class Pace:
    """How fast the rest of the drive goes: `near_mps` for its first `near_s` seconds
    (recent conditions persist a while), then `far_mps` (the longer-run speed)."""

    near_mps: float
    far_mps: float
    near_s: float

    def drive_s(self, distance_m: float) -> float:
        """Seconds of driving to cover `distance_m`."""
        reach = self.near_mps * self.near_s
        if distance_m <= reach:
            return distance_m / self.near_mps
        return self.near_s + (distance_m - reach) / self.far_mps


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
) -> Chain:
    """Arrival times and travel distances for the active stops, in order.

    Travel starts at `start_m` along the path at `start_s` (epoch seconds), after
    `lead_m` metres of driving to get there (back from a detour, say). Each active
    stop is reached after driving its cumulative distance at `pace`, plus the service
    times of the active stops before it and any wait for a window to open; a stop behind
    the start (passed without a visit) is reached by going back along the path. Inactive
    stops (done, or the one being served) get None.

    `moved` lists the stops whose ETA differs from `published` by more than `floor_s`
    seconds and more than `frac` of the time still to go, or that had none published:
    the changes that matter to a customer. It is worked out in the same pass because this
    loop runs for every stop on every fix.
    """
    etas: list[float | None] = []
    dists: list[float | None] = []
    moved: list[int] = []
    pos = start_m
    travelled = lead_m
    extra = 0.0  # service and waiting so far
    reach = pace.near_mps * pace.near_s
    near_pace = 1.0 / pace.near_mps
    far_pace = 1.0 / pace.far_mps
    far_start = start_s + pace.near_s - reach * far_pace
    k = -1
    for a, service, opens, act, old in zip(
        along_m, service_s, opens_s, active, published, strict=True
    ):
        k += 1
        if not act:
            etas.append(None)
            dists.append(None)
            continue
        travelled += a - pos if a >= pos else pos - a
        pos = a
        if travelled <= reach:
            t = start_s + travelled * near_pace + extra
        else:
            t = far_start + travelled * far_pace + extra
        if opens is not None and t < opens:
            extra += opens - t
            t = opens
        etas.append(t)
        dists.append(travelled)
        if old is None:
            moved.append(k)
        else:
            change = t - old if t >= old else old - t
            if change > floor_s and change > frac * (t - start_s):
                moved.append(k)
        extra += service
    return Chain(etas, dists, moved)
