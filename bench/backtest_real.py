"""ETA accuracy on the two real recorded drives, ours against the naive baseline.

    .venv/bin/python bench/backtest_real.py [--realdata ../shared/realdata]

- Munich (Apache-2.0, packaged as src/tracker/data/munich_drive.csv): 20 min, 2 stops.
- Delft (GPL-2.0, so never copied into this repository): read from the shared real-data
  folder when it is there, skipped with a note when it is not.

Stops are detected where the vehicle dwelled (60 s within 30 m) and the end of the drive is
the destination; the planned path is the track itself. One EtaConfig for both drives. For
each drive it prints the full report with the default, calibrated plan (the destination
planned at its actual arrival, so the baseline knows the drive's true average speed), the
same with a fixed planned speed of 30 km/h (plus the detected stops' 60 s of planned
service, which the baseline's average planned speed includes too), and the MAE per
horizon for other fixed planned speeds, so the comparison does not hinge on one guess.
It ends with the MAE table of both plans on both drives, ours vs the baseline.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tracker.core.route import progress as prog
from tracker.tools import backtest as bt
from tracker.tools.tracks import read_track

ROOT = Path(__file__).resolve().parents[1]
MUNICH = ROOT / "src" / "tracker" / "data" / "munich_drive.csv"
DELFT = "tracks/car_delft_gpsbabel_sbn-v13.gpx"


def summary(result: bt.Result) -> str:
    cells = []
    for o, b in zip(result.table("ours"), result.table("baseline"), strict=True):
        if o.n and o.label != "all":
            mark = "<" if o.mae_s < b.mae_s else ">="
            cells.append(f"{o.label} {o.mae_s:4.0f} {mark} {b.mae_s:4.0f}")
    return " | ".join(cells)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--realdata", default=str(ROOT.parent / "shared" / "realdata"))
    args = ap.parse_args()
    drives = [("munich_drive.csv", MUNICH)]
    delft = Path(args.realdata) / DELFT
    if delft.exists():
        drives.append((delft.name, delft))
    else:
        print(f"(Delft drive not found at {delft}: skipped)\n")

    cfg = prog.EtaConfig()
    verdicts = []
    rows = []
    for name, path in drives:
        fixes = read_track(path)
        calibrated = bt.replay(bt.scenario(fixes, calibrate=True), cfg)
        fixed = bt.replay(bt.scenario(fixes), cfg)
        print("=" * 78)
        print(bt.format_result(calibrated, name))
        print()
        print(
            f"-- the same with a fixed planned speed of {cfg.planned_speed_mps * 3.6:.0f} km/h --"
        )
        print(bt.format_result(fixed, name))
        print()
        print("-- MAE s by horizon, ours vs baseline, for fixed planned speeds --")
        for kmh in (20, 30, 40, 50):
            r = bt.replay(bt.scenario(fixes), prog.EtaConfig(planned_speed_mps=kmh / 3.6))
            print(f"{kmh:3d} km/h: {summary(r)}")
        print()
        verdicts.append((name, "calibrated plan", bt.beats_baseline(calibrated)))
        verdicts.append((name, "30 km/h plan", bt.beats_baseline(fixed)))
        rows.append(("calibrated", name, calibrated))
        rows.append(("fixed 30 km/h", name, fixed))
    print("=" * 78)
    print("MAE s by horizon, ours vs baseline (n = predictions per bucket)")
    print(f"{'plan':<15}{'drive':<34}" + "".join(f"{bt.bucket_label(*b):>22}" for b in bt.BUCKETS))
    for plan_name, name, result in sorted(rows, key=lambda r: r[0]):
        cells = []
        for o, b in zip(result.table("ours"), result.table("baseline"), strict=True):
            if o.label == "all":
                continue
            cell = "-" if not o.n else f"{o.mae_s:.0f} vs {b.mae_s:.0f} (n={o.n})"
            cells.append(f"{cell:>22}")
        print(f"{plan_name:<15}{name:<34}" + "".join(cells))
    print()
    for name, mode, ok in verdicts:
        print(
            f"{name} ({mode}): {'ours beats' if ok else 'ours does NOT beat'} the baseline "
            "in every horizon bucket"
        )


if __name__ == "__main__":
    main()
