"""Fleet benchmark: live pings of a whole fleet driving a real road, with and without routes.

Every device follows the real Munich drive (`bench/fleet_drive.py`: the packaged drive
there and back as a loop, the fleet spread along it) and sends one ping per request to the
native API, each fix newer than the device's last one, as a live phone sends: every ping
is a new last position, so it goes through the jump filter, the last-position update, the
live bus and (for a device with a route) route progress.

Throughput (the default): 64 keep-alive clients post as fast as the server acknowledges,
the devices taken in turn. Run twice per device count, each on a fresh database and a fresh
`tracker serve --workers 2`: once with every device on an active route of 30 stops (path =
the drive ahead of it, created with `POST /api/v1/routes`), once without routes. Device i's
fixes: the first `--lead-s` estimate in the past (enough that the run never catches up with
the clock), each next one `--step-s` later and that much further along the drive, but never
later than now (then 1 ms later than the previous one, and 1 ms further along): real speeds,
so the jump filter passes every ping, and nothing is in the future. Prints, per phase:
acknowledged pings/s (202 with `stored: 1`), p50/p99 ack latency, errors, events and
positions stored (counted in the database after the run), how many routes' progress lags
their device's last position, and the CPU seconds of the server (the tracker processes),
of PostgreSQL's backends for the bench database and of the load generator; then
routed/unrouted and, with several device counts, the rate at the largest count ÷ the first.

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
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
from common import (
    PostConnection,
    add_devices,
    cpu_of,
    cpu_spent,
    machine_busy,
    new_hist,
    percentile,
    print_results,
    process_tree,
    record,
    run_loop,
    running_server,
)
from fleet_drive import Fleet, create_routes

BENCH_DB = os.environ.get(
    "BENCH_FLEET_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/tracker_fleet_bench"
)
ADMIN = "fleet-bench-" + secrets.token_hex(8)
# The load generator plays thousands of phones: auth lookups cached like ingest_bench's.
SERVER_ENV = {"TRACKER_AUTH_CACHE_S": "30"}
WARM_PINGS = 4
WARM_MAX_S = 600.0
TARGETS = {"ratio": 0.8, "unrouted_rate": 8000.0, "scale": 0.8}


@dataclass
class Load:
    """What the load generator saw in the measured window (and outside it, for errors)."""

    seconds: float = 0.0
    acked: int = 0  # 202 with "stored":1, sent in the window
    hist: list[int] = field(default_factory=new_hist)
    sent: int = 0  # over the whole phase, warm-up included
    statuses: dict[str, int] = field(default_factory=dict)  # everything but a stored 202
    first_error: str = ""
    warmup_s: float = 0.0  # until every device had its first pings acknowledged
    events: int = 0  # stored in the window
    cpu: dict[str, float] = field(default_factory=dict)
    machine_busy: float = 0.0


class Pings:
    """Each device's next ping: fixes moving forward in time along its drive."""

    def __init__(self, fleet: Fleet, step_s: float, lead_s: float) -> None:
        self.fleet = fleet
        self.step = step_s
        start = time.time() - lead_s
        self.last = [start] * fleet.devices  # fix time of the device's last ping
        self.drive = [0.0] * fleet.devices  # seconds of drive so far
        self.busy = bytearray(fleet.devices)  # a ping of the device is in flight
        self.acked = [0] * fleet.devices
        self.warm = 0  # devices with at least `WARM_PINGS` pings acknowledged
        self.clamped = 0  # pings whose fix had caught up with the clock

    def next(self, i: int) -> bytes:
        last = self.last[i]
        t = last + self.step
        now = time.time() - 0.001
        if t > now:
            t = now
            self.clamped += 1
        t = max(round(t, 3), round(last + 0.001, 3))  # whole ms, always after the last fix
        self.drive[i] += t - last
        self.last[i] = t
        return self.fleet.ping(i, t, self.drive[i])


async def backend_pids(conn: asyncpg.Connection) -> list[int]:
    """PostgreSQL backends connected to the bench database (not this one)."""
    rows = await conn.fetch(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid()"
    )
    return [r["pid"] for r in rows]


