"""Paced mode of the fleet benchmark (`fleet_bench.py --paced`): N routed devices driving the
Munich drive, each posting 1 ping/s like a live phone, and a dispatcher on `/ws/dispatch`.

Every ping's fix time is the wall-clock time of its POST (to the millisecond, rounded down,
so a latency below is at most 1 ms too long); the load generator and the receiver run in
their own processes on the same clock. Measured, for pings sent in the window after the
warm-up:

- ping → ack: POST sent → its 202.
- ping → position: fix time → the first delta frame showing the vehicle at that fix.
- ping → route update ("ETA visible"): fix time → the first delta frame carrying a route
  event whose time is that ping's fix time. Route progress runs per fix and stamps its
  events with the fix's own time, and the route JSON with the ETAs recomputed from that
  fix is published in the same round as its events, so that frame (or one before it) is
  where the dispatcher sees the route change that ping caused. A ping that changes nothing
  worth an event (the ETAs move less than the `stop.eta_changed` threshold, no stop
  reached or passed) publishes no route update today, so it gives no sample: the sample
  count is printed, and `stop.eta_changed` alone is reported beside all route events.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import multiprocessing as mp
import time
from collections import Counter
from datetime import datetime
from typing import Any

import asyncpg
import orjson
from common import (
    add_devices,
    cpu_of,
    cpu_spent,
    machine_busy,
    merge,
    new_hist,
    percentile,
    post_pings,
    private_redis,
    process_tree,
    record,
    run_to_queue,
    running_server,
)
from fleet_drive import Fleet, create_routes

CONNECT_S = 8.0  # before the first ping: the receiver connects and reads its snapshot
GRACE_S = 3.0  # the receiver reads on after the last ping, for its updates


async def pinger(
    base: str, tokens: list[str], begin: float, until: float, window: tuple[float, float]
) -> dict[str, Any]:
    """Device i posts its position `now − begin` seconds into its drive, fix time = now."""
    fleet = Fleet.munich(len(tokens))
    hist = new_hist()
    stats = {"sent": 0, "ok": 0, "errors": 0, "ok_in_window": 0, "behind_ms_max": 0}

    def ping(i: int, due: float) -> tuple[float, bytes]:
        sent = time.time()
        fix = math.floor(sent * 1000) / 1000
        if sent >= window[0]:
            stats["behind_ms_max"] = max(stats["behind_ms_max"], int((sent - due) * 1000))
        return sent, fleet.ping(i, fix, fix - begin)

    await post_pings(
        base,
        tokens,
        ping,
        period=1.0,
        begin=begin,
        until=until,
        window=window,
        workers=64,
        stats=stats,
        ack=hist,
    )
    return {"who": "pinger", **stats, "ack": hist}


def _ms(iso: str) -> int:
    return round(datetime.fromisoformat(iso).timestamp() * 1000)


async def receiver(url: str, window: tuple[float, float], until: float) -> dict[str, Any]:
    """One dispatcher socket, every frame parsed: see the module docstring for what counts."""
    from websockets.asyncio.client import connect

    position, route, eta = new_hist(), new_hist(), new_hist()
    newest: dict[str, int] = {}  # device → newest fix time shown (ms)
    seen: set[tuple[str, int]] = set()
    seen_eta: set[tuple[str, int]] = set()
    types: Counter[str] = Counter()
    stats = {"frames": 0, "bytes": 0, "snapshots": 0, "events": 0, "dropped_events": 0}
    lo, hi = window[0] * 1000, window[1] * 1000
    async with connect(url, max_size=None, open_timeout=30, ping_interval=None) as ws:
        while (left := until - time.time()) > 0:
            try:
                raw = await asyncio.wait_for(ws.recv(decode=False), left)
            except TimeoutError:
                break
            now_ms = time.time() * 1000
            stats["frames"] += 1
            stats["bytes"] += len(raw)
            if raw.startswith(b'{"type":"snapshot"'):
                stats["snapshots"] += 1
                continue
            message = orjson.loads(raw)
            if message.get("type") != "delta":
                continue
            stats["dropped_events"] += message.get("dropped_events", 0)
            for v in message.get("vehicles", []):
                t = _ms(v["time"])
                if t > newest.get(v["id"], 0):
                    newest[v["id"]] = t
                    if lo <= t < hi:
                        record(position, (now_ms - t) / 1000)
            for e in message.get("events", []):
                stats["events"] += 1
                types[e["type"]] += 1
                t = _ms(e["time"])
                key = (str(e.get("device")), t)
                if not lo <= t < hi:
                    continue
                if key not in seen:
                    seen.add(key)
                    record(route, (now_ms - t) / 1000)
                if e["type"] == "stop.eta_changed" and key not in seen_eta:
                    seen_eta.add(key)
                    record(eta, (now_ms - t) / 1000)
    return {
        "who": "receiver",
        **stats,
        "event_types": dict(types),
        "position": position,
        "route": route,
        "eta": eta,
    }


async def _backends(db: str) -> list[int]:
    conn = await asyncpg.connect(db)
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()"
        )
        return [r["pid"] for r in rows]
    finally:
        await conn.close()


def _summary(hist: list[int]) -> dict[str, Any]:
    return {
        "samples": sum(hist),
        "p50_ms": percentile(hist, 0.5),
        "p99_ms": percentile(hist, 0.99),
        "max_ms": percentile(hist, 1.0),
    }


def paced(
    args: argparse.Namespace, devices: int, db: str, admin: str, env: dict[str, str]
) -> dict[str, Any]:
    """Run the paced mode on a fresh database and server; returns the figures."""
    # A worker's local bus reaches only its own sockets: with several, the pings another
    # worker takes reach the dispatcher through Redis, as in a real deployment.
    with contextlib.ExitStack() as stack:
        if args.workers > 1 or args.redis:
            env = {**env, "REDIS_URL": stack.enter_context(private_redis())}
        return _paced(args, devices, db, admin, env)


def _paced(
    args: argparse.Namespace, devices: int, db: str, admin: str, env: dict[str, str]
) -> dict[str, Any]:
    fleet = Fleet.munich(devices)
    env = {**env, "TRACKER_TICK_MS": str(args.tick_ms)}
    workers = ["--workers", str(args.workers)]
    with running_server(db, admin, env, workers, "/readyz", 30.0) as server:
        tokens = asyncio.run(add_devices(server.base, admin, devices, "p", "paced"))
        ids = [f"p-{i:04d}" for i in range(devices)]
        routes_s = asyncio.run(
            create_routes(server.base, admin, fleet, ids, args.stops, args.stop_every_s)
        )
        ctx = mp.get_context("spawn")
        queue = ctx.Queue()
        begin = time.time() + CONNECT_S
        window = (begin + args.warmup_s, begin + args.warmup_s + args.duration)
        url = f"{server.ws_base}/ws/dispatch?token={admin}"
        procs = [
            ctx.Process(
                target=run_to_queue, args=(queue, receiver, url, window, window[1] + GRACE_S)
            ),
            ctx.Process(
                target=run_to_queue,
                args=(queue, pinger, server.base, tokens, begin, window[1], window),
            ),
        ]
        for p in procs:
            p.start()
        time.sleep(max(0.0, window[0] - time.time()))
        server_procs = process_tree(server.process.pid)
        backends = asyncio.run(_backends(db))
        mine = [p.pid for p in procs if p.pid]
        before = (cpu_of(server_procs), cpu_of(backends), cpu_of(mine), machine_busy())
        time.sleep(max(0.0, window[1] - time.time()))
        backends = sorted(set(backends) | set(asyncio.run(_backends(db))))
        after = (cpu_of(server_procs), cpu_of(backends), cpu_of(mine), machine_busy())
        results = {}
        for _ in procs:
            r = queue.get(timeout=GRACE_S + 120)
            results[r.pop("who")] = r
        for p in procs:
            p.join(30)
            if p.is_alive():
                with contextlib.suppress(Exception):
                    p.kill()
    seconds = window[1] - window[0]
    pinger_r, recv = results["pinger"], results["receiver"]
    ack = new_hist()
    merge(ack, pinger_r.pop("ack"))
    out = {
        "mode": "paced",
        "devices": devices,
        "seconds": seconds,
        "tick_ms": args.tick_ms,
        "bus": "redis" if "REDIS_URL" in env else "local",
        "routes_s": round(routes_s, 1),
        "pings_per_s": round(pinger_r["ok_in_window"] / seconds, 1),
        "ack": _summary(ack),
        "ping_to_position": _summary(recv.pop("position")),
        "ping_to_route_event": _summary(recv.pop("route")),
        "ping_to_eta_changed": _summary(recv.pop("eta")),
        "pinger": pinger_r,
        "receiver": recv,
        "server_cpu_pct": round(cpu_spent(before[0], after[0]) / seconds * 100, 1),
        "postgres_cpu_pct": round(cpu_spent(before[1], after[1]) / seconds * 100, 1),
        "load_cpu_pct": round(cpu_spent(before[2], after[2]) / seconds * 100, 1),
        "machine_busy_pct": round(
            (after[3][0] - before[3][0]) / max(1, after[3][1] - before[3][1]) * 100, 1
        ),
    }
    a, r = out["ack"], out["ping_to_route_event"]
    out["verdict"] = [
        f"ack p99 {a['p99_ms']} ms (target ≤ 50): "
        + ("ok" if a["p99_ms"] is not None and a["p99_ms"] <= 50 else "MISSED"),
        f"ping → route update on /ws/dispatch p99 {r['p99_ms']} ms over {r['samples']} "
        "samples (target ≤ 300): "
        + ("ok" if r["p99_ms"] is not None and r["p99_ms"] <= 300 else "MISSED"),
    ]
    return out
