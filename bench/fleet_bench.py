"""Fleet benchmark: live pings of a whole fleet driving a real road, with and without routes.

Every device follows the real Munich drive (`bench/fleet_drive.py`: the packaged drive
there and back as a loop, the fleet spread along it) and sends one ping per request to the
native API, each fix newer than the device's last one, as a live phone sends: every ping
is a new last position, so it goes through the jump filter, the last-position update, the
live bus and (for a device with a route) route progress.

Throughput (the default): 64 keep-alive connections (`--clients`) post as fast as the
server acknowledges, the devices taken in turn, from wrk with a Lua script when installed
(`bench/fleet_load.py`; `--client python` for the Python one, ~3× the CPU per request).
Run twice per device count, each on a fresh database and a fresh `tracker serve --workers
2`: once with every device on an active route of 30 stops (path = the drive ahead of it,
created with `POST /api/v1/routes`), once without routes. Device i's fixes: the first far
enough in the past that the run never catches up with the clock (at up to `--max-rate`),
each next one `--step-s` (1 s) later and that much further along the drive: real speeds, so
the jump filter passes every ping, and nothing is in the future. The window opens after
`--warmup-s` and once every device had 4 pings acknowledged (a route's first fix on each
worker builds its plan: a one-off cost). Prints, per phase: acknowledged pings/s (202 with
`stored: 1`), p50/p99 ack latency, errors, events stored in the window and in all,
positions stored, how many routes' progress lags their device's last position after the
run, and the CPU seconds in the window of the server (the tracker processes), of
PostgreSQL's backends for the bench database and of the load generator; then
routed/unrouted and, with several device counts, the rate at the largest count ÷ the first.
The bus is local to each worker unless `--redis` (a redis-server of its own).

Paced (`--paced`, `bench/fleet_paced.py`): N routed devices at 1 ping/s each for
`--duration` seconds, fix time = the wall-clock time of the POST; p50/p99 ping → ack and
ping → route update on a `/ws/dispatch` socket (see that module for the definition).

Usage:
  .venv/bin/python bench/fleet_bench.py                        # 1,000 devices, 15 s per phase
  .venv/bin/python bench/fleet_bench.py --devices 1000,10000   # both counts, and their ratio
  .venv/bin/python bench/fleet_bench.py --paced --devices 1000 --duration 30
Uses its own database (BENCH_FLEET_DATABASE_URL, default tracker_fleet_bench), recreated
for every phase.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import shutil
import time
from pathlib import Path
from typing import Any

import asyncpg
from common import (
    add_devices,
    percentile,
    print_results,
    private_redis,
    run_loop,
    running_server,
)
from fleet_drive import Fleet, create_routes
from fleet_load import WARM_PINGS, Pings, python_load, wrk_load

BENCH_DB = os.environ.get(
    "BENCH_FLEET_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/tracker_fleet_bench"
)
ADMIN = "fleet-bench-" + secrets.token_hex(8)
# The load generator plays thousands of phones: auth lookups cached like ingest_bench's.
SERVER_ENV = {"TRACKER_AUTH_CACHE_S": "30"}
TARGETS = {"ratio": 0.8, "unrouted_rate": 8000.0, "scale": 0.8}


async def db_counts(routed: bool) -> dict[str, Any]:
    """What the phase left in the database; for routes, how many lag their device."""
    conn = await asyncpg.connect(BENCH_DB)
    try:
        out: dict[str, Any] = {
            "positions": await conn.fetchval("SELECT count(*) FROM positions"),
            "events": await conn.fetchval("SELECT count(*) FROM events"),
            "events_by_type": dict(
                await conn.fetch("SELECT type, count(*) FROM events GROUP BY 1 ORDER BY 2 DESC")
            ),
        }
        if routed:
            out["routes_by_status"] = dict(
                await conn.fetch("SELECT status, count(*) FROM routes GROUP BY 1")
            )
            try:
                # Route state is the routing service's business; this reads today's shape
                # (`last_s`, the last fix applied) and says n/a once that changes.
                out["routes_behind"] = await conn.fetchval(
                    "SELECT count(*) FROM routes r JOIN last_positions l USING (device_id) "
                    "WHERE coalesce((r.route_state->>'last_s')::float8, 0) "
                    "< extract(epoch FROM l.fix_time) - 0.0005"
                )
            except asyncpg.PostgresError as exc:
                out["routes_behind"] = f"n/a ({exc.__class__.__name__})"
        return out
    finally:
        await conn.close()


def phase(args: argparse.Namespace, devices: int, routed: bool) -> dict[str, Any]:
    """One phase on a fresh database and server: register, route, drive, count."""
    fleet = Fleet.munich(devices)
    name = "routed" if routed else "unrouted"
    workers = ["--workers", str(args.workers)]
    with contextlib.ExitStack() as stack:
        env = {**SERVER_ENV, **dict(args.env)}
        if args.redis:
            env["REDIS_URL"] = stack.enter_context(private_redis())
        server = stack.enter_context(running_server(BENCH_DB, ADMIN, env, workers, "/readyz", 30.0))
        t0 = time.perf_counter()
        prefix = "r" if routed else "u"
        tokens = asyncio.run(add_devices(server.base, ADMIN, devices, prefix, name))
        registered_s = time.perf_counter() - t0
        routes_s = 0.0
        clamped = 0
        if routed:
            ids = [f"{prefix}-{i:04d}" for i in range(devices)]
            routes_s = asyncio.run(
                create_routes(server.base, ADMIN, fleet, ids, args.stops, args.stop_every_s)
            )
        # Enough lead that the run never catches up with the clock at up to --max-rate
        # (the warm-up's first pings are slower: WARM_PINGS each, at most --max-rate).
        per_device = WARM_PINGS + args.max_rate * args.warmup_s / devices
        per_device += args.pings / devices if args.pings else args.max_rate * args.seconds / devices
        lead_s = min(per_device * args.step_s + 5.0, 6 * 3600.0)
        if args.client == "wrk":
            load = run_loop(
                wrk_load(
                    server.base,
                    BENCH_DB,
                    tokens,
                    fleet,
                    step_s=args.step_s,
                    lead_s=lead_s,
                    clients=args.clients,
                    warmup_s=args.warmup_s,
                    seconds=args.seconds,
                    server_pid=server.process.pid,
                )
            )
        else:
            pings = Pings(fleet, args.step_s, lead_s)
            load = run_loop(
                python_load(
                    server.base,
                    BENCH_DB,
                    tokens,
                    pings,
                    clients=args.clients,
                    warmup_s=args.warmup_s,
                    seconds=args.seconds,
                    count=args.pings,
                    server_pid=server.process.pid,
                )
            )
            clamped = pings.clamped
        ended = time.time()
        time.sleep(args.settle_s)  # route work after an ack (if any) finishes
        counts = asyncio.run(db_counts(routed))
    rate = load.acked / max(load.seconds, 1e-9)
    return {
        "phase": name,
        "devices": devices,
        "bus": "redis" if args.redis else "local",
        "env": dict(args.env),
        "rate": round(rate, 1),
        "acked": load.acked,
        "seconds": round(load.seconds, 2),
        "p50_ms": load.p50_ms if load.p50_ms is not None else percentile(load.hist, 0.5),
        "p99_ms": load.p99_ms if load.p99_ms is not None else percentile(load.hist, 0.99),
        "sent": load.sent,
        "not_stored": load.statuses,
        # In the window (warm-up errors are listed in not_stored, not counted here).
        "errors": sum(v for k, v in load.statuses.items() if not k.startswith("warm-up")),
        "first_error": load.first_error,
        "client": args.client,
        "fixes_clamped_to_now": clamped,
        "newest_fix_age_s": round(ended - load.newest_fix, 1),
        "warmup_s": round(load.warmup_s, 1),
        "events_in_window": load.events,
        **counts,
        "server_cpu_s": round(load.cpu["server_s"], 2),
        "postgres_cpu_s": round(load.cpu["postgres_s"], 2),
        "client_cpu_s": round(load.cpu["client_s"], 2),
        "machine_busy_pct": round(load.machine_busy * 100, 1),
        "register_s": round(registered_s, 1),
        "routes_s": round(routes_s, 1),
    }


def table(rows: list[dict[str, Any]]) -> str:
    """The phases as a fixed-width table (CPU in seconds over the measured window)."""
    head = (
        f"{'phase':<9} {'devices':>7} {'acked/s':>9} {'p50 ms':>6} {'p99 ms':>6} "
        f"{'errors':>6} {'events':>7} {'(total)':>8} {'positions':>9} {'behind':>6} "
        f"{'server':>7} {'pg':>6} {'client':>6} {'busy':>5} {'warm-up':>7}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        behind = r.get("routes_behind", "")
        lines.append(
            f"{r['phase']:<9} {r['devices']:>7,} {r['rate']:>9,.0f} {r['p50_ms'] or 0:>6.0f} "
            f"{r['p99_ms'] or 0:>6.0f} {r['errors']:>6} "
            f"{r['events_in_window']:>7,} {r['events']:>8,} {r['positions']:>9,} "
            f"{behind!s:>6} {r['server_cpu_s']:>6.1f}s {r['postgres_cpu_s']:>5.1f}s "
            f"{r['client_cpu_s']:>5.1f}s {r['machine_busy_pct']:>4.0f}% {r['warmup_s']:>6.1f}s"
        )
    lines.append(
        "events: stored in the measured window (total: in the database after the phase); "
        "behind: routes whose progress lags their device's last position after the phase; "
        "server/pg/client: CPU seconds in the window of the tracker processes, PostgreSQL "
        "backends and this load generator; busy: all cores, anything on the machine"
    )
    return "\n".join(lines)


def verdicts(rows: list[dict[str, Any]]) -> list[str]:
    """Each target, measured and met or not."""
    out = []
    by = {(r["devices"], r["phase"]): r["rate"] for r in rows}
    counts = sorted({r["devices"] for r in rows}, key=[r["devices"] for r in rows].index)
    for n in counts:
        routed, unrouted = by.get((n, "routed")), by.get((n, "unrouted"))
        if routed is not None and unrouted:
            ratio = routed / unrouted
            ok = "ok" if ratio >= TARGETS["ratio"] else "MISSED"
            out.append(f"{n:,} devices: routed/unrouted = {ratio:.2f} (target ≥ 0.8) {ok}")
        if unrouted is not None:
            ok = "ok" if unrouted >= TARGETS["unrouted_rate"] else "MISSED"
            out.append(f"{n:,} devices: unrouted {unrouted:,.0f}/s (target ≥ 8,000/s) {ok}")
    if len(counts) > 1:
        first, last = counts[0], counts[-1]
        for name in ("routed", "unrouted"):
            a, b = by.get((first, name)), by.get((last, name))
            if a and b is not None:
                ok = "ok" if b / a >= TARGETS["scale"] else "MISSED"
                out.append(
                    f"{name}: {last:,} devices ÷ {first:,} = {b / a:.2f} (target ≥ 0.8) {ok}"
                )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", default="1000", help="device count(s), e.g. 1000,10000")
    parser.add_argument("--clients", type=int, default=64, help="concurrent connections")
    parser.add_argument("--workers", type=int, default=2, help="tracker serve --workers")
    parser.add_argument("--seconds", type=float, default=15.0, help="measured time per phase")
    parser.add_argument(
        "--pings", type=int, help="measure this many pings instead (--client python)"
    )
    parser.add_argument(
        "--client",
        choices=["wrk", "python"],
        help="load generator (default wrk when installed: a third of Python's CPU)",
    )
    parser.add_argument(
        "--warmup-s",
        type=float,
        help="before the window (default 3, paced 10); throughput "
        "also waits until every device had its first pings acknowledged",
    )
    parser.add_argument("--settle-s", type=float, default=2.0, help="wait before counting")
    parser.add_argument("--step-s", type=float, default=1.0, help="fix time between pings")
    parser.add_argument("--max-rate", type=float, default=15000.0, help="for the fixes' lead")
    parser.add_argument("--stops", type=int, default=30)
    parser.add_argument("--stop-every-s", type=float, default=60.0, help="of drive time")
    parser.add_argument("--only", choices=["routed", "unrouted"], help="run one phase only")
    parser.add_argument("--paced", action="store_true", help="1 ping/s per device instead")
    parser.add_argument("--duration", type=float, default=30.0, help="paced: measured seconds")
    parser.add_argument("--tick-ms", type=float, default=150.0, help="paced: TRACKER_TICK_MS")
    parser.add_argument(
        "--redis",
        action="store_true",
        help="a Redis bus (own redis-server); paced with "
        "several workers always has one, or a socket would see one worker's pings only",
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        type=lambda kv: tuple(kv.split("=", 1)),
        metavar="NAME=VALUE",
        help="a setting for the server (repeatable), e.g. TRACKER_ROUTE_CACHE_S=60",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    counts = [int(x) for x in args.devices.split(",") if x]
    if args.client is None:
        args.client = "wrk" if shutil.which("wrk") and not args.pings else "python"
    if args.client == "wrk" and args.pings:
        parser.error("--pings needs --client python (wrk runs for a time)")
    if args.warmup_s is None:
        args.warmup_s = 10.0 if args.paced else 3.0
    if args.paced:
        from fleet_paced import paced

        out = paced(args, counts[0], BENCH_DB, ADMIN, {**SERVER_ENV, **dict(args.env)})
        print_results(out, args.json)
        print(
            f"\npaced: {out['devices']:,} routed devices at 1 ping/s, {out['seconds']:.0f} s "
            f"measured, {out['pings_per_s']:,.0f} pings/s acknowledged; server "
            f"{out['server_cpu_pct']:.0f} % of one core, PostgreSQL {out['postgres_cpu_pct']:.0f} %"
        )
        for name in ("ack", "ping_to_position", "ping_to_route_event", "ping_to_eta_changed"):
            h = out[name]
            p50, p99, samples = h["p50_ms"], h["p99_ms"], h["samples"]
            print(f"  {name:<20} p50 {p50} ms, p99 {p99} ms ({samples} samples)")
        print("\n".join(out["verdict"]))
        return
    rows = []
    for n in counts:
        for routed in (True, False):
            if args.only and args.only != ("routed" if routed else "unrouted"):
                continue
            rows.append(phase(args, n, routed))
            print(f"{rows[-1]['phase']} {n}: {rows[-1]['rate']:,.0f}/s", flush=True)
    print_results({"cpus": os.cpu_count(), "workers": args.workers, "phases": rows}, args.json)
    print(
        f"\nmachine: {os.cpu_count()} cores; tracker serve --workers {args.workers}; "
        f"{args.clients} clients; {'Redis' if args.redis else 'local'} bus; single-ping "
        "requests, fixes moving forward along the drive"
    )
    print(table(rows))
    print("\n".join(verdicts(rows)))
    for r in rows:
        if r["not_stored"]:
            print(f"{r['phase']} {r['devices']}: not stored {r['not_stored']}: {r['first_error']}")


if __name__ == "__main__":
    main()
