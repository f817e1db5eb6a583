"""Customer tracking benchmark: ping POST → the customer's tracking socket, end to end.

A real `tracker serve` process (single instance, local bus) serves V vehicles, each with a
planned route of S stops (default 500 × 4 = 2,000 stops). Socket processes open one
customer socket per stop on /ws/track/{token} (websockets client, asyncio) and read every
frame; a fleet process posts one ping per vehicle per second through the native API (500
pings/s), each stamped with the wall-clock time just before its POST. Everything on
loopback, bounded in time.

Measured per frame that carries a new vehicle position: arrival − fix time (p50/p99/max).
Checked on every frame of every socket: it names this socket's own stop (each stop has a
unique name) and nothing else (the frame's keys are exactly the customer state's), and a
vehicle appears only on sockets of stops within TRACKER_CUSTOMER_MAX_STOPS_AWAY (1: the
first two stops of each route, since the vehicles drive towards their first stop).

Usage:
  .venv/bin/python bench/customer_bench.py                  # 500 vehicles × 4 stops, 30 s
  .venv/bin/python bench/customer_bench.py --vehicles 250 --stops 8 --seconds 20
Uses its own database (BENCH_CUSTOMER_DATABASE_URL, default tracker_customer_bench),
recreated on every run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import multiprocessing as mp
import os
import secrets
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
from common import (
    add_devices,
    cpu_until,
    merge,
    new_hist,
    percentile,
    ping_body,
    post_pings,
    print_results,
    record,
    run_to_queue,
    running_server,
)

BENCH_DB = os.environ.get(
    "BENCH_CUSTOMER_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/tracker_customer_bench"
)
ADMIN = "customer-bench-" + secrets.token_hex(8)
STATE_KEYS = {"destination", "phase", "eta", "approximate", "arrived_at", "done_at", "vehicle"}
FRAME_KEYS = {"type", "v", "time", "tracking"}
SPEED_MPS = 10.0
STOP_SPACING_M = 1500.0
LAT0, LON0 = 48.05, 11.40
LANE_DEG = 0.0005  # ~55 m between the vehicles' parallel streets


# -- helpers ---------------------------------------------------------------------------------


def lon_at(m: float, lat: float) -> float:
    return LON0 + m / (111_320.0 * math.cos(math.radians(lat)))


def lane(i: int) -> float:
    return LAT0 + i * LANE_DEG


async def plan_fleet(base: str, vehicles: int, stops: int) -> tuple[list[str], list[list[Any]]]:
    """Register the vehicles and plan their routes. Returns the device tokens and, per stop,
    [tracking token, its unique name, its sequence number]."""
    tokens = await add_devices(base, ADMIN, vehicles)
    sem = asyncio.Semaphore(16)
    headers = {"Authorization": f"Bearer {ADMIN}"}
    start = datetime.now(UTC) - timedelta(minutes=1)
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as client:

        async def one(i: int) -> list[list[Any]]:
            async with sem:
                lat = lane(i)
                tag = secrets.token_hex(4)
                body = {
                    "device": f"bench-{i:04d}",  # add_devices' unique id
                    "planned_start": start.isoformat(),
                    "stops": [
                        {
                            "lat": lat,
                            "lon": lon_at(STOP_SPACING_M * (k + 1), lat),
                            "name": f"V{i:04d}-S{k + 1}-{tag}",
                            "recipient": f"Customer {i}-{k + 1}",
                            "service_s": 120.0,
                        }
                        for k in range(stops)
                    ],
                    "path": {
                        "type": "LineString",
                        "coordinates": [
                            [LON0, lat],
                            [lon_at(STOP_SPACING_M * (stops + 1), lat), lat],
                        ],
                    },
                }
                r = await client.post("/api/v1/routes", json=body)
                r.raise_for_status()
                return [
                    [urlsplit(s["tracking_url"]).path.rsplit("/", 1)[1], s["name"], s["seq"]]
                    for s in r.json()["stops"]
                ]

        planned = await asyncio.gather(*(one(i) for i in range(vehicles)))
    return tokens, [link for links in planned for link in links]


# -- the fleet: vehicles posting pings ------------------------------------------------------


async def fleet(
    base: str,
    tokens: list[str],
    rate: float,
    begin: float,
    window: tuple[float, float],
    workers: int,
) -> dict[str, Any]:
    # behind: how late a ping left against its schedule (the generator keeping up).
    stats = {"sent": 0, "ok": 0, "errors": 0, "ok_in_window": 0, "behind_ms_max_in_window": 0}
    ack = new_hist()
    period = 1.0 / rate
    travelled = [0.0] * len(tokens)

    def ping(i: int, at: float) -> tuple[float, bytes]:
        # Each vehicle drives east along its own lane at SPEED_MPS.
        m = travelled[i]
        travelled[i] = m + SPEED_MPS * period
        lat = lane(i)
        sent = time.time()
        if window[0] <= sent < window[1]:
            behind = int((sent - at) * 1000)
            stats["behind_ms_max_in_window"] = max(stats["behind_ms_max_in_window"], behind)
        return sent, ping_body(sent, lat, lon_at(m, lat), SPEED_MPS, 90.0)

    await post_pings(
        base,
        tokens,
        ping,
        period=period,
        begin=begin,
        until=window[1],
        window=window,
        workers=workers,
        stats=stats,
        ack=ack,
    )
    return {**stats, "ack_p50_ms": percentile(ack, 0.5), "ack_p99_ms": percentile(ack, 0.99)}


# -- customers: one socket per stop ----------------------------------------------------------


async def customers(
    url: str, links: list[list[Any]], max_away: int, window: tuple[float, float]
) -> dict[str, Any]:
    from websockets.asyncio.client import connect

    hist = new_hist()
    stats = {
        "connected": 0,
        "failed": 0,
        "closed_early": 0,
        "frames": 0,
        "position_frames": 0,
        "foreign_frames": 0,  # naming another stop, or with keys beyond the customer state
        "rule_violations": 0,  # a vehicle on a stop further away than allowed
        "sockets_with_positions": 0,
    }
    start, end = window
    sem = asyncio.Semaphore(50)

    async def one(token: str, name: str, seq: int) -> None:
        try:
            async with sem:
                ws = await connect(
                    f"{url}/ws/track/{token}", open_timeout=60, ping_interval=None, max_size=None
                )
        except Exception:
            stats["failed"] += 1
            return
        stats["connected"] += 1
        last_fix = ""
        positions = 0
        try:
            while (left := end - time.time()) > 0:
                try:
                    raw = await asyncio.wait_for(ws.recv(decode=False), left)
                except TimeoutError:
                    break
                now = time.time()
                frame = orjson.loads(raw)
                state = frame.get("tracking")
                stats["frames"] += 1
                if (
                    set(frame) != FRAME_KEYS
                    or not isinstance(state, dict)
                    or set(state) != STATE_KEYS
                    or state["destination"]["name"] != name
                ):
                    stats["foreign_frames"] += 1
                    continue
                vehicle = state["vehicle"]
                if vehicle is None or vehicle["time"] == last_fix:
                    continue
                last_fix = vehicle["time"]
                positions += 1
                if seq > max_away + 1:
                    stats["rule_violations"] += 1
                if start <= now:
                    stats["position_frames"] += 1
                    fixed = datetime.fromisoformat(vehicle["time"]).timestamp()
                    record(hist, now - fixed)
        except Exception:
            stats["closed_early"] += 1
        finally:
            with contextlib.suppress(Exception):
                await ws.close()
        if positions:
            stats["sockets_with_positions"] += 1

    await asyncio.gather(*(one(*link) for link in links))
    return {**stats, "hist": hist}


# -- orchestration ---------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--vehicles", type=int, default=500)
    parser.add_argument("--stops", type=int, default=4, help="stops per route")
    parser.add_argument("--rate", type=float, default=1.0, help="pings per vehicle per second")
    parser.add_argument("--seconds", type=float, default=30.0, help="measured time")
    parser.add_argument("--warmup-seconds", type=float, default=5.0)
    parser.add_argument("--connect-seconds", type=float, default=25.0, help="time to connect")
    parser.add_argument("--socket-procs", type=int, default=2)
    parser.add_argument("--fleet-connections", type=int, default=128)
    parser.add_argument("--tick-ms", type=float, default=150.0)
    parser.add_argument("--max-stops-away", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    ctx = mp.get_context("spawn")
    results: dict[str, Any] = {
        "vehicles": args.vehicles,
        "stops_per_route": args.stops,
        "sockets": args.vehicles * args.stops,
        "pings_per_s_target": args.vehicles * args.rate,
        "tick_ms": args.tick_ms,
        "max_stops_away": args.max_stops_away,
        "cpus": os.cpu_count(),
    }
    env = {
        "TRACKER_TICK_MS": str(args.tick_ms),
        "TRACKER_CUSTOMER_MAX_STOPS_AWAY": str(args.max_stops_away),
    }
    with running_server(BENCH_DB, ADMIN, env) as server:
        base = server.base
        t = time.time()
        tokens, links = asyncio.run(plan_fleet(base, args.vehicles, args.stops))
        print(f"{len(tokens)} vehicles, {len(links)} stops planned in {time.time() - t:.1f} s")
        fleet_begin = time.time() + args.connect_seconds
        window = (
            fleet_begin + args.warmup_seconds,
            fleet_begin + args.warmup_seconds + args.seconds,
        )
        queue = ctx.Queue()
        procs = max(1, args.socket_procs)
        sockets_procs = [
            ctx.Process(
                target=run_to_queue,
                args=(
                    queue,
                    customers,
                    server.ws_base,
                    links[k::procs],
                    args.max_stops_away,
                    window,
                ),
            )
            for k in range(procs)
        ]
        for c in sockets_procs:
            c.start()
        pinger = ctx.Process(
            target=run_to_queue,
            args=(
                queue,
                fleet,
                base,
                tokens,
                args.rate,
                fleet_begin,
                window,
                args.fleet_connections,
            ),
        )
        pinger.start()
        time.sleep(max(0.0, window[0] - time.time()))
        pids = [server.process.pid, pinger.pid or 0, *(c.pid or 0 for c in sockets_procs)]
        cpu, busy = cpu_until(pids, window[1], args.seconds)
        hist = new_hist()
        sockets: dict[str, int] = {}
        fleet_stats: dict[str, Any] = {}
        for _ in range(procs + 1):
            got = queue.get(timeout=120)
            if "hist" in got:
                merge(hist, got.pop("hist"))
                for k, v in got.items():
                    sockets[k] = sockets.get(k, 0) + v
            else:
                fleet_stats = got
        for p in (*sockets_procs, pinger):
            p.join(30)
        near = sum(1 for _, _, seq in links if seq <= args.max_stops_away + 1)
        results.update(
            {
                "pings_per_s": round(fleet_stats.get("ok_in_window", 0) / args.seconds, 1),
                "fleet": fleet_stats,
                "customer_sockets": sockets,
                "sockets_expected_to_see_the_vehicle": near,
                "ping_to_customer_p50_ms": percentile(hist, 0.5),
                "ping_to_customer_p99_ms": percentile(hist, 0.99),
                "ping_to_customer_max_ms": percentile(hist, 1.0),
                "server_cpu_pct": round(cpu[0] * 100, 1),
                "fleet_cpu_pct": round(cpu[1] * 100, 1),
                "customers_cpu_pct": round(sum(cpu[2:]) * 100, 1),
                "machine_busy_pct_of_all_cores": round(busy * 100, 1),
                "only_own_stop": sockets.get("foreign_frames", -1) == 0
                and sockets.get("rule_violations", -1) == 0,
            }
        )
    print_results(results, args.json)


if __name__ == "__main__":
    main()
