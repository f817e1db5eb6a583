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
import json
import math
import multiprocessing as mp
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import orjson

BENCH_DB = os.environ.get(
    "BENCH_CUSTOMER_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/tracker_customer_bench"
)
TRACKER = Path(sys.executable).parent / "tracker"
ADMIN = "customer-bench-" + secrets.token_hex(8)
HIST_MAX_MS = 20_000  # 1 ms bins up to 20 s, plus one overflow bin
STATE_KEYS = {"destination", "phase", "eta", "approximate", "arrived_at", "done_at", "vehicle"}
FRAME_KEYS = {"type", "v", "time", "tracking"}
SPEED_MPS = 10.0
STOP_SPACING_M = 1500.0
LAT0, LON0 = 48.05, 11.40
LANE_DEG = 0.0005  # ~55 m between the vehicles' parallel streets


# -- helpers ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy() -> tuple[int, int]:
    """(busy, total) jiffies of all cores."""
    values = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    return sum(values) - idle, sum(values)


def percentile(hist: list[int], q: float) -> float | None:
    total = sum(hist)
    if total == 0:
        return None
    rank = q * (total - 1)
    seen = 0
    for ms, count in enumerate(hist):
        seen += count
        if seen > rank:
            return float(ms)
    return float(len(hist) - 1)


def lon_at(m: float, lat: float) -> float:
    return LON0 + m / (111_320.0 * math.cos(math.radians(lat)))


def lane(i: int) -> float:
    return LAT0 + i * LANE_DEG


async def fresh_database(url: str) -> None:
    from tracker.store.migrations import migrate

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin = await asyncpg.connect(urlunsplit(parts._replace(path="/postgres")))
    try:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
        )
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    await migrate(url)


def start_server(port: int, tick_ms: float, max_away: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DATABASE_URL": BENCH_DB,
        "TRACKER_ADMIN_TOKEN": ADMIN,
        "TRACKER_TICK_MS": str(tick_ms),
        "TRACKER_CUSTOMER_MAX_STOPS_AWAY": str(max_away),
        "TRACKER_PUBLIC_URL": f"http://127.0.0.1:{port}",
    }
    env.pop("REDIS_URL", None)
    return subprocess.Popen(
        [str(TRACKER), "serve", "--port", str(port), "--log-level", "warning"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=None,
    )


async def wait_up(base: str) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=2) as client:
        for _ in range(300):
            with contextlib.suppress(httpx.TransportError):
                if (await client.get("/healthz")).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise RuntimeError("server did not come up")