async def drive(
    base: str,
    tokens: list[str],
    pings: Pings,
    *,
    clients: int,
    warmup_s: float,
    seconds: float,
    count: int | None,
    server_pid: int,
) -> Load:
    """Post pings from `clients` connections for `warmup_s` + `seconds` (or until `count`
    pings sent in the window were answered); measure the window after the warm-up."""
    parts = urlsplit(base)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    load = Load()
    n = len(tokens)
    state = {"k": 0, "measuring": False, "stop": False}
    conns = [await PostConnection.open(host, port) for _ in range(clients)]

    def pick() -> int:
        # The devices in turn, skipping one whose previous ping is still in flight (with
        # fewer devices than clients), so each device's pings arrive in fix order.
        for _ in range(n):
            i = state["k"] % n
            state["k"] += 1
            if not pings.busy[i]:
                return i
        return -1

    async def client(conn: PostConnection) -> None:
        while not state["stop"]:
            i = pick()
            if i < 0:
                await asyncio.sleep(0.001)
                continue
            pings.busy[i] = 1
            body = pings.next(i)
            measured = state["measuring"]
            load.sent += 1
            t0 = time.perf_counter()
            try:
                status = await conn.post("/api/v1/positions", tokens[i], body)
            except ConnectionError:
                load.statuses["connection lost"] = load.statuses.get("connection lost", 0) + 1
                conn = await PostConnection.open(host, port)
                continue
            finally:
                pings.busy[i] = 0
            elapsed = time.perf_counter() - t0
            if status == 202 and b'"stored":1' in conn.body:
                pings.acked[i] += 1
                if pings.acked[i] == WARM_PINGS:
                    pings.warm += 1
                # Counted when sent and answered within the window.
                if measured and state["measuring"]:
                    load.acked += 1
                    record(load.hist, elapsed)
                    if count is not None and load.acked >= count:
                        state["stop"] = True
                continue
            key = f"{status} duplicate" if status == 202 else str(status)
            load.statuses[key] = load.statuses.get(key, 0) + 1
            if not load.first_error:
                load.first_error = f"{status} {conn.body[:300].decode(errors='replace')}"

    async def clock() -> None:
        began = time.perf_counter()
        await asyncio.sleep(warmup_s)
        # A route's first fixes on each worker build its plan, a one-off cost: the window
        # starts once every device had a few pings acknowledged (so both workers saw it).
        while pings.warm < n and time.perf_counter() - began < WARM_MAX_S:
            await asyncio.sleep(0.1)
        load.warmup_s = time.perf_counter() - began
        db = await asyncpg.connect(BENCH_DB)
        try:
            events0 = await db.fetchval("SELECT count(*) FROM events")
            procs = process_tree(server_pid)  # tracker serve and its workers
            backends = await backend_pids(db)
            me = [os.getpid()]
            before = (cpu_of(procs), cpu_of(backends), cpu_of(me), machine_busy())
            state["measuring"] = True
            t0 = time.perf_counter()
            deadline = t0 + (seconds if count is None else 3600.0)
            while not state["stop"] and time.perf_counter() < deadline:
                await asyncio.sleep(0.05)
            state["measuring"] = False
            load.seconds = time.perf_counter() - t0
            load.events = await db.fetchval("SELECT count(*) FROM events") - events0
            backends = sorted(set(backends) | set(await backend_pids(db)))
            after = (cpu_of(procs), cpu_of(backends), cpu_of(me), machine_busy())
            state["stop"] = True
        finally:
            await db.close()
        load.cpu = {
            "server_s": cpu_spent(before[0], after[0]),
            "postgres_s": cpu_spent(before[1], after[1]),
            "client_s": cpu_spent(before[2], after[2]),
        }
        busy, total = after[3][0] - before[3][0], after[3][1] - before[3][1]
        load.machine_busy = busy / max(1, total)

    try:
        await asyncio.gather(clock(), *(client(c) for c in conns))
    finally:
        for c in conns:
            c.close()
    return load


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
    with running_server(BENCH_DB, ADMIN, SERVER_ENV, workers, "/readyz", 30.0) as server:
        t0 = time.perf_counter()
        prefix = "r" if routed else "u"
        tokens = asyncio.run(add_devices(server.base, ADMIN, devices, prefix, name))
        registered_s = time.perf_counter() - t0
        routes_s = 0.0
        if routed:
            ids = [f"{prefix}-{i:04d}" for i in range(devices)]
            routes_s = asyncio.run(
                create_routes(server.base, ADMIN, fleet, ids, args.stops, args.stop_every_s)
            )
        # Enough lead that the run never catches up with the clock at up to --max-rate
        # (the warm-up's first pings are slower: WARM_PINGS each, at most --max-rate).
        per_device = WARM_PINGS + args.max_rate * args.warmup_s / devices
        per_device += args.pings / devices if args.pings else args.max_rate * args.seconds / devices
        pings = Pings(fleet, args.step_s, min(per_device * args.step_s + 5.0, 6 * 3600.0))
        load: Load = run_loop(
            drive(
                server.base,
                tokens,
                pings,
                clients=args.clients,
                warmup_s=args.warmup_s,
                seconds=args.seconds,
                count=args.pings,
                server_pid=server.process.pid,
            )
        )
        time.sleep(args.settle_s)  # route work after an ack (if any) finishes
        counts = asyncio.run(db_counts(routed))
    rate = load.acked / max(load.seconds, 1e-9)
    return {
        "phase": name,
        "devices": devices,
        "rate": round(rate, 1),
        "acked": load.acked,
        "seconds": round(load.seconds, 2),
        "p50_ms": percentile(load.hist, 0.5),
        "p99_ms": percentile(load.hist, 0.99),
        "sent": load.sent,
        "not_stored": load.statuses,
        "first_error": load.first_error,
        "fixes_clamped_to_now": pings.clamped,
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
            f"{r['p99_ms'] or 0:>6.0f} {sum(r['not_stored'].values()):>6} "
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
    parser.add_argument("--pings", type=int, help="measure this many pings instead")
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
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    counts = [int(x) for x in args.devices.split(",") if x]
    if args.warmup_s is None:
        args.warmup_s = 10.0 if args.paced else 3.0
    if args.paced:
        from fleet_paced import paced

        out = paced(args, counts[0], BENCH_DB, ADMIN, SERVER_ENV)
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
        f"{args.clients} clients; single-ping requests, fixes moving forward along the drive"
    )
    print(table(rows))
    print("\n".join(verdicts(rows)))
    for r in rows:
        if r["not_stored"]:
            print(f"{r['phase']} {r['devices']}: not stored {r['not_stored']}: {r['first_error']}")


if __name__ == "__main__":
    main()
