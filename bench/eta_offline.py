"""The ETA corpus benchmark offline: the same bus trips, the pure route core run directly.

    PYTHONPATH=src .venv/bin/python bench/eta_offline.py /path/to/trazas-transporte-publico \
        [--lines ...] [--workers 2] [--no-history] [--by-day] [--json out.json]

`bench/eta_corpus.py` scores the server through its public API, which takes a long while;
this replays the same cases (`corpus_data.line_cases`) through `progress.plan/start/step`
in-process, so a change to the model can be scored in a minute or two. It mimics what the
server does between the fixes and the ETAs a client reads:

- a day's trips only have the earlier days' trips as history (both lines pooled, like the
  server's shared `learned_cells`): the crossings of every fix a trip posted, folded into
  cell statistics after its day, and a plan built with the snapshot of its path's cells;
- fixes come in 10 s requests, the ETAs read after each; the server stores a route's ETAs
  only after a request that produced events, so a read returns the ETAs of the last such
  request (the stop being served reads its arrival time).

The baselines, figures and tables are eta_corpus's own (imported), so the two print the
same table for the same predictions; differences left are the server's filters and its
rounding of stored times.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import corpus_data as cd
import eta_corpus as ec

from tracker.core.model import Route
from tracker.core.route import history as hist
from tracker.core.route import progress

Sums = dict[tuple[int, int, int, int], list[float]]


def snapshot_of(sums: Sums, path: Sequence[tuple[float, float]]) -> hist.Snapshot:
    """What the store's `learning.snapshot` returns for a path, from summed crossings."""
    cells = hist.cells_of_path(path)
    out: dict[tuple[int, int, int], list[hist.CellStats]] = defaultdict(list)
    for (cy, cx, heading, how), (n, s1, s2) in sums.items():
        if (cy, cx) in cells:
            out[(cy, cx, heading)].append(hist.CellStats(how, int(n), s1, s2))
    return dict(out)


def add_crossings(sums: Sums, crossings: Sequence[hist.Crossing]) -> None:
    """Fold crossings in, as the store's `add_crossings` does."""
    for c in crossings:
        s = sums.setdefault((c.cell_y, c.cell_x, c.heading, c.hour_of_week), [0.0, 0.0, 0.0])
        v = c.log_pace
        s[0] += 1
        s[1] += v
        s[2] += v * v


def run_case(
    case: cd.Case, snap: hist.Snapshot | None, cfg: progress.EtaConfig
) -> tuple[list[ec.Prediction], list[tuple[float, float, float]]]:
    """One trip: its predictions, and the track the server would learn from afterwards."""
    stops = tuple(replace(s, id=100 + s.seq) for s in case.stops)
    route = Route(1, 1, case.planned_start, stops, case.path)
    plan = progress.plan(route, snap or None)
    state = progress.start(plan)
    base = ec.Baselines(case)
    fixes = case.trip.fixes
    end = max(case.actual.values(), default=fixes[-1].time.timestamp()) + 60.0
    out: list[ec.Prediction] = []
    track: list[tuple[float, float, float]] = []
    saved: list[tuple[float | None, float | None, float | None]] | None = None
    i = 0
    last_t: float | None = None
    while i < len(fixes) and fixes[i].time.timestamp() <= end:
        t0 = fixes[i].time.timestamp()
        events = 0
        latest = None
        while i < len(fixes) and fixes[i].time.timestamp() < t0 + ec.CHUNK_S:
            f = fixes[i]
            t = f.time.timestamp()
            base.follow(f.lat, f.lon, 0.0 if last_t is None else t - last_t)
            last_t = t
            track.append((t, f.lat, f.lon))
            state, evs, upd = progress.step(plan, state, f, cfg)
            events += len(evs)
            latest = upd or latest
            i += 1
        if latest is not None and events:
            saved = [
                (
                    None if e.eta is None else e.eta.timestamp(),
                    None if e.eta_earliest is None else e.eta_earliest.timestamp(),
                    None if e.eta_latest is None else e.eta_latest.timestamp(),
                )
                for e in latest.etas
            ]
        if saved is None:
            continue
        assert last_t is not None
        t = last_t
        for k, (eta, lo, hi) in enumerate(saved):
            actual = case.actual.get(k + 1)
            if actual is None or actual <= t or eta is None:
                continue
            naive, schedule, pace = base.predict(k, t)
            out.append(
                ec.Prediction(
                    case.line, case.day.isoformat(), t, actual, eta, lo, hi, naive, schedule, pace
                )
            )
    return out, track


def _job(
    args: tuple[cd.Case, hist.Snapshot | None],
) -> tuple[list[ec.Prediction], list[tuple[float, float, float]]]:
    return run_case(args[0], args[1], progress.EtaConfig())


def run_all(cases: Sequence[cd.Case], workers: int, history: bool = True) -> list[ec.Prediction]:
    """Every case, a calendar day at a time, learning between days."""
    by_day: dict[str, list[cd.Case]] = defaultdict(list)
    for c in cases:
        by_day[c.day.isoformat()].append(c)
    sums: Sums = {}
    preds: list[ec.Prediction] = []
    with ProcessPoolExecutor(workers) as pool:
        for day in sorted(by_day):
            jobs = [(c, snapshot_of(sums, c.path) if history else None) for c in by_day[day]]
            results = list(pool.map(_job, jobs))
            for p, track in results:
                preds.extend(p)
                add_crossings(sums, hist.crossings(track))
    return preds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("labexp", type=Path, help="folder of trazas-transporte-publico")
    ap.add_argument("--lines", nargs="*", default=list(ec.LINES))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--no-history", action="store_true", help="plans without learned cells")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--by-day", action="store_true", help="print the MAE of every day")
    args = ap.parse_args()
    began = time.time()
    cases: list[cd.Case] = []
    for line in args.lines:
        line_cases, _plan, _n = cd.line_cases(args.labexp / line)
        cases.extend(line_cases)
    preds = run_all(cases, args.workers, not args.no_history)
    rows = ec.table(preds)
    ec.print_table("bus lines pooled (offline core)", rows)
    for line in args.lines:
        ec.print_table(line, ec.table([p for p in preds if p.group == line]))
    if args.by_day:
        print("\n## MAE s by day (ours / naive / schedule / pace)")
        for g, d, mae in ec.by_day(preds):
            print(f"  {g:<24}{d:<12}" + " / ".join(f"{mae[m]:.0f}" for m in ec.MODELS))
    print("\n## interval calibration: actual / predicted time to go, by horizon")
    for h, n, q10, q90 in ec.spread_table(preds):
        print(f"  {h:>6.0f} s  n={n:<7} q10={q10:.2f}  q90={q90:.2f}")
    print(f"\n{len(preds)} predictions, {time.time() - began:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"tables": {"pooled": rows}}, indent=1))


if __name__ == "__main__":
    sys.exit(main())
