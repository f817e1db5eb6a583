"""Planning a day end to end on a real road network (Andorra), and on straight lines.

A `tracker serve` process on a fresh database; two depots and 10 or 40 vans (08:00-18:00,
60 parcels each) and 200 or 1,000 orders at random places on the network (six in ten with
a two-hour window, one to three parcels, two to four minutes of service), all through the
HTTP API. Each plan is one `POST /api/v1/plans`; the figures are its wall time as the
client sees it and the server's own split: the travel-time matrix (pgRouting, or straight
lines), the VROOM solve, and the road paths of the routes. First on straight lines (no
roads loaded), then after `tracker roads import` of the Andorra extract. Finally the
1,000-order plan is dispatched and new orders are inserted one at a time into the 40 live
routes (`POST /api/v1/replan/insert`).

    .venv/bin/python bench/plan_bench.py [--osm ../shared/realdata/osm/andorra.osm.pbf]
        [--exploration 0] [--inserts 20] [--sizes 200x10,1000x40] [--json out.json]

Targets: a 200-order plan end to end <= 5 s, a 1,000-order plan <= 60 s, inserting one
order into live routes <= 200 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import add_devices, print_results, running_server

from tracker.store.db import create_pool
from tracker.tools.roads import import_file

ROOT = Path(__file__).resolve().parents[1]
ADMIN = "plan-bench-admin"
DB = "postgresql://postgres@127.0.0.1:5432/tracker_plan_bench"
TZ = ZoneInfo("Europe/Andorra")
# Andorra la Vella and Encamp: the depots.
DEPOTS = [(42.5075, 1.5218), (42.5343, 1.5806)]


def sample_places(
    vertices: list[tuple[float, float]], n: int, rng: random.Random
) -> list[tuple[float, float]]:
    """`n` places near road junctions (within ~30 m)."""
    return [
        (lat + rng.uniform(-0.0003, 0.0003), lon + rng.uniform(-0.0003, 0.0003))
        for lat, lon in (rng.choice(vertices) for _ in range(n))
    ]


def orders_for(
    day: date, places: list[tuple[float, float]], rng: random.Random
) -> list[dict[str, Any]]:
    out = []
    for k, (lat, lon) in enumerate(places):
        body: dict[str, Any] = {
            "external_id": f"bench-{day}-{k}",
            "lat": lat,
            "lon": lon,
            "recipient": f"Customer {k}",
            "service_s": rng.choice((120, 180, 240)),
            "size": {"parcels": rng.randint(1, 3)},
            "date": day.isoformat(),
        }
        if rng.random() < 0.6:
            start = datetime(day.year, day.month, day.day, rng.randint(8, 15), tzinfo=TZ)
            body["windows"] = [[start.isoformat(), (start + timedelta(hours=2)).isoformat()]]
        out.append(body)
    return out


async def setup(base: str, sizes: list[tuple[int, int]], rng: random.Random) -> dict[str, Any]:
    """Depots, vans (with devices) and each scenario's orders on a day of its own."""
    headers = {"Authorization": f"Bearer {ADMIN}"}
    most_vans = max(v for _, v in sizes)
    await add_devices(base, ADMIN, most_vans, "plan-van", "Plan van")
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=120) as client:
        depots = []
        for k, (lat, lon) in enumerate(DEPOTS):
            r = await client.post(
                "/api/v1/depots", json={"name": f"Depot {k}", "lat": lat, "lon": lon}
            )
            r.raise_for_status()
            depots.append(r.json()["id"])
        vans = []
        for k in range(most_vans):
            depot = depots[k % len(depots)]
            r = await client.post(
                "/api/v1/vehicles",
                json={
                    "name": f"Plan van {k}",
                    "device": f"plan-van-{k:04d}",
                    "capacity": {"parcels": 60},
                    "shift_start": "08:00",
                    "shift_end": "18:00",
                    "time_zone": "Europe/Andorra",
                    "start_depot_id": depot,
                    "end_depot_id": depot,
                },
            )
            r.raise_for_status()
            vans.append(r.json()["id"])
    return {"depots": depots, "vans": vans}


async def add_orders(base: str, bodies: list[dict[str, Any]]) -> list[int]:
    headers = {"Authorization": f"Bearer {ADMIN}"}
    ids: list[int] = []
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=120) as client:
        for k in range(0, len(bodies), 1000):
            r = await client.post("/api/v1/orders", json={"orders": bodies[k : k + 1000]})
            r.raise_for_status()
            ids.extend(o["id"] for o in r.json()["orders"])
    return ids


