"""Live ETA accuracy: every arrival is the truth for the ETAs shown earlier for its stop.

What a customer or dispatcher was shown is piecewise constant: a stop's published ETA
(with its 80 % interval) changes only with its `stop.eta_changed` events. At an arrival at
time A, the ETA shown h seconds before is the last one published at or before A − h (no
sample when none was published yet). Each horizon of a fixed grid (`HORIZONS_S`, every
minute from 1 to 90 min) gives one sample per arrival, so every arrival weighs the same
and a route that publishes often is not counted more than one that publishes rarely.

A sample's error is ETA − A in seconds (positive: the vehicle came earlier than shown),
`inside` says whether the interval held the arrival, and `accurate` applies the TransitApp
ETA Accuracy Benchmark (0-3 min out: the vehicle arrives at most 30 s early and 90 s late
against the ETA; 3-6 min: 60 s / 150 s; 6-10 min: 60 s / 210 s; 10-15 min: 90 s / 270 s;
beyond 15 min it does not rate). The score is the mean accurate share over those four
bands, as `bench/eta_corpus.py` computes it.

Pure: no I/O, no clock. The store keeps the samples and sums them per horizon; `report`
turns those sums into the figures by horizon bucket.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

HORIZON_STEP_S = 60
HORIZONS_S: tuple[int, ...] = tuple(range(HORIZON_STEP_S, 90 * 60 + 1, HORIZON_STEP_S))
# Horizon buckets in seconds: [low, high); None is open-ended.
BUCKETS: tuple[tuple[int, int | None], ...] = ((0, 300), (300, 900), (900, 1800), (1800, None))
# TransitApp bands: (low s, high s, seconds the vehicle may come early, seconds late).
TRANSIT: tuple[tuple[int, int, float, float], ...] = (
    (0, 180, 30.0, 90.0),
    (180, 360, 60.0, 150.0),
    (360, 600, 60.0, 210.0),
    (600, 900, 90.0, 270.0),
)


@dataclass(frozen=True, slots=True)
class Shown:
    """One published ETA of a stop: from `time` on, `eta` (and its interval) was shown."""

    time: float  # epoch s of the event (the fix that caused it)
    eta: float
    earliest: float | None = None
    latest: float | None = None


@dataclass(frozen=True, slots=True)
class Sample:
    """The ETA shown `horizon_s` before an arrival, scored against it."""

    horizon_s: int
    error_s: float  # ETA − arrival
    inside: bool | None  # None: no interval was shown
    accurate: bool | None  # None: beyond the TransitApp bands (15 min)


def band(horizon_s: float) -> int | None:
    """The TransitApp band (index into `TRANSIT`) of a horizon, None beyond 15 min."""
    for i, (lo, hi, _, _) in enumerate(TRANSIT):
        if lo <= horizon_s < hi:
            return i
    return None


def is_accurate(horizon_s: float, error_s: float) -> bool | None:
    """TransitApp's verdict on one prediction (None beyond its bands).

    `error_s` is ETA − arrival, so a vehicle `early` seconds before the ETA is error +early.
    """
    i = band(horizon_s)
    if i is None:
        return None
    _, _, early, late = TRANSIT[i]
    return -late <= error_s <= early


def score(
    shown: Sequence[Shown], arrived: float, horizons: Iterable[int] = HORIZONS_S
) -> list[Sample]:
    """The samples of one arrival at `arrived` (epoch s) from what was shown for the stop.

    `shown` may come in any order; at equal times the later element wins (events keep
    their order). ETAs published at or after the arrival are not predictions of it.
    """
    ordered = sorted((s for s in shown if s.time < arrived), key=lambda s: s.time)
    times = [s.time for s in ordered]
    out: list[Sample] = []
    for h in horizons:
        i = bisect.bisect_right(times, arrived - h)
        if i == 0:
            continue  # nothing was shown yet that long before
        s = ordered[i - 1]
        error = s.eta - arrived
        inside = None
        if s.earliest is not None and s.latest is not None:
            inside = s.earliest <= arrived <= s.latest
        out.append(Sample(h, error, inside, is_accurate(h, error)))
    return out


@dataclass(slots=True)
class Totals:
    """Sums over samples (of one horizon, or a bucket): enough for every figure."""

    n: int = 0
    abs_error_s: float = 0.0
    error_s: float = 0.0
    with_interval: int = 0
    inside: int = 0
    rated: int = 0
    accurate: int = 0

    def add(self, other: Totals) -> None:
        """Fold `other` into these sums."""
        self.n += other.n
        self.abs_error_s += other.abs_error_s
        self.error_s += other.error_s
        self.with_interval += other.with_interval
        self.inside += other.inside
        self.rated += other.rated
        self.accurate += other.accurate

    @classmethod
    def of(cls, samples: Iterable[Sample]) -> Totals:
        """The sums of some samples."""
        t = cls()
        for s in samples:
            t.n += 1
            t.abs_error_s += abs(s.error_s)
            t.error_s += s.error_s
            if s.inside is not None:
                t.with_interval += 1
                t.inside += s.inside
            if s.accurate is not None:
                t.rated += 1
                t.accurate += s.accurate
        return t


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


@dataclass(frozen=True, slots=True)
class Figures:
    """Accuracy of one horizon bucket (None where there is nothing to measure)."""

    label: str
    low_s: int
    high_s: int | None
    count: int
    mae_s: float | None
    bias_s: float | None
    coverage: float | None  # share of samples whose 80 % interval held the arrival
    accurate: float | None  # TransitApp accurate share (horizons up to 15 min)

    @classmethod
    def of(cls, low_s: int, high_s: int | None, t: Totals, label: str | None = None) -> Figures:
        """The figures of a bucket from its sums."""
        if label is None:
            label = f"{low_s // 60}-{high_s // 60} min" if high_s else f"{low_s // 60}+ min"
        return cls(
            label,
            low_s,
            high_s,
            t.n,
            t.abs_error_s / t.n if t.n else None,
            t.error_s / t.n if t.n else None,
            _share(t.inside, t.with_interval),
            _share(t.accurate, t.rated),
        )


@dataclass(frozen=True, slots=True)
class Report:
    """Figures by horizon bucket, all horizons together, and the TransitApp score."""

    buckets: tuple[Figures, ...]
    overall: Figures
    score: float | None  # mean accurate share over the TransitApp bands that have samples
    bands: tuple[float | None, ...] = field(default=())  # accurate share per band

    def to_json(self) -> dict[str, object]:
        """Plain JSON-ready dict (the API's answer without its window)."""

        def fig(f: Figures) -> dict[str, object]:
            return {
                "horizon": f.label,
                "min_s": f.low_s,
                "max_s": f.high_s,
                "count": f.count,
                "mae_s": f.mae_s,
                "bias_s": f.bias_s,
                "coverage": f.coverage,
                "accurate": f.accurate,
            }

        return {
            "buckets": [fig(f) for f in self.buckets],
            "all": fig(self.overall),
            "score": self.score,
            "transit_bands": [
                {"min_s": lo, "max_s": hi, "accurate": share}
                for (lo, hi, _, _), share in zip(TRANSIT, self.bands, strict=True)
            ],
        }


def report(by_horizon: Mapping[int, Totals]) -> Report:
    """The figures from the sums of each horizon (seconds)."""
    buckets = []
    for lo, hi in BUCKETS:
        t = Totals()
        for h, sums in by_horizon.items():
            if lo <= h and (hi is None or h < hi):
                t.add(sums)
        buckets.append(Figures.of(lo, hi, t))
    overall = Totals()
    for sums in by_horizon.values():
        overall.add(sums)
    bands: list[float | None] = []
    for lo, hi, _, _ in TRANSIT:
        t = Totals()
        for h, sums in by_horizon.items():
            if lo <= h < hi:
                t.add(sums)
        bands.append(_share(t.accurate, t.rated))
    present = [b for b in bands if b is not None]
    return Report(
        tuple(buckets),
        Figures.of(0, None, overall, "all"),
        sum(present) / len(present) if present else None,
        tuple(bands),
    )
