"""ETA accuracy on real trips, scored through the server's public API like an outsider would.

    .venv/bin/python bench/eta_corpus.py /path/to/trazas-transporte-publico \
        [--realdata ../shared/realdata] [--chart bench/eta_corpus.png] [--json out.json]

A fresh database and a real `tracker serve`. Each test trip gets its own device and a route
created with `POST /api/v1/routes` (the plan: path, stops, planned arrivals); its fixes are
posted through the ingest API with their own times, 10 s of fixes per request, and after
each request `GET /api/v1/routes/{id}` is read: every stop the vehicle has not reached yet
gives one prediction (its `eta`, and `eta_earliest`/`eta_latest` when the server sends an
interval). Bus lines (see corpus_data.py) are taken day by day in calendar order, both lines
together: a day's trips run in parallel, and only trips of earlier days have been posted
before (history the server may learn from; `tracker learn` is run between days when the
server has it). Munich (packaged) and Delft (GPL, read from --realdata, skipped when
absent) follow.

Three baselines get the same plan and the same progress along its path at the same moments:
naive (remaining distance / the plan's average speed), schedule (the planned arrivals) and
trip pace (the plan's remaining time from the current progress, scaled by 1 + k(r - 1),
r = elapsed / planned time to the current progress clipped to 0.5-2, k = e / (e + 300 s)).
Printed by horizon (0-5, 5-15, 15-30, 30+ min): MAE, MAPE, bias (predicted - actual), share
within 1 and 2 min, the TransitApp ETA Accuracy Benchmark score and 80 % interval coverage.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import os
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import common
import corpus_data as cd
import httpx

from tracker.core import geo
from tracker.core.route.eta import PathIndex
from tracker.core.timeparse import parse_time

ROOT = Path(__file__).resolve().parents[1]
MUNICH = ROOT / "src" / "tracker" / "data" / "munich_drive.csv"
DELFT = "tracks/car_delft_gpsbabel_sbn-v13.gpx"
LINES = ("bus_alajuela-targuases", "bus_targuases-alajuela")
ADMIN = "eta-corpus-admin-token-0123456789"
DATABASE = os.environ.get("BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/eta_corpus")
CHUNK_S = 10.0
MODELS = ("ours", "naive", "schedule", "pace")
BUCKETS = ((0.0, 5.0), (5.0, 15.0), (15.0, 30.0), (30.0, None))
# TransitApp ETA Accuracy Benchmark: (horizon minutes, seconds early, seconds late).
TRANSIT = (
    (0.0, 3.0, 30.0, 90.0),
    (3.0, 6.0, 60.0, 150.0),
    (6.0, 10.0, 60.0, 210.0),
    (10.0, 15.0, 90.0, 270.0),
)
MAPE_MIN_S = 60.0


@dataclass(frozen=True, slots=True)
class Prediction:
    """One stop's ETAs at one moment: ours (with interval), the baselines', the truth."""

    group: str
    day: str
    made: float
    actual: float
    ours: float
    lo: float | None
    hi: float | None
    naive: float
    schedule: float
    pace: float

    def value(self, model: str) -> float:
        return float(getattr(self, model))


class Baselines:
    """The three baselines of one case, from the progress along the plan's path."""

    def __init__(self, case: cd.Case) -> None:
        proj = geo.LocalProjection.around(list(case.path))
        self.index = PathIndex(proj.line(case.path))
        self.proj = proj
        xy = proj.many_to_xy([(s.lat, s.lon) for s in case.stops])
        self.along = self.index.locate_in_order(xy, 25.0)
        start = case.planned_start.timestamp()
        self.start = start
        self.offsets = [
            s.planned_arrival.timestamp() - start
            for s in case.stops
            if s.planned_arrival is not None
        ]
        self.knots = [(0.0, 0.0), *zip(self.along, self.offsets, strict=True)]
        self.average = self.along[-1] / max(1.0, self.offsets[-1])
        self.progress_m = 0.0

    def planned_s(self, along: float) -> float:
        """Planned seconds from the start to `along`, interpolated between stops."""
        knots = self.knots
        for (a0, t0), (a1, t1) in itertools.pairwise(knots):
            if along <= a1:
                return t0 if a1 <= a0 else t0 + (t1 - t0) * (along - a0) / (a1 - a0)
        return knots[-1][1]

    def follow(self, lat: float, lon: float, dt: float) -> None:
        """Advance the progress with one fix (windowed, so loops do not jump)."""
        x, y = self.proj.to_xy(lat, lon)
        p = self.progress_m
        loc = self.index.locate(x, y, (p - 50.0, p + 300.0 + 40.0 * dt), (p, p + 40.0 * dt))
        if loc.offset_m > 60.0:
            # Lost (a gap, a detour): anywhere ahead, nearer ahead preferred.
            loc = self.index.locate(x, y, (p, self.index.length_m), (p, p), 1.0, 0.02)
        if loc.offset_m <= 60.0 and loc.along_m > p:
            self.progress_m = loc.along_m

    def predict(self, k: int, t: float) -> tuple[float, float, float]:
        """(naive, schedule, trip pace) ETAs of stop k at time t."""
        p = self.progress_m
        naive = t + max(0.0, self.along[k] - p) / self.average
        schedule = self.start + self.offsets[k]
        e = t - self.start
        done = self.planned_s(p)
        r = 1.0 if done <= 0.0 else min(2.0, max(0.5, e / done))
        kk = e / (e + 300.0) if e > 0 else 0.0
        pace = t + max(0.0, self.offsets[k] - done) * (1.0 + kk * (r - 1.0))
        return naive, schedule, pace


