"""Travel times learned from past drives, by stretch of road and time of week.

A stretch of road is a grid cell of 0.001 degree (about 110 m of latitude) crossed in one
of eight headings. Every crossing of a stored drive gives its pace, seconds per metre from
entering the cell to leaving it, standing at lights and bus stops included (a crossing
with a long stand, a parked van, a terminal layover, is no travel time and is dropped).
The store keeps, per cell, heading and hour of the week, the count of crossings and the
sum and sum of squares of their log pace.

`profile_knots` turns that into a route's expected timing: the path cut into short
pieces, each piece's pace the learned one for its cell, heading and the hour the vehicle
is expected there, shrunk toward the plan's own pace by `prior_passes` crossings' worth, so
a stretch crossed once moves the plan a little and one crossed twenty times decides it. A
route on roads nobody has driven keeps its plan. Everything here is pure: the service
loads a snapshot (`Snapshot`) when a plan is built and a periodic job adds crossings.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from tracker.core.filters import haversine_m

CELL_DEG = 0.001
MIN_CROSSING_M = 40.0  # shorter crossings (a corner clipped) say little about the pace
MAX_CROSSING_S = 300.0  # longer ones stood still: a layover or a delivery, not the road
MAX_GAP_S = 60.0  # a silence this long breaks a crossing
PIECE_M = 50.0  # the path is cut into pieces this long to look up cells
# Variance of log pace within a cell when nothing is known to pool (lights, stops served or
# passed make a crossing's pace vary by about this much, a factor of e^0.5 either way).
DEFAULT_LOG_VAR = 0.25
VAR_PRIOR_DOF = 4.0  # the pooled variance counts as this many crossings' worth per cell


def cell_of(lat: float, lon: float) -> tuple[int, int]:
    """(cell_y, cell_x) of a position."""
    return math.floor(lat / CELL_DEG), math.floor(lon / CELL_DEG)


def heading_of(lat0: float, lon0: float, lat1: float, lon1: float) -> int:
    """Compass octant (0 = north, 2 = east, ...) of the way from one position to another."""
    dy = lat1 - lat0
    dx = (lon1 - lon0) * math.cos(math.radians(0.5 * (lat0 + lat1)))
    bearing = math.degrees(math.atan2(dx, dy)) % 360.0
    return int((bearing + 22.5) // 45.0) % 8


def hour_of_week(epoch_s: float) -> int:
    """0..167: Monday 00:00 UTC is 0."""
    t = datetime.fromtimestamp(epoch_s, UTC)
    return t.weekday() * 24 + t.hour


@dataclass(frozen=True, slots=True)
class Crossing:
    """One crossing of one cell by one drive."""

    cell_y: int
    cell_x: int
    heading: int
    hour_of_week: int
    seconds: float
    metres: float

    @property
    def log_pace(self) -> float:
        """Log of seconds per metre."""
        return math.log(self.seconds / self.metres)


def crossings(track: Sequence[tuple[float, float, float]]) -> list[Crossing]:
    """The cell crossings of a drive given as (epoch s, lat, lon) in time order.

    A crossing runs from the first fix in a cell to the first fix in the next one; the
    first and last cells of a drive (entered or left unseen) and crossings broken by a
    silence are left out.
    """
    out: list[Crossing] = []
    if len(track) < 2:
        return out
    _t0, lat0, lon0 = track[0]
    cell = cell_of(lat0, lon0)
    entered: tuple[float, float, float] | None = None  # the first cell was not entered
    metres = 0.0
    prev = track[0]
    for point in track[1:]:
        t, lat, lon = point
        if t - prev[0] > MAX_GAP_S:
            entered, metres, cell = None, 0.0, cell_of(lat, lon)
            prev = point
            continue
        metres += haversine_m(prev[1], prev[2], lat, lon)
        here = cell_of(lat, lon)
        if here != cell:
            if entered is not None:
                seconds = t - entered[0]
                if metres >= MIN_CROSSING_M and 0.0 < seconds <= MAX_CROSSING_S:
                    out.append(
                        Crossing(
                            cell[0],
                            cell[1],
                            heading_of(entered[1], entered[2], lat, lon),
                            hour_of_week(entered[0]),
                            seconds,
                            metres,
                        )
                    )
            cell, entered, metres = here, point, 0.0
        prev = point
    return out


@dataclass(frozen=True, slots=True)
class CellStats:
    """The crossings of one cell in one heading at one hour of the week, summed."""

    hour_of_week: int
    passes: int
    sum_log_pace: float
    sum_log_pace2: float


# (cell_y, cell_x, heading) -> that stretch's stats by hour of the week
Snapshot = Mapping[tuple[int, int, int], Sequence[CellStats]]


def _around(stats: Sequence[CellStats], hour: int, need: int) -> tuple[int, float, float]:
    """(passes, sum, sum of squares of log pace) within an hour of `hour` when they are
    enough, else of all hours."""
    near = [
        s for s in stats if min((s.hour_of_week - hour) % 168, (hour - s.hour_of_week) % 168) <= 1
    ]
    use = near if sum(s.passes for s in near) >= need else stats
    return (
        sum(s.passes for s in use),
        sum(s.sum_log_pace for s in use),
        sum(s.sum_log_pace2 for s in use),
    )


def pooled_variance(snapshot: Snapshot) -> tuple[float, int]:
    """(variance, degrees of freedom) of log pace within cells, pooled over a snapshot:
    the prior of each cell's own variance."""
    ss = 0.0
    dof = 0
    for stats in snapshot.values():
        n = sum(s.passes for s in stats)
        if n < 2:
            continue
        s1 = sum(s.sum_log_pace for s in stats)
        s2 = sum(s.sum_log_pace2 for s in stats)
        ss += max(0.0, s2 - s1 * s1 / n)
        dof += n - 1
    return (ss / dof if dof else DEFAULT_LOG_VAR), dof


