"""Moving or staying: geofence arrival and departure rules, and dwell detection.

A vehicle has arrived at a stop when it is inside the stop's geofence (radius widened by
the fix's own accuracy, which is capped so one wild fix cannot cover a district) and it is
either slow or has been staying put. It has departed when it is clearly outside: beyond
radius, accuracy and a margin, so GPS jitter at the kerb does not end a visit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from tracker.core.geo import LocalProjection
from tracker.core.model import Fix


def slack(accuracy_m: float | None, cap_m: float) -> float:
    """How many metres a fix's stated accuracy may widen a geofence."""
    if accuracy_m is None or not math.isfinite(accuracy_m) or accuracy_m <= 0.0:
        return 0.0
    return min(accuracy_m, cap_m)


def inside(distance_m: float, radius_m: float, slack_m: float) -> bool:
    """Inside a geofence of `radius_m`, giving the fix `slack_m` of doubt."""
    return distance_m <= radius_m + slack_m


def outside(distance_m: float, radius_m: float, slack_m: float, margin_m: float) -> bool:
    """Clearly outside a geofence: beyond radius, accuracy and a hysteresis margin."""
    return distance_m > radius_m + slack_m + margin_m


def arrives(
    distance_m: float,
    radius_m: float,
    slack_m: float,
    speed_mps: float | None,
    staying_s: float,
    slow_mps: float,
    dwell_s: float,
) -> bool:
    """Arrival: inside the geofence and slow, or inside and staying for `dwell_s`."""
    if not inside(distance_m, radius_m, slack_m):
        return False
    slow = speed_mps is not None and speed_mps <= slow_mps
    return slow or staying_s >= dwell_s


def speed_between(x0: float, y0: float, t0: float, x1: float, y1: float, t1: float) -> float | None:
    """Speed (m/s) implied by two positions in metres and their epoch times."""
    dt = t1 - t0
    if dt <= 0.0:
        return None
    return math.hypot(x1 - x0, y1 - y0) / dt


@dataclass(frozen=True, slots=True)
class Stay:
    """Where the vehicle has been staying (metres) and since when (epoch seconds).

    Online stay-point tracking: the anchor holds while fixes stay within a radius of it and
    moves to the new fix as soon as one leaves, so `duration` is how long the vehicle has
    stayed put, jitter included.
    """

    x: float
    y: float
    since: float

    def update(self, x: float, y: float, t: float, radius_m: float) -> Stay:
        """The stay after a fix at (x, y) at time t."""
        if math.hypot(x - self.x, y - self.y) <= radius_m:
            return self
        return Stay(x, y, t)

    def duration(self, t: float) -> float:
        """Seconds stayed as of time t."""
        return max(0.0, t - self.since)


@dataclass(frozen=True, slots=True)
class Dwell:
    """A period a recorded track stayed within a small radius: a likely stop."""

    start: datetime
    end: datetime
    lat: float
    lon: float
    first: int  # index of the first fix of the dwell
    last: int  # index of its last fix

    @property
    def seconds(self) -> float:
        """How long the vehicle stayed."""
        return (self.end - self.start).total_seconds()


def find_dwells(fixes: Sequence[Fix], radius_m: float = 30.0, min_s: float = 60.0) -> list[Dwell]:
    """Stay points of a time-ordered track (Li et al., 2008).

    From each fix, the following fixes within `radius_m` of it form a stay; a stay of at
    least `min_s` seconds is a dwell, located at the mean of its fixes. Scanning resumes
    after the dwell, so dwells do not overlap.
    """
    if not fixes:
        return []
    proj = LocalProjection.around((f.lat, f.lon) for f in fixes)
    xy = proj.many_to_xy([(f.lat, f.lon) for f in fixes])
    out: list[Dwell] = []
    n = len(fixes)
    i = 0
    while i < n:
        j = i + 1
        while j < n and math.hypot(xy[j][0] - xy[i][0], xy[j][1] - xy[i][1]) <= radius_m:
            j += 1
        if (fixes[j - 1].time - fixes[i].time).total_seconds() >= min_s:
            mx = sum(p[0] for p in xy[i:j]) / (j - i)
            my = sum(p[1] for p in xy[i:j]) / (j - i)
            lat, lon = proj.to_latlon(mx, my)
            out.append(Dwell(fixes[i].time, fixes[j - 1].time, lat, lon, i, j - 1))
            i = j
        else:
            i += 1
    return out