def _epoch(value: Any) -> float | None:
    return None if value is None else parse_time(value).timestamp()


async def run_case(
    client: httpx.AsyncClient, case: cd.Case, group: str, n: int, out: list[Prediction]
) -> dict[str, int]:
    """Replay one case through the API; append its predictions to `out`."""
    uid = f"corpus-{n:04d}"
    r = await client.post("/api/v1/devices", json={"name": case.trip.name, "unique_id": uid})
    r.raise_for_status()
    token = r.json()["token"]
    body = {
        "device": uid,
        "planned_start": case.planned_start.isoformat(),
        "stops": [
            {
                "lat": s.lat,
                "lon": s.lon,
                "name": s.name,
                "radius_m": s.radius_m,
                "service_s": s.service_s,
                "planned_arrival": None
                if s.planned_arrival is None
                else s.planned_arrival.isoformat(),
            }
            for s in case.stops
        ],
        "path": {"type": "LineString", "coordinates": [[lon, lat] for lat, lon in case.path]},
    }
    r = await client.post("/api/v1/routes", json=body)
    r.raise_for_status()
    route_id = r.json()["id"]
    base = Baselines(case)
    fixes = case.trip.fixes
    end = max(case.actual.values(), default=fixes[-1].time.timestamp()) + 60.0
    device_headers = {"Authorization": f"Bearer {token}"}
    counts = {"requests": 0, "missing": 0}
    i = 0
    last_t: float | None = None
    while i < len(fixes) and fixes[i].time.timestamp() <= end:
        t0 = fixes[i].time.timestamp()
        chunk = []
        while i < len(fixes) and fixes[i].time.timestamp() < t0 + CHUNK_S:
            f = fixes[i]
            t = f.time.timestamp()
            base.follow(f.lat, f.lon, 0.0 if last_t is None else t - last_t)
            last_t = t
            ping: dict[str, Any] = {"time": f.time.isoformat(), "lat": f.lat, "lon": f.lon}
            if f.speed is not None:
                ping["speed"] = f.speed
            if f.accuracy is not None:
                ping["accuracy"] = f.accuracy
            chunk.append(ping)
            i += 1
        r = await client.post(
            "/api/v1/positions", json={"positions": chunk}, headers=device_headers
        )
        if r.status_code != 202:
            raise RuntimeError(f"ingest answered {r.status_code}: {r.text[:200]}")
        route = (await client.get(f"/api/v1/routes/{route_id}")).json()
        counts["requests"] += 2
        t = last_t
        assert t is not None
        for k, stop in enumerate(route["stops"]):
            actual = case.actual.get(k + 1)
            if actual is None or actual <= t:
                continue
            ours = _epoch(stop.get("eta"))
            if ours is None:
                counts["missing"] += 1
                continue
            naive, schedule, pace = base.predict(k, t)
            out.append(
                Prediction(
                    group,
                    case.day.isoformat(),
                    t,
                    actual,
                    ours,
                    _epoch(stop.get("eta_earliest")),
                    _epoch(stop.get("eta_latest")),
                    naive,
                    schedule,
                    pace,
                )
            )
    return counts