def cells_of_path(path: Sequence[tuple[float, float]]) -> set[tuple[int, int]]:
    """Every cell a path (lat, lon) passes through, sampled every few metres."""
    out: set[tuple[int, int]] = set()
    for (lat0, lon0), (lat1, lon1) in itertools.pairwise(path):
        d = haversine_m(lat0, lon0, lat1, lon1)
        n = max(1, math.ceil(d / 20.0))
        for i in range(n + 1):
            w = i / n
            out.add(cell_of(lat0 + w * (lat1 - lat0), lon0 + w * (lon1 - lon0)))
    return out


def profile_knots(
    pieces: Sequence[tuple[float, float, float, int]],
    plan_s: Sequence[float],
    start_s: float,
    snapshot: Snapshot,
    prior_passes: float = 3.0,
    same_hour_passes: int = 3,
) -> list[tuple[float, float]] | None:
    """(metres along, expected driving seconds) at the end of every piece of a path.

    `pieces` are (metres along at the piece's end, lat, lon of its middle, heading);
    `plan_s` the plan's own driving seconds at each piece's end. None when no piece's
    cell has any history (the plan stands as it is).
    """
    knots: list[tuple[float, float]] = []
    learned = 0
    total = 0.0
    prev_m, prev_plan = 0.0, 0.0
    pooled, _dof = pooled_variance(snapshot)
    for (end_m, lat, lon, heading), plan_end in zip(pieces, plan_s, strict=True):
        length = end_m - prev_m
        planned = plan_end - prev_plan
        prev_m, prev_plan = end_m, plan_end
        if length <= 0.0:
            continue
        seconds = max(planned, 1e-3)
        stats = snapshot.get((*cell_of(lat, lon), heading))
        if stats:
            n, s1, s2 = _around(stats, hour_of_week(start_s + total), same_hour_passes)
            if n > 0:
                learned += 1
                mean = s1 / n
                # The cell's own variance, shrunk toward the pooled one (scaled
                # inverse chi-squared prior worth VAR_PRIOR_DOF crossings).
                var = (max(0.0, s2 - s1 * mean) + VAR_PRIOR_DOF * pooled) / (n - 1 + VAR_PRIOR_DOF)
                log_plan = math.log(seconds / length)
                w = n / (n + prior_passes)
                log_pace = w * mean + (1.0 - w) * log_plan
                # Crossing times are log-normal: their mean, which is what sums along a
                # path, is exp(mu + var / 2), not exp(mu) (the median, too fast).
                seconds = length * math.exp(log_pace + 0.5 * w * var)
        total += seconds
        knots.append((end_m, total))
    return knots if learned else None