async def plan_fleet(base: str, vehicles: int, stops: int) -> tuple[list[str], list[list[Any]]]:
    """Register the vehicles and plan their routes. Returns the device tokens and, per stop,
    [tracking token, its unique name, its sequence number]."""
    sem = asyncio.Semaphore(16)
    headers = {"Authorization": f"Bearer {ADMIN}"}
    start = datetime.now(UTC) - timedelta(minutes=1)
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as client:

        async def one(i: int) -> tuple[str, list[list[Any]]]:
            async with sem:
                uid = f"bench-{i:04d}"
                r = await client.post(
                    "/api/v1/devices", json={"name": f"Van {i:04d}", "unique_id": uid}
                )
                r.raise_for_status()
                token: str = r.json()["token"]
                lat = lane(i)
                tag = secrets.token_hex(4)
                body = {
                    "device": uid,
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
                links = [
                    [urlsplit(s["tracking_url"]).path.rsplit("/", 1)[1], s["name"], s["seq"]]
                    for s in r.json()["stops"]
                ]
                return token, links

        done = await asyncio.gather(*(one(i) for i in range(vehicles)))
    return [t for t, _ in done], [link for _, links in done for link in links]


def run_loop(coro: Any) -> Any:
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


# -- the fleet: vehicles posting pings ------------------------------------------------------


class PostConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection posting JSON (httptools parses the responses):
    httpx's CPU per request would make the load generator, not the server, the limit."""

    def __init__(self, host: str) -> None:
        import httptools

        self._host = host.encode()
        self._parser = httptools.HttpResponseParser(self)
        self._done: asyncio.Future[int] | None = None
        self.transport: asyncio.Transport | None = None

    @classmethod
    async def open(cls, host: str, port: int) -> PostConnection:
        loop = asyncio.get_running_loop()
        _, proto = await loop.create_connection(lambda: cls(f"{host}:{port}"), host, port)
        return proto

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._parser.feed_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._done is not None and not self._done.done():
            self._done.set_exception(ConnectionError("connection lost"))

    def on_message_complete(self) -> None:
        if self._done is not None and not self._done.done():
            self._done.set_result(self._parser.get_status_code())

    async def post(self, path: str, token: str, body: bytes) -> int:
        assert self.transport is not None
        self._done = asyncio.get_running_loop().create_future()
        self.transport.write(
            b"POST %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (path.encode(), self._host, token.encode(), len(body), body)
        )
        return await self._done

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def fleet_main(
    base: str,
    tokens: list[str],
    rate: float,
    begin: float,
    window: tuple[float, float],
    workers: int,
    out: Any,
) -> None:
    out.put(run_loop(_fleet(base, tokens, rate, begin, window, workers)))


async def _fleet(
    base: str,
    tokens: list[str],
    rate: float,
    begin: float,
    window: tuple[float, float],
    workers: int,
) -> dict[str, Any]:
    # behind: how late a ping left against its schedule (the generator keeping up).
    stats = {"sent": 0, "ok": 0, "errors": 0, "ok_in_window": 0, "behind_ms_max_in_window": 0}
    ack = [0] * (HIST_MAX_MS + 1)
    period = 1.0 / rate
    until = window[1]
    due: asyncio.Queue[tuple[int, float]] = asyncio.Queue()
    travelled = [0.0] * len(tokens)

    async def schedule() -> None:
        # Each vehicle pings once per period; the fleet is spread evenly over the period.
        await asyncio.sleep(max(0.0, begin - time.time()))
        n = len(tokens)
        k = 0
        while True:
            at = begin + (k // n) * period + (k % n) * period / n
            if at >= until:
                break
            delay = at - time.time()
            if delay > 0.002:
                await asyncio.sleep(delay)
            due.put_nowait((k % n, at))
            k += 1
        for _ in range(workers):
            due.put_nowait((-1, 0.0))

    async def worker(client: PostConnection) -> None:
        while True:
            i, at = await due.get()
            if i < 0:
                return
            m = travelled[i]
            travelled[i] = m + SPEED_MPS * period
            lat = lane(i)
            sent = time.time()
            measured = window[0] <= sent < window[1]
            if measured:
                behind = int((sent - at) * 1000)
                stats["behind_ms_max_in_window"] = max(stats["behind_ms_max_in_window"], behind)
            body = orjson.dumps(
                {
                    "time": datetime.fromtimestamp(sent, UTC).isoformat(),
                    "lat": lat,
                    "lon": lon_at(m, lat),
                    "speed": SPEED_MPS,
                    "course": 90.0,
                    "accuracy": 5.0,
                }
            )
            stats["sent"] += 1
            try:
                status = await client.post("/api/v1/positions", tokens[i], body)
            except ConnectionError:
                stats["errors"] += 1
                client = await PostConnection.open(host, port)
                continue
            if status != 202:
                stats["errors"] += 1
                continue
            stats["ok"] += 1
            if measured:
                stats["ok_in_window"] += 1
                ack[min(int((time.time() - sent) * 1000), HIST_MAX_MS)] += 1

    parts = urlsplit(base)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    conns = [await PostConnection.open(host, port) for _ in range(workers)]
    try:
        await asyncio.gather(schedule(), *(worker(c) for c in conns))
    finally:
        for c in conns:
            c.close()
    return {**stats, "ack_p50_ms": percentile(ack, 0.5), "ack_p99_ms": percentile(ack, 0.99)}


# -- customers: one socket per stop ----------------------------------------------------------


def customers_main(
    url: str, links: list[list[Any]], max_away: int, window: tuple[float, float], out: Any
) -> None:
    out.put(run_loop(_customers(url, links, max_away, window)))


async def _customers(
    url: str, links: list[list[Any]], max_away: int, window: tuple[float, float]
) -> dict[str, Any]:
    from websockets.asyncio.client import connect

    hist = [0] * (HIST_MAX_MS + 1)
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
                    hist[min(max(int((now - fixed) * 1000), 0), HIST_MAX_MS)] += 1
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
    asyncio.run(fresh_database(BENCH_DB))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = start_server(port, args.tick_ms, args.max_stops_away)
    results: dict[str, Any] = {
        "vehicles": args.vehicles,
        "stops_per_route": args.stops,
        "sockets": args.vehicles * args.stops,
        "pings_per_s_target": args.vehicles * args.rate,
        "tick_ms": args.tick_ms,
        "max_stops_away": args.max_stops_away,
        "cpus": os.cpu_count(),
    }
    try:
        asyncio.run(wait_up(base))
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
        customers = [
            ctx.Process(
                target=customers_main,
                args=(
                    f"ws://127.0.0.1:{port}",
                    links[k::procs],
                    args.max_stops_away,
                    window,
                    queue,
                ),
            )
            for k in range(procs)
        ]
        for c in customers:
            c.start()
        fleet = ctx.Process(
            target=fleet_main,
            args=(base, tokens, args.rate, fleet_begin, window, args.fleet_connections, queue),
        )
        fleet.start()
        time.sleep(max(0.0, window[0] - time.time()))
        pids = [server.pid, fleet.pid or 0, *(c.pid or 0 for c in customers)]
        cpu0 = [cpu_seconds(p) for p in pids]
        busy0, total0 = machine_busy()
        time.sleep(max(0.0, window[1] - time.time()))
        cpu = [(cpu_seconds(p) - c) / args.seconds for p, c in zip(pids, cpu0, strict=True)]
        busy1, total1 = machine_busy()
        hist = [0] * (HIST_MAX_MS + 1)
        sockets: dict[str, int] = {}
        fleet_stats: dict[str, Any] = {}
        for _ in range(procs + 1):
            got = queue.get(timeout=120)
            if "hist" in got:
                for i, n in enumerate(got.pop("hist")):
                    hist[i] += n
                for k, v in got.items():
                    sockets[k] = sockets.get(k, 0) + v
            else:
                fleet_stats = got
        for p in (*customers, fleet):
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
                "machine_busy_pct_of_all_cores": round(
                    (busy1 - busy0) / max(1, total1 - total0) * 100, 1
                ),
                "only_own_stop": sockets.get("foreign_frames", -1) == 0
                and sockets.get("rule_violations", -1) == 0,
            }
        )
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
