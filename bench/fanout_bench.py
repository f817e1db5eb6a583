"""Fan-out benchmark: ping POST → update on dispatcher WebSockets, end to end.

A real `tracker serve` process (single instance, local bus) receives pings from a load
generator process — V simulated vehicles, each posting one ping per second through the
native API — while receiver processes hold S dispatcher sockets on /ws/dispatch. Every ping's
fix time is the wall-clock time just before its POST, so a receiver measures
`arrival − fix time` for each vehicle in each frame it gets (a 10 % sample of the vehicles,
to keep the receivers' CPU down; every socket is read in full). All on loopback.

Prints, per socket count: p50/p99/max latency, frames and bytes per socket per second, the
server's CPU (user+system from /proc over the measured window), and the POST ack latency.
With --ramp it grows the socket count until p99 exceeds --p99-limit-ms (or the time budget
runs out) and reports the largest count that held.

Usage:
  .venv/bin/python bench/fanout_bench.py                      # 1000 vehicles, 200 sockets
  .venv/bin/python bench/fanout_bench.py --ramp 200,400,800,1200,1600
  .venv/bin/python bench/fanout_bench.py --no-deflate         # clients refuse compression
Uses its own database (BENCH_FANOUT_DATABASE_URL, default tracker_fanout_bench), recreated.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import random
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

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
    "BENCH_FANOUT_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/tracker_fanout_bench"
)
ADMIN = "fanout-bench-" + secrets.token_hex(8)


# -- load generator: vehicles posting pings ------------------------------------------------


async def pinger(
    base: str, tokens: list[str], rate: float, until: float, window: tuple[float, float]
) -> dict[str, Any]:
    rng = random.Random(7)
    hist = new_hist()
    stats = {"sent": 0, "ok": 0, "errors": 0, "ok_in_window": 0, "behind_ms_max": 0}
    state = [
        [48.10 + rng.random() * 0.10, 11.50 + rng.random() * 0.15, rng.random() * 360]
        for _ in tokens
    ]

    def ping(i: int, at: float) -> tuple[float, bytes]:
        # A small random walk around each vehicle's start, heading fixed.
        lat, lon, course = state[i]
        lat += (rng.random() - 0.5) * 1e-4
        lon += (rng.random() - 0.5) * 1e-4
        state[i][:2] = [lat, lon]
        sent = time.time()
        behind = int((sent - at) * 1000)
        stats["behind_ms_max"] = max(stats["behind_ms_max"], behind)
        return sent, ping_body(sent, lat, lon, 8.0, course)

    await post_pings(
        base,
        tokens,
        ping,
        period=1.0 / rate,
        begin=None,
        until=until,
        window=window,
        workers=48,
        stats=stats,
        ack=hist,
    )
    return {**stats, "ack_hist": hist}


# -- receivers: dispatcher sockets -----------------------------------------------------------


async def receiver(
    url: str, sockets: int, probes: int, deflate: bool, window: tuple[float, float]
) -> dict[str, Any]:
    """Hold `sockets` sockets reading every frame; `probes` of them, spread evenly over the
    connection order (the order the server writes them in), also parse and time frames."""
    from websockets.asyncio.client import connect

    hist = new_hist()
    # Split of the latency: fix time → frame stamped by the server's tick (ingest + waiting
    # for the tick), and frame stamp → arrival (writing to sockets + the receiver's own lag).
    to_tick = new_hist()
    to_arrival = new_hist()
    stats = {"connected": 0, "failed": 0, "closed": 0, "frames": 0, "bytes": 0, "snapshots": 0}
    start, end = window
    sem = asyncio.Semaphore(25)

    probe_at = {round(k * sockets / probes) for k in range(probes)} if probes else set()

    async def one(index: int) -> None:
        probe = index in probe_at
        try:
            async with sem:
                ws = await connect(
                    url,
                    max_size=None,
                    compression="deflate" if deflate else None,
                    open_timeout=30,
                    ping_interval=None,
                )
        except Exception:
            stats["failed"] += 1
            return
        stats["connected"] += 1
        try:
            while True:
                left = end - time.time()
                if left <= 0:
                    break
                try:
                    raw = await asyncio.wait_for(ws.recv(decode=False), left)
                except TimeoutError:
                    break
                now = time.time()
                if raw.startswith(b'{"type":"snapshot"'):
                    stats["snapshots"] += 1
                    continue
                if now < start:
                    continue
                stats["frames"] += 1
                stats["bytes"] += len(raw)
                if not probe:
                    continue
                message = orjson.loads(raw)
                stamped = datetime.fromisoformat(message["time"]).timestamp()
                record(to_arrival, now - stamped)
                for v in message["vehicles"]:
                    if v["id"].endswith("0"):
                        fixed = datetime.fromisoformat(v["time"]).timestamp()
                        record(hist, now - fixed)
                        record(to_tick, stamped - fixed)
        except Exception:
            stats["closed"] += 1
        finally:
            with contextlib.suppress(Exception):
                await ws.close()

    # Connect in order so probes are spread over the server's subscriber order.
    tasks = []
    for i in range(sockets):
        tasks.append(asyncio.create_task(one(i)))
        await asyncio.sleep(0.002)
    await asyncio.gather(*tasks)
    return {**stats, "hist": hist, "to_tick": to_tick, "to_arrival": to_arrival}


# -- orchestration ---------------------------------------------------------------------------


@dataclass
class Phase:
    sockets: int
    seconds: float
    hist: list[int] = field(default_factory=new_hist)
    to_tick: list[int] = field(default_factory=new_hist)
    to_arrival: list[int] = field(default_factory=new_hist)
    stats: dict[str, int] = field(default_factory=dict)
    server_cpu: float = 0.0
    receivers_cpu: float = 0.0
    pinger_cpu: float = 0.0
    machine_busy: float = 0.0  # share of all cores busy, anything running on the machine

    def summary(self) -> dict[str, Any]:
        frames = self.stats.get("frames", 0)
        per_socket_s = max(1, self.stats.get("connected", 1)) * self.seconds
        return {
            "sockets": self.sockets,
            "connected": self.stats.get("connected", 0),
            "failed": self.stats.get("failed", 0),
            "closed_early": self.stats.get("closed", 0),
            "samples": sum(self.hist),
            "p50_ms": percentile(self.hist, 0.50),
            "p99_ms": percentile(self.hist, 0.99),
            "max_ms": percentile(self.hist, 1.0),
            "fix_to_tick_p50_ms": percentile(self.to_tick, 0.50),
            "fix_to_tick_p99_ms": percentile(self.to_tick, 0.99),
            "tick_to_arrival_p50_ms": percentile(self.to_arrival, 0.50),
            "tick_to_arrival_p99_ms": percentile(self.to_arrival, 0.99),
            "frames_per_socket_s": round(frames / per_socket_s, 2),
            "kb_per_socket_s": round(self.stats.get("bytes", 0) / per_socket_s / 1024, 1),
            "server_cpu_pct": round(self.server_cpu * 100, 1),
            "receivers_cpu_pct": round(self.receivers_cpu * 100, 1),
            "pinger_cpu_pct": round(self.pinger_cpu * 100, 1),
            "machine_busy_pct_of_all_cores": round(self.machine_busy * 100, 1),
        }


def run_phase(
    ctx: Any,
    url: str,
    sockets: int,
    probes: int,
    procs: int,
    deflate: bool,
    connect_s: float,
    seconds: float,
    server_pid: int,
    pinger_pid: int,
) -> Phase:
    """Hold `sockets` dispatcher sockets for connect_s + seconds; measure the last `seconds`."""
    start = time.time() + connect_s
    window = (start, start + seconds)
    queue = ctx.Queue()
    per = [sockets // procs + (1 if i < sockets % procs else 0) for i in range(procs)]
    workers = [
        ctx.Process(
            target=run_to_queue,
            args=(queue, receiver, url, n, round(probes * n / sockets), deflate, window),
        )
        for n in per
        if n > 0
    ]
    for w in workers:
        w.start()
    time.sleep(max(0.0, start - time.time()))
    pids = [server_pid, pinger_pid, *(w.pid for w in workers if w.pid)]
    used, busy = cpu_until(pids, window[1], seconds)
    phase = Phase(
        sockets,
        seconds,
        server_cpu=used[0],
        pinger_cpu=used[1],
        receivers_cpu=sum(used[2:]),
        machine_busy=busy,
    )
    for _ in workers:
        result = queue.get(timeout=connect_s + seconds + 120)
        for name in ("hist", "to_tick", "to_arrival"):
            merge(getattr(phase, name), result.pop(name))
        for k, v in result.items():
            phase.stats[k] = phase.stats.get(k, 0) + v
    for w in workers:
        w.join(30)
    return phase


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--vehicles", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=1.0, help="pings per vehicle per second")
    parser.add_argument("--sockets", type=int, default=200)
    parser.add_argument("--ramp", default="", help="socket counts to try, e.g. 200,400,800")
    parser.add_argument("--seconds", type=float, default=15.0, help="measured time per phase")
    parser.add_argument("--connect-seconds", type=float, default=6.0, help="settle time")
    parser.add_argument("--receiver-procs", type=int, default=2)
    parser.add_argument(
        "--probes", type=int, default=40, help="sockets that also parse and time every frame"
    )
    parser.add_argument("--tick-ms", type=float, default=150.0)
    parser.add_argument("--p99-limit-ms", type=float, default=500.0)
    parser.add_argument("--budget-seconds", type=float, default=300.0)
    parser.add_argument("--no-deflate", action="store_true", help="clients refuse compression")
    parser.add_argument("--server-deflate", action="store_true", help="server offers deflate")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    deflate_clients = not args.no_deflate
    counts = [int(x) for x in args.ramp.split(",") if x] or [args.sockets]

    ctx = mp.get_context("spawn")
    results: dict[str, Any] = {
        "vehicles": args.vehicles,
        "pings_per_s": args.vehicles * args.rate,
        "tick_ms": args.tick_ms,
        "server_deflate": args.server_deflate,
        "clients_offer_deflate": deflate_clients,
        "cpus": os.cpu_count(),
        "phases": [],
    }
    began = time.time()
    env = {
        "TRACKER_TICK_MS": str(args.tick_ms),
        "TRACKER_WS_DEFLATE": "1" if args.server_deflate else "0",
    }
    with running_server(BENCH_DB, ADMIN, env) as server:
        base = server.base
        tokens = asyncio.run(add_devices(base, ADMIN, args.vehicles))
        print(
            f"server pid {server.process.pid} on {base}; {len(tokens)} devices registered",
            flush=True,
        )
        budget_end = began + args.budget_seconds
        phase_s = args.connect_seconds + args.seconds
        until = min(budget_end, time.time() + 3 + phase_s * len(counts) + 5)
        queue = ctx.Queue()
        ping_window = (time.time() + 3 + args.connect_seconds, until)
        pinger_proc = ctx.Process(
            target=run_to_queue, args=(queue, pinger, base, tokens, args.rate, until, ping_window)
        )
        pinger_proc.start()
        time.sleep(3)  # let the pings reach a steady rate
        url = f"{server.ws_base}/ws/dispatch?token={ADMIN}"
        best: int | None = None
        for n in counts:
            if time.time() + phase_s > until:
                print(f"time budget exhausted before {n} sockets", flush=True)
                break
            phase = run_phase(
                ctx,
                url,
                n,
                min(n, args.probes),
                args.receiver_procs,
                deflate_clients,
                args.connect_seconds,
                args.seconds,
                server.process.pid,
                pinger_proc.pid or 0,
            )
            summary = phase.summary()
            results["phases"].append(summary)
            print(json.dumps(summary), flush=True)
            p99 = summary["p99_ms"]
            if p99 is None or p99 > args.p99_limit_ms or summary["failed"]:
                break
            best = n
        results["max_sockets_within_p99_limit"] = best
        pinger_stats = queue.get(timeout=max(30.0, until - time.time() + 60))
        pinger_proc.join(30)
        ack = pinger_stats.pop("ack_hist")
        pinger_stats["ack_p50_ms"] = percentile(ack, 0.5)
        pinger_stats["ack_p99_ms"] = percentile(ack, 0.99)
        pinger_stats["pings_per_s"] = round(
            pinger_stats["ok_in_window"] / max(1.0, ping_window[1] - ping_window[0]), 1
        )
        results["pinger"] = pinger_stats
    print_results(results, args.json)


if __name__ == "__main__":
    main()
