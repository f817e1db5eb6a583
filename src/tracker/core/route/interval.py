"""The 80 % interval around an ETA: when the vehicle arrives at the earliest and latest.

Arrival errors grow with the time still to go, and not symmetrically: a vehicle can be
held up far longer than it can make up. So the interval is a pair of quantiles (10th and
90th) of the ratio of the real time to go to the predicted one, given at a few horizons
and interpolated in log-horizon between them, and never narrower than `floor_s` either
side (the geofence and the GPS alone blur an arrival by that much). The default table was
calibrated on real bus trips through the public API (bench/eta_corpus.py), cross-validated
by day, to hold about 80 % of arrivals; re-taken from the pooled quantiles when the point
ETA changed (bench/eta_offline.py prints them), each line alone holding 78-79 %.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Spread:
    """Quantiles of (actual time to go) / (predicted time to go), by horizon in seconds."""

    horizons_s: tuple[float, ...] = (60.0, 300.0, 900.0, 1800.0, 3600.0)
    low: tuple[float, ...] = (0.45, 0.7, 0.78, 0.82, 0.82)
    high: tuple[float, ...] = (2.4, 1.8, 1.5, 1.5, 1.6)
    floor_s: float = 30.0

    def __post_init__(self) -> None:
        n = len(self.horizons_s)
        if n == 0 or len(self.low) != n or len(self.high) != n:
            raise ValueError("spread: horizons, low and high need the same non-zero length")
        if any(b <= a for a, b in zip(self.horizons_s, self.horizons_s[1:], strict=False)):
            raise ValueError("spread: horizons must increase")
        if any(not 0.0 < lo <= 1.0 <= hi for lo, hi in zip(self.low, self.high, strict=True)):
            raise ValueError("spread: need 0 < low <= 1 <= high at every horizon")
        if self.floor_s < 0.0:
            raise ValueError("spread: floor_s must not be negative")

    def _at(self, h: float) -> tuple[float, float]:
        xs = self.horizons_s
        if h <= xs[0]:
            return self.low[0], self.high[0]
        if h >= xs[-1]:
            return self.low[-1], self.high[-1]
        k = bisect_right(xs, h) - 1
        w = (math.log(h) - math.log(xs[k])) / (math.log(xs[k + 1]) - math.log(xs[k]))
        return (
            self.low[k] + w * (self.low[k + 1] - self.low[k]),
            self.high[k] + w * (self.high[k + 1] - self.high[k]),
        )

    def bounds(self, now_s: float, eta_s: float) -> tuple[float, float]:
        """(earliest, latest) epoch seconds for an ETA `eta_s` predicted at `now_s`."""
        h = max(0.0, eta_s - now_s)
        lo_r, hi_r = self._at(max(h, 1.0))
        lo = min(now_s + h * lo_r, eta_s - self.floor_s)
        hi = max(now_s + h * hi_r, eta_s + self.floor_s)
        return max(now_s, lo), hi
