"""The planner's optimiser on the 56 Solomon VRPTW instances (100 customers each).

Each instance goes through the same code as a real plan: its customers become orders
(a window, a service time, a size in one unit), its fleet becomes vehicles at the depot
with the depot's opening hours as their shift, `tracker.planning.problem.build` makes the
problem, `tracker.planning.solver.solve` runs VROOM and `tracker.planning.solution.read`
reads the answer. As in the literature's integer variant (and LKH-3's files), distances
and travel times are floor(10 × Euclidean distance) and windows and service times are
scaled by 10; the fleet is capped at the instance's vehicle count.

    .venv/bin/python bench/vrp_bench.py [--dir ../shared/bench/solomon] [--exploration 5]
                                        [--only C1,R2] [--json out.json]

Prints per instance the customers served, cost, best known, gap and seconds, then:
instances fully served, gap to the best known (mean / median / max) and mean time.
The instances are read from the shared benchmark folder beside the checkout (never
copied into this repository). Best known = the lowest cost in lkh3_tours.txt.
"""

from __future__ import annotations

import argparse
import math
import re
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock
from pathlib import Path

import numpy as np
import orjson

from tracker.planning import problem as vrp
from tracker.planning import solution, solver
from tracker.planning.model import Depot, Order, Vehicle, Window

ROOT = Path(__file__).resolve().parents[1]
DAY = date(2026, 1, 5)
T0 = datetime.combine(DAY, clock(), tzinfo=UTC)


@dataclass
class Instance:
    name: str
    vehicles: int
    capacity: int
    coords: list[tuple[float, float]]
    demand: list[int]
    windows: list[tuple[int, int]]
    service: int


def read_instance(path: Path) -> Instance:
    """LKH-3's CVRPTW text format (node 1 is the depot)."""
    head: dict[str, str] = {}
    sections: dict[str, list[list[str]]] = {}
    current = None
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line == "EOF":
            continue
        if line.endswith("_SECTION"):
            current = line
            sections[current] = []
        elif ":" in line and current is None:
            key, value = line.split(":", 1)
            head[key.strip()] = value.strip()
        elif current is not None:
            sections[current].append(line.split())
    coords = [(float(r[1]), float(r[2])) for r in sections["NODE_COORD_SECTION"]]
    demand = [int(r[1]) for r in sections["DEMAND_SECTION"]]
    windows = [(int(r[1]), int(r[2])) for r in sections["TIME_WINDOW_SECTION"]]
    return Instance(
        head["NAME"],
        int(head["VEHICLES"]),
        int(head["CAPACITY"]),
        coords,
        demand,
        windows,
        int(head["SERVICE_TIME"]),
    )


def best_known(path: Path) -> dict[str, int]:
    """Lowest cost per instance name from lines like `R101.100.20.16377.tour`."""
    best: dict[str, int] = {}
    for line in path.read_text().split():
        m = re.match(r"^(\w+)\.\d+\.\d+\.(\d+)\.tour$", line)
        if m:
            best[m.group(1)] = min(best.get(m.group(1), 10**12), int(m.group(2)))
    return best


