"""Replay a recorded drive against a planned route and measure how good the ETAs were.

At every fix before a stop is reached, the ETA the live system would have published for
it is a prediction; the time the vehicle actually got there is the truth. Errors are
grouped by how far ahead the prediction was made (0-5, 5-15, 15-30, 30+ minutes) and
compared with a naive baseline fed the same plan: remaining distance along the path
divided by the route's average planned speed (the path to the last stop over its planned
duration, planned service times included), from the same progress measurement, with no
learning.

Stops come from a file or are detected where the vehicle dwelled (and the end of the drive
is the final destination); the planned path comes from a file or is the track itself. The
plan's timing comes from the stops' planned arrival times, from a fixed speed, or, by
default, is calibrated to the drive: the last stop planned at its actual arrival, so the
baseline's average speed is the drive's true one (the strongest constant-speed baseline).
With a fixed planned speed, the planned duration is driving the path at that speed plus
the stops' planned service, exactly what our ETAs start from.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tracker.core import geo, motion, pathcodec
from tracker.core.model import Fix, Route, Stop
from tracker.core.route import progress as prog
from tracker.core.timeparse import parse_time
from tracker.tools.tracks import TrackError, read_track

# Horizons in minutes ahead: [low, high); None is open-ended.
BUCKETS: tuple[tuple[float, float | None], ...] = ((0, 5), (5, 15), (15, 30), (30, None))
MAPE_MIN_HORIZON_S = 60.0  # relative error of a prediction made seconds before is noise


@dataclass(frozen=True, slots=True)
class Prediction:
    """One ETA for one stop, made at one fix; times are epoch seconds."""

    made: float
    stop_id: int
    predicted: float
    actual: float

    @property
    def horizon_s(self) -> float:
        """How long before the actual arrival the prediction was made."""
        return self.actual - self.made

    @property
    def error_s(self) -> float:
        """Predicted minus actual: positive is late, negative early."""
        return self.predicted - self.actual


@dataclass(frozen=True, slots=True)
class Accuracy:
    """Error figures for the predictions of one horizon bucket."""

    label: str
    n: int
    mae_s: float
    mape: float  # fraction, over predictions at least MAPE_MIN_HORIZON_S ahead
    within_1min: float  # fraction
    within_2min: float  # fraction


@dataclass(frozen=True)
class Scenario:
    """A drive and the route it is measured against, with the true arrival times."""

    fixes: list[Fix]
    route: Route
    actual: dict[int, float]  # stop id -> epoch seconds of the real arrival
    stops_source: str
    path_source: str
    calibrated: bool = False


@dataclass(frozen=True)
class Result:
    """What a replay produced: predictions of both models and their accuracy tables."""

    scenario: Scenario
    ours: list[Prediction]
    baseline: list[Prediction]
    baseline_speed_mps: float
    events: dict[str, int] = field(default_factory=dict)
    cfg: prog.EtaConfig = field(default_factory=prog.EtaConfig)

    def table(self, which: str) -> list[Accuracy]:
        """Accuracy by horizon bucket for "ours" or "baseline", with an "all" row last."""
        return accuracy(self.ours if which == "ours" else self.baseline)


def bucket_label(low: float, high: float | None) -> str:
    """E.g. '0-5 min' or '30+ min'."""
    return f"{low:g}+ min" if high is None else f"{low:g}-{high:g} min"


def accuracy(predictions: Sequence[Prediction]) -> list[Accuracy]:
    """Accuracy per horizon bucket, then over all predictions."""
    groups: list[tuple[str, list[Prediction]]] = []
    for low, high in BUCKETS:
        lo_s, hi_s = low * 60.0, math.inf if high is None else high * 60.0
        groups.append(
            (bucket_label(low, high), [p for p in predictions if lo_s <= p.horizon_s < hi_s])
        )
    groups.append(("all", list(predictions)))
    return [_figures(label, group) for label, group in groups]


def _figures(label: str, group: Sequence[Prediction]) -> Accuracy:
    if not group:
        return Accuracy(label, 0, math.nan, math.nan, math.nan, math.nan)
    errors = [abs(p.error_s) for p in group]
    relative = [abs(p.error_s) / p.horizon_s for p in group if p.horizon_s >= MAPE_MIN_HORIZON_S]
    n = len(group)
    return Accuracy(
        label=label,
        n=n,
        mae_s=sum(errors) / n,
        mape=sum(relative) / len(relative) if relative else math.nan,
        within_1min=sum(1 for e in errors if e <= 60.0) / n,
        within_2min=sum(1 for e in errors if e <= 120.0) / n,
    )


def path_from_track(fixes: Sequence[Fix], tolerance_m: float = 10.0) -> pathcodec.Path:
    """The drive itself as the planned path, simplified so standstill jitter adds no length."""
    if len(fixes) < 2:
        raise ValueError("a track needs at least two fixes to make a path")
    proj = geo.LocalProjection.around((f.lat, f.lon) for f in fixes)
    line = geo.simplify(proj.line([(f.lat, f.lon) for f in fixes]), tolerance_m)
    return tuple(proj.to_latlon(x, y) for x, y in line.coords)


def detect_stops(
    fixes: Sequence[Fix],
    radius_m: float = 30.0,
    min_dwell_s: float = 60.0,
    service_s: float = 60.0,
) -> tuple[list[Stop], dict[int, float]]:
    """Stops where the vehicle dwelled, plus the end of the drive as the destination.

    Each dwell becomes a stop with `service_s` of planned service (the planner's figure,
    not the dwell actually observed) and a geofence of `radius_m`; its true arrival is when
    the dwell began. The destination's true arrival is when the vehicle came within
    `radius_m` of its final position for good.
    """
    if len(fixes) < 2:
        raise ValueError("a track needs at least two fixes to find stops in")
    dwells = motion.find_dwells(fixes, radius_m, min_dwell_s)
    stops: list[Stop] = []
    actual: dict[int, float] = {}
    for i, d in enumerate(dwells):
        if d.last >= len(fixes) - 1:
            continue  # a dwell at the very end is the destination, added below
        sid = i + 1
        stops.append(
            Stop(
                sid, sid, d.lat, d.lon, name=f"dwell {sid}", service_s=service_s, radius_m=radius_m
            )
        )
        actual[sid] = d.start.timestamp()
    end = fixes[-1]
    proj = geo.LocalProjection(end.lat, end.lon)
    first = len(fixes) - 1
    while first > 0:
        x, y = proj.to_xy(fixes[first - 1].lat, fixes[first - 1].lon)
        if math.hypot(x, y) > radius_m:
            break
        first -= 1
    sid = len(stops) + 1
    stops.append(Stop(sid, sid, end.lat, end.lon, name="destination", radius_m=radius_m))
    actual[sid] = fixes[first].time.timestamp()
    return stops, actual


def actual_arrivals(fixes: Sequence[Fix], stops: Sequence[Stop]) -> dict[int, float]:
    """When the drive first entered each stop's geofence, visiting stops in sequence.

    A stop never reached has no entry.
    """
    proj = geo.LocalProjection.around([(f.lat, f.lon) for f in fixes])
    xy = proj.many_to_xy([(f.lat, f.lon) for f in fixes])
    out: dict[int, float] = {}
    i = 0
    for stop in sorted(stops, key=lambda s: s.seq):
        sx, sy = proj.to_xy(stop.lat, stop.lon)
        j = i
        while j < len(fixes) and math.hypot(xy[j][0] - sx, xy[j][1] - sy) > stop.radius_m:
            j += 1
        if j == len(fixes):
            continue
        out[stop.id] = fixes[j].time.timestamp()
        i = j
    return out


def scenario(
    fixes: list[Fix],
    stops: Sequence[Stop] | None = None,
    path: pathcodec.Path | None = None,
    straight_line: bool = False,
    service_s: float = 60.0,
    calibrate: bool = False,
) -> Scenario:
    """Put a drive and its route together; detect what was not given.

    With `calibrate`, the last reached stop's planned arrival is set to its actual arrival:
    the plan of a perfectly calibrated planner, which makes the naive baseline as strong as
    a constant speed can be (it knows the drive's true average speed in advance).
    """
    if len(fixes) < 2:
        raise ValueError("a drive needs at least two fixes")
    if stops is None:
        stop_list, actual = detect_stops(fixes, service_s=service_s)
        stops_source = "detected from dwells"
    else:
        stop_list = list(stops)
        actual = actual_arrivals(fixes, stop_list)
        stops_source = "given"
    if straight_line:
        route_path, path_source = pathcodec.from_stops(stop_list), "stops joined (straight line)"
    elif path is not None:
        route_path, path_source = path, "given"
    else:
        route_path, path_source = path_from_track(fixes), "the track itself"
    if calibrate:
        reached = [s for s in stop_list if s.id in actual]
        if not reached:
            raise ValueError("no stop was reached, so there is nothing to calibrate to")
        last = max(reached, key=lambda s: s.seq)
        when = datetime.fromtimestamp(actual[last.id], UTC)
        stop_list = [replace(s, planned_arrival=when) if s is last else s for s in stop_list]
    route = Route(
        id=1,
        device_id=fixes[0].device_id,
        planned_start=fixes[0].time,
        stops=tuple(stop_list),
        path=route_path,
        straight_line=straight_line,
    )
    return Scenario(fixes, route, actual, stops_source, path_source, calibrate)


def replay(sc: Scenario, cfg: prog.EtaConfig) -> Result:
    """Feed every fix through the live state machine and collect both models' predictions."""
    plan = prog.plan(sc.route)
    state = prog.start(plan)
    baseline_speed = plan.average_speed(cfg)
    along = dict(zip(plan.stop_ids, plan.along_m, strict=True))
    ours: list[Prediction] = []
    base: list[Prediction] = []
    events: dict[str, int] = {}
    for fix in sc.fixes:
        state, evs, progress = prog.step(plan, state, fix, cfg)
        for e in evs:
            events[e.type] = events.get(e.type, 0) + 1
        if progress is None:
            continue
        t = fix.time.timestamp()
        for se in progress.etas:
            actual = sc.actual.get(se.stop_id)
            if actual is None or actual <= t or se.eta is None:
                continue
            ours.append(Prediction(t, se.stop_id, se.eta.timestamp(), actual))
            remaining = max(0.0, along[se.stop_id] - progress.progress_m)
            base.append(Prediction(t, se.stop_id, t + remaining / baseline_speed, actual))
    return Result(sc, ours, base, baseline_speed, events, cfg)


def _pct(x: float) -> str:
    return "  -  " if math.isnan(x) else f"{100.0 * x:5.1f}"


def format_table(title: str, rows: Sequence[Accuracy]) -> str:
    """A plain-text accuracy table."""
    lines = [
        title,
        f"{'horizon':<11}{'n':>7}{'MAE s':>9}{'MAPE %':>9}{'<=1 min %':>11}{'<=2 min %':>11}",
    ]
    for r in rows:
        mae = "    -" if math.isnan(r.mae_s) else f"{r.mae_s:7.1f}"
        lines.append(
            f"{r.label:<11}{r.n:>7}{mae:>9}{_pct(r.mape):>9}"
            f"{_pct(r.within_1min):>11}{_pct(r.within_2min):>11}"
        )
    return "\n".join(lines)


def format_result(result: Result, name: str = "drive") -> str:
    """The full report: the drive, the route, both tables and the verdict per horizon."""
    sc = result.scenario
    fixes = sc.fixes
    minutes = (fixes[-1].time - fixes[0].time).total_seconds() / 60.0
    ours = result.table("ours")
    base = result.table("baseline")
    head = [
        f"backtest: {name}: {len(fixes)} fixes over {minutes:.1f} min",
        f"route: {len(sc.route.stops)} stops ({sc.stops_source}), path: {sc.path_source}",
        f"plan: {_plan_words(sc, result.cfg)}",
        "baseline: remaining distance / average planned speed (service included) "
        f"{result.baseline_speed_mps * 3.6:.1f} km/h",
        "",
        format_table("ours", ours),
        "",
        format_table("naive baseline", base),
        "",
    ]
    verdict = []
    for o, b in zip(ours, base, strict=True):
        if o.n == 0:
            continue
        better = o.mae_s < b.mae_s
        verdict.append(
            f"{o.label}: ours {o.mae_s:.0f} s vs baseline {b.mae_s:.0f} s MAE "
            f"-> {'ours better' if better else 'BASELINE BETTER'}"
        )
    return "\n".join(head + verdict)


def _plan_words(sc: Scenario, cfg: prog.EtaConfig) -> str:
    if sc.calibrated:
        return "calibrated (last stop planned at its actual arrival)"
    timed = [s for s in sc.route.stops if s.planned_arrival is not None]
    if not timed:
        return f"fixed planned speed {cfg.planned_speed_mps * 3.6:.1f} km/h plus planned service"
    return f"{len(timed)} planned arrival time(s)"


def beats_baseline(result: Result) -> bool:
    """Ours has the lower mean absolute error in every horizon bucket with predictions."""
    return all(
        o.mae_s < b.mae_s
        for o, b in zip(result.table("ours"), result.table("baseline"), strict=True)
        if o.n
    )


def read_stops(path: str | Path) -> list[Stop]:
    """Stops from JSON: a list (or {"stops": [...]}) of objects with lat, lon and optional
    id, seq, name, recipient, service_s, radius_m, planned_arrival, window_start, window_end.
    """
    data: Any = json.loads(Path(path).read_text(encoding="utf-8"))
    if isinstance(data, dict):
        data = data.get("stops")
    if not isinstance(data, list) or not data:
        raise ValueError("stops file must hold a non-empty list of stops")
    stops: list[Stop] = []
    for i, item in enumerate(data, start=1):
        if not isinstance(item, dict) or "lat" not in item or "lon" not in item:
            raise ValueError(f"stop {i}: needs lat and lon")

        def when(key: str, item: dict[str, Any] = item) -> datetime | None:
            value = item.get(key)
            return None if value is None else parse_time(value)

        stops.append(
            Stop(
                id=int(item.get("id", i)),
                seq=int(item.get("seq", i)),
                lat=float(item["lat"]),
                lon=float(item["lon"]),
                name=str(item.get("name", "")),
                recipient=str(item.get("recipient", "")),
                service_s=float(item.get("service_s", 60.0)),
                radius_m=float(item.get("radius_m", 50.0)),
                planned_arrival=when("planned_arrival"),
                window_start=when("window_start"),
                window_end=when("window_end"),
            )
        )
    return stops


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="tracker backtest",
        description="Replay a recorded drive (GPX or CSV) against a planned route and "
        "report ETA accuracy by horizon, ours against a naive distance/speed baseline.",
    )
    ap.add_argument("file", metavar="FILE", help="recorded drive: .gpx or .csv")
    ap.add_argument("--stops", metavar="STOPS.json", help="planned stops (default: dwells)")
    ap.add_argument(
        "--path", metavar="PATH", help="planned path file: GeoJSON LineString or polyline"
    )
    ap.add_argument("--straight-line", action="store_true", help="no path: join the stops in order")
    ap.add_argument(
        "--speed-kmh",
        type=float,
        help="plan the drive at this fixed speed; by default the plan is calibrated: the "
        "last stop is planned at its actual arrival (unless the stops carry planned times)",
    )
    ap.add_argument(
        "--service-s", type=float, default=60.0, help="planned service time of detected stops"
    )
    return ap


def main(argv: Sequence[str]) -> str:
    """Run a backtest from command-line arguments and return the report text."""
    args = _parser().parse_args(list(argv))
    fixes = read_track(args.file)
    stops = read_stops(args.stops) if args.stops else None
    path = None
    if args.path:
        path = pathcodec.decode(Path(args.path).read_text(encoding="utf-8").strip())
    scheduled = stops is not None and any(s.planned_arrival for s in stops)
    calibrate = args.speed_kmh is None and not scheduled
    sc = scenario(fixes, stops, path, args.straight_line, args.service_s, calibrate)
    cfg = prog.EtaConfig()
    if args.speed_kmh is not None:
        if not args.speed_kmh > 0:
            raise ValueError("--speed-kmh must be positive")
        cfg = prog.EtaConfig(planned_speed_mps=args.speed_kmh / 3.6)
    return format_result(replay(sc, cfg), Path(args.file).name)


def run_cli(argv: list[str]) -> int:
    """`tracker backtest ...`: print the report; exit status 2 on unusable input."""
    try:
        print(main(argv))
    except (OSError, ValueError, TrackError) as exc:
        print(f"tracker backtest: {exc}", file=sys.stderr)
        return 2
    return 0