async def plan(base: str, day: date, vans: list[int]) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {ADMIN}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=600) as client:
        began = time.perf_counter()
        r = await client.post("/api/v1/plans", json={"date": day.isoformat(), "vehicles": vans})
        wall = time.perf_counter() - began
    r.raise_for_status()
    body: dict[str, Any] = r.json()
    return {"plan": body, "wall_s": wall}


def figures(run: dict[str, Any]) -> dict[str, Any]:
    p = run["plan"]
    return {
        "travel": p["travel"],
        "orders": p["summary"]["orders"],
        "assigned": p["summary"]["assigned"],
        "vans_used": p["summary"]["vehicles_used"],
        "distance_km": round(p["summary"]["distance_m"] / 1000, 1),
        "matrix_s": p["timing"]["matrix_s"],
        "solve_s": p["timing"]["solve_s"],
        "paths_s": p["timing"]["paths_s"],
        "server_s": p["timing"]["total_s"],
        "end_to_end_s": round(run["wall_s"], 3),
    }


async def inserts(
    base: str, day: date, places: list[tuple[float, float]], rng: random.Random
) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {ADMIN}"}
    ids = await add_orders(
        base,
        [
            {
                "external_id": f"late-{day}-{k}",
                "lat": lat,
                "lon": lon,
                "service_s": 120,
                "size": {"parcels": 1},
                "date": day.isoformat(),
            }
            for k, (lat, lon) in enumerate(places)
        ],
    )
    took: list[float] = []
    placed = 0
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as client:
        for order_id in ids:
            began = time.perf_counter()
            r = await client.post("/api/v1/replan/insert", json={"order_id": order_id})
            took.append(time.perf_counter() - began)
            placed += r.status_code == 200
    took.sort()
    return {
        "inserts": len(ids),
        "placed": placed,
        "median_ms": round(1000 * statistics.median(took), 1),
        "p90_ms": round(1000 * took[int(0.9 * (len(took) - 1))], 1),
        "max_ms": round(1000 * took[-1], 1),
    }


async def main_async(args: argparse.Namespace, base: str) -> dict[str, Any]:
    rng = random.Random(11)
    sizes = [tuple(int(x) for x in s.split("x")) for s in args.sizes.split(",")]
    fleet = await setup(base, sizes, rng)
    # Places on the network (junctions of the imported roads), read before planning.
    pool = await create_pool(DB, 1)
    try:
        await import_file(DB, Path(args.osm))
        vertices = [
            (r["lat"], r["lon"])
            for r in await pool.fetch(
                "SELECT DISTINCT ST_Y(v.geom) AS lat, ST_X(v.geom) AS lon FROM road_vertices v "
                "JOIN road_edges e ON e.source = v.id AND e.main"
            )
        ]
        # Straight lines first: forget the network (the next import brings it back).
        await pool.execute("TRUNCATE road_imports")
    finally:
        await pool.close()
    days = {}
    for k, (n, _) in enumerate(sizes):
        day = date(2031, 6, 2) + timedelta(days=k)
        await add_orders(base, orders_for(day, sample_places(vertices, n, rng), rng))
        days[n] = day
    results: dict[str, Any] = {"exploration": args.exploration, "plans": []}
    for travel in ("straight_line", "roads"):
        if travel == "roads":
            began = time.perf_counter()
            net = await import_file(DB, Path(args.osm))
            results["roads_import"] = {
                "edges": net.edges,
                "vertices": net.vertices,
                "seconds": round(time.perf_counter() - began, 2),
            }
        for n, vans in sizes:
            run = await plan(base, days[n], fleet["vans"][:vans])
            row = {"orders_requested": n, "vans": vans, **figures(run)}
            results["plans"].append(row)
            print(row, flush=True)
            if travel == "roads" and (n, vans) == max(sizes):
                async with httpx.AsyncClient(
                    base_url=base, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=600
                ) as client:
                    r = await client.post(f"/api/v1/plans/{run['plan']['id']}/dispatch")
                    r.raise_for_status()
                late = sample_places(vertices, args.inserts, rng)
                results["insert"] = {"routes": vans, **await inserts(base, days[n], late, rng)}
                print(results["insert"], flush=True)
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--osm", default=str(ROOT.parent / "shared" / "realdata" / "osm" / "andorra.osm.pbf")
    )
    ap.add_argument("--exploration", type=int, default=0)
    ap.add_argument("--inserts", type=int, default=20)
    ap.add_argument("--sizes", default="200x10,1000x40", help="ORDERSxVANS,...")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if not Path(args.osm).is_file():
        print(f"no OSM extract at {args.osm} (give --osm)", file=sys.stderr)
        return 2
    env = {"TRACKER_PLAN_EXPLORATION": str(args.exploration)}
    with running_server(DB, ADMIN, env_overrides=env) as server:
        results = asyncio.run(main_async(args, server.base))
    print_results(results, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