def learn(database_url: str) -> bool:
    """Run the server's learning job once (`tracker learn`), if this version has it."""
    env = {**os.environ, "DATABASE_URL": database_url}
    done = subprocess.run(
        [str(common.TRACKER), "learn", "--quiet-s", "0"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    return done.returncode == 0


async def run_all(
    base_url: str, groups: Sequence[tuple[str, list[cd.Case]]], parallel: int
) -> tuple[list[Prediction], dict[str, int]]:
    """Every case, a calendar day at a time (both lines), `parallel` trips at once."""
    out: list[Prediction] = []
    totals: dict[str, int] = defaultdict(int)
    headers = {"Authorization": f"Bearer {ADMIN}"}
    limits = httpx.Limits(max_connections=parallel * 2)
    async with httpx.AsyncClient(
        base_url=base_url, headers=headers, timeout=60, limits=limits
    ) as client:
        sem = asyncio.Semaphore(parallel)
        n = 0

        async def one(case: cd.Case, group: str, k: int) -> None:
            async with sem:
                counts = await run_case(client, case, group, k, out)
            for key, v in counts.items():
                totals[key] += v

        for group, cases in groups:
            by_day: dict[str, list[cd.Case]] = defaultdict(list)
            for c in cases:
                by_day[c.day.isoformat()].append(c)
            learned = 0
            for day in sorted(by_day):
                jobs = []
                for c in by_day[day]:
                    jobs.append(one(c, group if group != "labexp" else c.line, n))
                    n += 1
                await asyncio.gather(*jobs)
                if await asyncio.to_thread(learn, DATABASE):
                    learned += 1
            totals[f"learn runs ({group})"] = learned
    return out, dict(totals)


# -- figures ----------------------------------------------------------------------------------


def _in(h_min: float, lo: float, hi: float | None) -> bool:
    return h_min >= lo and (hi is None or h_min < hi)


def figures(preds: Sequence[Prediction], model: str) -> dict[str, float]:
    """MAE, MAPE, bias, within 1/2 min, TransitApp score, coverage of one set."""
    if not preds:
        return {}
    errors = [p.value(model) - p.actual for p in preds]
    n = len(errors)
    rel = [
        abs(e) / (p.actual - p.made)
        for e, p in zip(errors, preds, strict=True)
        if p.actual - p.made >= MAPE_MIN_S
    ]
    out = {
        "n": float(n),
        "mae_s": sum(abs(e) for e in errors) / n,
        "mape": sum(rel) / len(rel) if rel else math.nan,
        "bias_s": sum(errors) / n,
        "within_1min": sum(abs(e) <= 60 for e in errors) / n,
        "within_2min": sum(abs(e) <= 120 for e in errors) / n,
    }
    shares = []
    for lo, hi, early, late in TRANSIT:
        group = [p for p in preds if _in((p.actual - p.made) / 60.0, lo, hi)]
        if group:
            ok = sum(-early <= p.actual - p.value(model) <= late for p in group)
            shares.append(ok / len(group))
    out["transit_score"] = sum(shares) / len(shares) if shares else math.nan
    if model == "ours":
        held = [p for p in preds if p.lo is not None and p.hi is not None]
        out["coverage80"] = (
            sum(p.lo <= p.actual <= p.hi for p in held) / len(held)  # type: ignore[operator]
            if held
            else math.nan
        )
    return out


def table(preds: Sequence[Prediction]) -> dict[str, dict[str, dict[str, float]]]:
    """{bucket: {model: figures}} with an "all" bucket."""
    rows: dict[str, dict[str, dict[str, float]]] = {}
    buckets: list[tuple[str, Sequence[Prediction]]] = [("all", preds)]
    for lo, hi in BUCKETS:
        label = f"{lo:g}-{hi:g} min" if hi is not None else f"{lo:g}+ min"
        buckets.append((label, [p for p in preds if _in((p.actual - p.made) / 60.0, lo, hi)]))
    for label, group in buckets:
        rows[label] = {m: figures(group, m) for m in MODELS}
    return rows


def _fmt(value: float | None, kind: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if kind == "s":
        return f"{value:.0f}"
    return f"{100 * value:.1f}%"


METRICS = (
    ("mae_s", "MAE s", "s"),
    ("mape", "MAPE", "%"),
    ("bias_s", "bias s", "s"),
    ("within_1min", "±1 min", "%"),
    ("within_2min", "±2 min", "%"),
    ("transit_score", "TransitApp", "%"),
)


def print_table(title: str, rows: dict[str, dict[str, dict[str, float]]]) -> None:
    """One block per metric: rows are horizons, columns ours and the three baselines."""
    print(f"\n## {title}")
    n = {b: int(rows[b]["ours"].get("n", 0)) for b in rows}
    print(f"{'predictions':<14}" + "".join(f"{b:>12}" for b in rows))
    print(f"{'':<14}" + "".join(f"{n[b]:>12}" for b in rows))
    for key, label, kind in METRICS:
        print(f"{label}")
        for m in MODELS:
            cells = [_fmt(rows[b][m].get(key), kind) for b in rows]
            print(f"  {m:<12}" + "".join(f"{c:>12}" for c in cells))
    cov = [_fmt(rows[b]["ours"].get("coverage80"), "%") for b in rows]
    print("80% interval coverage (ours)")
    print(f"  {'ours':<12}" + "".join(f"{c:>12}" for c in cov))


def spread_table(preds: Sequence[Prediction]) -> list[tuple[float, int, float, float]]:
    """(horizon s, n, q10, q90) of (actual time to go) / (our predicted time to go), for
    predicted horizons near each of the interval table's horizons: what calibrates it."""
    out = []
    for h in (60.0, 300.0, 900.0, 1800.0, 3600.0):
        ratios = sorted(
            (p.actual - p.made) / (p.ours - p.made)
            for p in preds
            if h / 1.6 <= p.ours - p.made <= h * 1.6
        )
        if len(ratios) >= 20:
            q = len(ratios) - 1
            out.append((h, len(ratios), ratios[int(0.1 * q)], ratios[int(0.9 * q)]))
    return out


def by_day(preds: Sequence[Prediction]) -> list[tuple[str, str, dict[str, float]]]:
    """MAE of every model per (group, day)."""
    days: dict[tuple[str, str], list[Prediction]] = defaultdict(list)
    for p in preds:
        days[(p.group, p.day)].append(p)
    out = []
    for (g, d), group in sorted(days.items()):
        out.append((g, d, {m: figures(group, m)["mae_s"] for m in MODELS}))
    return out


def chart(rows_by_group: dict[str, dict[str, dict[str, dict[str, float]]]], path: Path) -> None:
    """MAE by horizon, ours against the baselines, one panel per data set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(rows_by_group)
    fig, axes = plt.subplots(1, len(groups), figsize=(5 * len(groups), 4), squeeze=False)
    for ax, g in zip(axes[0], groups, strict=True):
        rows = rows_by_group[g]
        labels = [b for b in rows if b != "all" and rows[b]["ours"]]
        width = 0.2
        for j, m in enumerate(MODELS):
            values = [rows[b][m]["mae_s"] for b in labels]
            ax.bar([i + (j - 1.5) * width for i in range(len(labels))], values, width, label=m)
        ax.set_xticks(range(len(labels)), labels)
        ax.set_title(g)
        ax.set_ylabel("MAE (s)")
        ax.set_xlabel("horizon")
    axes[0][0].legend()
    fig.suptitle("ETA error by horizon: ours vs naive, schedule and trip-pace baselines")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("labexp", type=Path, help="folder of trazas-transporte-publico")
    shared = next((p for p in (ROOT.parent, ROOT.parents[1]) if (p / "shared").is_dir()), ROOT)
    ap.add_argument("--realdata", type=Path, default=shared / "shared" / "realdata")
    ap.add_argument("--chart", type=Path, default=ROOT / "bench" / "eta_corpus.png")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--parallel", type=int, default=8)
    ap.add_argument("--lines", nargs="*", default=list(LINES))
    ap.add_argument("--max-days", type=int, default=0, help="test only the first N days")
    args = ap.parse_args()

    began = time.time()
    bus: list[cd.Case] = []
    for line in args.lines:
        cases, plan_trip, n_stops = cd.line_cases(args.labexp / line)
        print(
            f"{line}: {n_stops} stops, plan {plan_trip.name} ({plan_trip.day}), "
            f"{len(cases)} test trips on {len({c.day for c in cases})} days"
        )
        bus.extend(cases)
    if args.max_days:
        keep = sorted({c.day for c in bus})[: args.max_days]
        bus = [c for c in bus if c.day in keep]
    drives = [cd.drive_case("munich", MUNICH)]
    delft = args.realdata / DELFT
    if delft.exists():
        drives.append(cd.drive_case("delft", delft))
    else:
        print(f"(Delft drive not found at {delft}: skipped)")
    groups: list[tuple[str, list[cd.Case]]] = [("labexp", bus)]
    groups += [(c.line, [c]) for c in drives]
    # Learning runs between days only (`tracker learn`), so no day learns from itself.
    env = {"TRACKER_COMMIT_INTERVAL_MS": "1", "TRACKER_LEARN_INTERVAL_S": "0"}
    with common.running_server(DATABASE, ADMIN, env_overrides=env) as server:
        preds, totals = asyncio.run(run_all(server.base, groups, args.parallel))
    elapsed = time.time() - began

    rows_by_group: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    names = sorted({p.group for p in preds}, key=lambda g: (g not in LINES, g))
    pooled = [p for p in preds if p.group in LINES]
    if pooled:
        rows_by_group["bus lines pooled"] = table(pooled)
        print_table(
            "bus lines pooled (labexp, development routes)", rows_by_group["bus lines pooled"]
        )
    for g in names:
        rows_by_group[g] = table([p for p in preds if p.group == g])
        print_table(g, rows_by_group[g])
    print("\n## MAE s by day (ours / naive / schedule / pace)")
    wins = defaultdict(int)
    days = by_day(preds)
    for g, d, mae in days:
        best = min(MODELS[1:], key=lambda m: mae[m])
        mark = "win" if mae["ours"] < mae[best] else f"LOSE to {best}"
        wins[mark == "win"] += 1
        cells = " / ".join(f"{mae[m]:.0f}" for m in MODELS)
        print(f"  {g:<24}{d:<12}{cells:<26}{mark}")
    print(f"ours beats every baseline on {wins[True]} of {len(days)} days")
    print("\n## interval calibration (bus lines): actual / predicted time to go, by horizon")
    for h, n, q10, q90 in spread_table(pooled):
        print(f"  {h:>6.0f} s  n={n:<7} q10={q10:.2f}  q90={q90:.2f}")
    print(f"\n{len(preds)} predictions, {totals}, {elapsed:.0f} s wall (busy shared machine)")
    chart(rows_by_group, args.chart)
    print(f"chart: {args.chart}")
    if args.json:
        args.json.write_text(
            json.dumps({"tables": rows_by_group, "by_day": days, "totals": totals}, indent=1)
        )


if __name__ == "__main__":
    sys.exit(main())
