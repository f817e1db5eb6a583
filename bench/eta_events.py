"""How many `stop.eta_changed` events a drive makes, and how accurate the ETAs they show are.

    PYTHONPATH=src .venv/bin/python bench/eta_events.py [--labexp /work/labexp] [--max-trips 10]

Replays each drive through the route state machine in process (no server, no database):
the Munich drive (packaged), the Delft drive (from ../shared/realdata when present), and
the trips of the two development bus lines of the labexp folder when it is given (read in
place, never copied). Prints per drive: hours driven, ETA events, events per van-hour and
per stop-hour (a stop's hours from the start to its arrival), and the live accuracy the
server would measure (`core.accuracy`: what the events showed, scored at each arrival;
the truth is when the track first came within the stop's radius).
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from corpus_data import Case, drive_case, line_cases

from tracker.core import accuracy as acc
from tracker.core.model import EventType, Route
from tracker.core.route import progress as prog
from tracker.core.timeparse import parse_time

ROOT = Path(__file__).resolve().parents[1]
MUNICH = ROOT / "src" / "tracker" / "data" / "munich_drive.csv"
DELFT = "tracks/car_delft_gpsbabel_sbn-v13.gpx"
LINES = ("bus_alajuela-targuases", "bus_targuases-alajuela")


def _epoch(value: object) -> float | None:
    return None if value is None else parse_time(str(value)).timestamp()


def replay(case: Case, cfg: prog.EtaConfig) -> tuple[float, int, float, list[acc.Sample]]:
    """Hours, ETA events, stop-hours, and the accuracy samples of one case."""
    route = Route(
        id=1,
        device_id=1,
        planned_start=case.planned_start,
        stops=tuple(case.stops),
        path=case.path,
    )
    plan = prog.plan(route)
    state = prog.start(plan)
    shown: dict[int, list[acc.Shown]] = defaultdict(list)
    count = 0
    for fix in case.trip.fixes:
        state, events, _ = prog.step(plan, state, fix, cfg)
        for e in events:
            if e.type == EventType.ETA_CHANGED and e.stop_id is not None:
                count += 1
                eta = _epoch(e.data["eta"])
                assert eta is not None
                shown[e.stop_id].append(
                    acc.Shown(
                        e.time.timestamp(),
                        eta,
                        _epoch(e.data.get("eta_earliest")),
                        _epoch(e.data.get("eta_latest")),
                    )
                )
    fixes = case.trip.fixes
    start = fixes[0].time.timestamp()
    hours = (fixes[-1].time.timestamp() - start) / 3600.0
    samples: list[acc.Sample] = []
    stop_hours = 0.0
    for stop in case.stops:
        arrived = case.actual.get(stop.seq)
        if arrived is None:
            continue
        stop_hours += (arrived - start) / 3600.0
        samples += acc.score(shown.get(stop.id, []), arrived)
    return hours, count, stop_hours, samples


def cases(labexp: str | None, realdata: Path, max_trips: int) -> Iterable[tuple[str, list[Case]]]:
    yield "munich", [drive_case("munich", MUNICH)]
    delft = realdata / DELFT
    if delft.exists():
        yield "delft", [drive_case("delft", delft)]
    if labexp:
        for line in LINES:
            found, _, _ = line_cases(Path(labexp) / line)
            yield line, found[:max_trips]


def _f(v: float | None, pct: bool = False) -> str:
    if v is None:
        return "-"
    return f"{100 * v:.0f}%" if pct else f"{v:.0f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--labexp", default=None, help="the labexp trazas-transporte-publico folder")
    ap.add_argument("--realdata", default=str(ROOT.parent / "shared" / "realdata"))
    ap.add_argument("--max-trips", type=int, default=10, help="trips per bus line")
    ap.add_argument(
        "--set", action="append", default=[], metavar="NAME=VALUE", help="an EtaConfig field"
    )
    args = ap.parse_args()
    cfg = prog.EtaConfig()
    for item in args.set:
        name, _, value = item.partition("=")
        cfg = replace(cfg, **{name: float(value)})
    print(
        f"{'drive':24} {'trips':>5} {'hours':>6} {'events':>7} {'/van-h':>7} {'/stop-h':>7}  "
        "MAE by horizon 0-5/5-15/15-30/30+ (s) | coverage | TransitApp score"
    )
    for name, group in cases(args.labexp, Path(args.realdata), args.max_trips):
        hours = stop_hours = 0.0
        events = 0
        samples: list[acc.Sample] = []
        for case in group:
            h, n, sh, s = replay(case, cfg)
            hours += h
            events += n
            stop_hours += sh
            samples += s
        by_h: dict[int, acc.Totals] = defaultdict(acc.Totals)
        for s in samples:
            by_h[s.horizon_s].add(acc.Totals.of([s]))
        rep = acc.report(by_h)
        maes = "/".join(_f(b.mae_s) for b in rep.buckets)
        print(
            f"{name:24} {len(group):5d} {hours:6.2f} {events:7d} {events / hours:7.0f} "
            f"{events / max(stop_hours, 1e-9):7.1f}  {maes:>22} | "
            f"{_f(rep.overall.coverage, True):>4} | {_f(rep.score, True)}"
        )


if __name__ == "__main__":
    main()