def as_plan(inst: Instance) -> tuple[vrp.Problem, np.ndarray]:
    """The instance as orders, a depot and vehicles, and its scaled integer matrix."""
    scale = 10
    at = lambda s: T0 + timedelta(seconds=s * scale)  # noqa: E731
    made = T0
    orders = [
        Order(
            id=k,
            external_id=str(k),
            kind="delivery",
            lat=0.0,
            lon=0.0,
            address="",
            recipient="",
            phone="",
            email="",
            windows=(Window(at(inst.windows[k][0]), at(inst.windows[k][1])),),
            service_s=inst.service * scale,
            size={"units": float(inst.demand[k])},
            skills=(),
            priority=0,
            notes="",
            date=DAY,
            status="unplanned",
            geocode_status="given",
            geocode_candidates=(),
            route_id=None,
            stop_id=None,
            created_at=made,
            updated_at=made,
        )
        for k in range(1, len(inst.coords))
    ]
    depot = Depot(1, "depot", 0.0, 0.0, "", made, made)
    close = at(inst.windows[0][1])
    vehicles = [
        Vehicle(
            id=k + 1,
            name=f"v{k + 1}",
            device_id=None,
            device=None,
            capacity={"units": float(inst.capacity)},
            shift_start=clock(0),
            shift_end=close.time(),
            time_zone="UTC",
            start_depot_id=1,
            end_depot_id=1,
            skills=(),
            max_duration_s=None,
            active=True,
            created_at=made,
            updated_at=made,
        )
        for k in range(inst.vehicles)
    ]
    problem = vrp.build(DAY, orders, vehicles, {1: depot})
    # Location 0 is the depot, then the orders in id order: the instance's node order.
    xy = np.array(inst.coords)
    diff = xy[:, None, :] - xy[None, :, :]
    seconds = np.floor(10.0 * np.sqrt((diff**2).sum(axis=2))).astype(np.int64)
    return problem, seconds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--dir", default=str(ROOT.parent / "shared" / "bench" / "solomon"))
    ap.add_argument("--exploration", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", default="", help="comma-separated name prefixes (C1,R2,RC101)")
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()
    folder = Path(args.dir)
    if not folder.is_dir():
        print(f"no Solomon instances at {folder} (give --dir)", file=sys.stderr)
        return 2
    best = best_known(folder / "lkh3_tours.txt")
    prefixes = [p for p in args.only.split(",") if p]
    files = sorted(folder.glob("*.vrptw"))
    files = [f for f in files if not prefixes or any(f.name.startswith(p) for p in prefixes)]
    options = solver.SolverOptions(exploration=args.exploration, threads=args.threads)
    rows = []
    print(
        f"{'instance':10} {'served':>7} {'vans':>5} {'cost':>7} {'best':>7} {'gap %':>7} {'s':>6}"
    )
    for path in files:
        inst = read_instance(path)
        problem, seconds = as_plan(inst)
        began = time.perf_counter()
        answer = solver.solve(problem, seconds, options)
        plan = solution.read(problem, answer, seconds)
        took = time.perf_counter() - began
        served = sum(len(r.stops) for r in plan.routes)
        cost = sum(r.travel_s for r in plan.routes)
        known = best[inst.name]
        gap = 100.0 * (cost - known) / known
        rows.append(
            {
                "instance": inst.name,
                "served": served,
                "customers": len(inst.coords) - 1,
                "vehicles": len(plan.routes),
                "cost": cost,
                "best": known,
                "gap_pct": gap,
                "seconds": took,
            }
        )
        print(
            f"{inst.name:10} {served:>3}/{len(inst.coords) - 1:<3} {len(plan.routes):>5} "
            f"{cost:>7} {known:>7} {gap:>7.2f} {took:>6.2f}",
            flush=True,
        )
    full = [r for r in rows if r["served"] == r["customers"]]
    gaps = [r["gap_pct"] for r in full]
    summary = {
        "instances": len(rows),
        "fully_served": len(full),
        "gap_mean_pct": statistics.fmean(gaps) if gaps else math.nan,
        "gap_median_pct": statistics.median(gaps) if gaps else math.nan,
        "gap_max_pct": max(gaps) if gaps else math.nan,
        "seconds_mean": statistics.fmean(r["seconds"] for r in rows) if rows else math.nan,
        "exploration": args.exploration,
        "threads": args.threads,
    }
    print(
        f"\nfully served {summary['fully_served']}/{summary['instances']}; gap to best known "
        f"(fully served): mean {summary['gap_mean_pct']:.2f} %, median "
        f"{summary['gap_median_pct']:.2f} %, max {summary['gap_max_pct']:.2f} %; "
        f"mean {summary['seconds_mean']:.2f} s per instance "
        f"(exploration {args.exploration}, {args.threads} threads)"
    )
    if args.json:
        Path(args.json).write_bytes(orjson.dumps({"summary": summary, "instances": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
