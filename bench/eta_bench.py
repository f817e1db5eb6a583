"""ETA update cost per fix on a 100-stop route, in the pure core (progress.step).

A synthetic but busy drive: a 40 km winding path with 100 stops 400 m apart (60 s of
service each, 50 m geofences), driven at 1 Hz with 4 m GPS noise at 10 m/s, waiting 30 s
at a red light every kilometre and dwelling at every stop, so arrivals, departures and
ETA events all happen along the way. Every fix is timed; the drive is replayed several
times and each fix keeps its fastest run, which filters out the noise of other processes
on the machine (the pure step is deterministic, so every run does the same work).

    .venv/bin/python bench/eta_bench.py [--runs 5]

Prints median and p99 microseconds per fix (target: median <= 100 us), for the whole
drive and for its first tenth (when nearly all 100 stops are still ahead), plus the
cost of turning a Progress into its 100 StopEta objects.
"""

from __future__ import annotations

import argparse
import itertools
import math
import random
import statistics
import time
from datetime import UTC, datetime, timedelta

from tracker.core.model import Fix, Route, Stop
from tracker.core.route import progress as prog

LAT0, LON0 = 48.137, 11.575
M_PER_DEG_LAT = 111_320.0


def to_latlon(x: float, y: float) -> tuple[float, float]:
    return (
        LAT0 + y / M_PER_DEG_LAT,
        LON0 + x / (M_PER_DEG_LAT * math.cos(math.radians(LAT0))),
    )


def build(n_stops: int = 100, spacing_m: float = 400.0) -> tuple[Route, list[Fix]]:
    """The route and the recorded drive along it."""
    rng = random.Random(7)
    # A winding path: a vertex every 40 m, heading drifting like city streets.
    pts = [(0.0, 0.0)]
    heading = 0.0
    length = n_stops * spacing_m + 500.0
    while len(pts) * 40.0 < length:
        heading += rng.uniform(-0.35, 0.35)
        x, y = pts[-1]
        pts.append((x + 40.0 * math.cos(heading), y + 40.0 * math.sin(heading)))
    cum = [0.0]
    for a, b in itertools.pairwise(pts):
        cum.append(cum[-1] + math.dist(a, b))

    def at(s: float) -> tuple[float, float]:
        i = min(max(0, next(k for k, c in enumerate(cum) if c > s) - 1), len(pts) - 2)
        f = (s - cum[i]) / (cum[i + 1] - cum[i])
        return pts[i][0] + f * (pts[i + 1][0] - pts[i][0]), pts[i][1] + f * (
            pts[i + 1][1] - pts[i][1]
        )

    t0 = datetime(2024, 5, 6, 8, 0, tzinfo=UTC)
    stops_at = [spacing_m * (k + 1) for k in range(n_stops)]
    stops = tuple(
        Stop(
            id=1000 + k,
            seq=k + 1,
            lat=to_latlon(*at(s))[0],
            lon=to_latlon(*at(s))[1],
            service_s=60.0,
            radius_m=50.0,
        )
        for k, s in enumerate(stops_at)
    )
    route = Route(1, 1, t0, stops, tuple(to_latlon(x, y) for x, y in pts))

    fixes: list[Fix] = []
    s, t = 0.0, 0
    next_stop, next_light = 0, 1000.0
    while next_stop < n_stops:
        wait = 0
        if s >= stops_at[next_stop]:
            wait, next_stop = 60, next_stop + 1
        elif s >= next_light:
            wait, next_light = 30, next_light + 1000.0
        for _ in range(max(1, wait)):
            x, y = at(s)
            lat, lon = to_latlon(x + rng.gauss(0, 4.0), y + rng.gauss(0, 4.0))
            speed = 0.0 if wait else 10.0
            fixes.append(Fix(1, t0 + timedelta(seconds=t), lat, lon, speed=speed, accuracy=8.0))
            t += 1
        s += 10.0
    for _ in range(30):  # drive on, so the last stop is left and the route completes
        x, y = at(s)
        lat, lon = to_latlon(x + rng.gauss(0, 4.0), y + rng.gauss(0, 4.0))
        fixes.append(Fix(1, t0 + timedelta(seconds=t), lat, lon, speed=10.0, accuracy=8.0))
        t, s = t + 1, s + 10.0
    return route, fixes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    route, fixes = build()
    cfg = prog.EtaConfig()
    t = time.perf_counter()
    plan = prog.plan(route)
    plan_ms = (time.perf_counter() - t) * 1e3

    best = [math.inf] * len(fixes)
    first_run: list[float] = []
    counts: dict[str, int] = {}
    mid: tuple[prog.RouteState, Fix] | None = None
    for run in range(args.runs):
        state = prog.start(plan)
        for i, fix in enumerate(fixes):
            if run == 0 and i == len(fixes) // 20:
                mid = (state, fix)
            t0 = time.perf_counter_ns()
            state, events, _ = prog.step(plan, state, fix, cfg)
            us = (time.perf_counter_ns() - t0) / 1e3
            best[i] = min(best[i], us)
            if run == 0:
                first_run.append(us)
                for e in events:
                    counts[e.type] = counts.get(e.type, 0) + 1

    def q(xs: list[float], p: float) -> float:
        return sorted(xs)[min(len(xs) - 1, int(p * len(xs)))]

    head = best[: len(best) // 10]
    print(
        f"route: {len(route.stops)} stops, path {plan.index.length_m / 1000:.1f} km; "
        f"plan() {plan_ms:.1f} ms; drive: {len(fixes)} fixes"
    )
    print("events:", ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    print(
        f"step, best of {args.runs} runs per fix: median {statistics.median(best):.1f} us, "
        f"p99 {q(best, 0.99):.1f} us"
    )
    print(
        f"step, first tenth of the drive (~100 stops ahead): median "
        f"{statistics.median(head):.1f} us, p99 {q(head, 0.99):.1f} us"
    )
    print(
        f"step, single run (machine noise included): median "
        f"{statistics.median(first_run):.1f} us, p99 {q(first_run, 0.99):.1f} us"
    )
    if mid is not None:
        # The cost of materialising 100 StopEta (datetimes included), paid by whoever reads
        # Progress.etas: time it on fresh Progress objects from the same step.
        state, fix = mid
        spent = []
        for _ in range(1000):
            fresh = prog.step(plan, state, fix, cfg)[2]
            assert fresh is not None
            t0 = time.perf_counter_ns()
            _ = fresh.etas
            spent.append((time.perf_counter_ns() - t0) / 1e3)
        build_us = statistics.median(spent)
        print(f"reading Progress.etas (100 StopEta, built on first access): {build_us:.1f} us")
    verdict = "meets" if statistics.median(best) <= 100.0 else "MISSES"
    print(f"target median <= 100 us: {verdict}")


if __name__ == "__main__":
    main()
