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
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import orjson

ROOT = Path(__file__).resolve().parents[1]
BENCH_DB = os.environ.get(
    "BENCH_FANOUT_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/tracker_fanout_bench"
)
TRACKER = Path(sys.executable).parent / "tracker"
ADMIN = "fanout-bench-" + secrets.token_hex(8)
HIST_MAX_MS = 20_000  # latency histogram: 1 ms bins up to 20 s, plus one overflow bin


# -- helpers ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU jiffies of the whole machine so far, from /proc/stat."""
    values = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])
    return total - idle, total


def percentile(hist: list[int], q: float) -> float | None:
    """The q-quantile (0..1) of a 1 ms histogram, in ms."""
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


def start_server(port: int, tick_ms: float, deflate: bool) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DATABASE_URL": BENCH_DB,
        "TRACKER_ADMIN_TOKEN": ADMIN,
        "TRACKER_TICK_MS": str(tick_ms),
        "TRACKER_WS_DEFLATE": "1" if deflate else "0",
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


async def add_devices(base: str, n: int) -> list[str]:
    sem = asyncio.Semaphore(16)
    headers = {"Authorization": f"Bearer {ADMIN}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as client:

        async def one(i: int) -> str:
            async with sem:
                r = await client.post(
                    "/api/v1/devices", json={"name": f"Van {i:04d}", "unique_id": f"bench-{i:04d}"}
                )
                r.raise_for_status()
                token: str = r.json()["token"]
                return token

        return list(await asyncio.gather(*(one(i) for i in range(n))))


def run_loop(coro: Any) -> Any:
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


# -- load generator: vehicles posting pings ------------------------------------------------


class PostConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection posting JSON, responses parsed by httptools.

    httpx costs about 1 ms of CPU per request, so it cannot drive 1,000 pings/s on a small
    machine that also runs the server; this does the same with a fraction of that.
    """

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
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        self._parser.feed_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._done is not None and not self._done.done():
            self._done.set_exception(ConnectionError("connection lost"))

    def on_message_complete(self) -> None:
        if self._done is not None and not self._done.done():
            self._done.set_result(self._parser.get_status_code())

    async def post(self, path: str, token: str, body: bytes) -> int:
        """POST and wait for the response; returns its status code."""
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


def pinger_main(
    base: str, tokens: list[str], rate: float, until: float, window: tuple[float, float], out: Any
) -> None:
    out.put(run_loop(_pinger(base, tokens, rate, until, window)))


async def _pinger(
    base: str, tokens: list[str], rate: float, until: float, window: tuple[float, float]
) -> dict[str, Any]:
    rng = random.Random(7)
    hist = [0] * (HIST_MAX_MS + 1)
    stats = {"sent": 0, "ok": 0, "errors": 0, "ok_in_window": 0, "behind_ms_max": 0}
    period = 1.0 / rate
    workers = 48
    due: asyncio.Queue[tuple[int, float]] = asyncio.Queue()
    state = [
        [48.10 + rng.random() * 0.10, 11.50 + rng.random() * 0.15, rng.random() * 360]
        for _ in tokens
    ]

    async def schedule() -> None:
        # Each vehicle pings once per period, the fleet spread evenly over the period.
        start = time.time()
        n = len(tokens)
        k = 0
        while True:
            at = start + (k // n) * period + (k % n) * period / n
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
            lat, lon, course = state[i]
            lat += (rng.random() - 0.5) * 1e-4
            lon += (rng.random() - 0.5) * 1e-4
            state[i][:2] = [lat, lon]
            sent = time.time()
            behind = int((sent - at) * 1000)
            stats["behind_ms_max"] = max(stats["behind_ms_max"], behind)
            body = orjson.dumps(
                {
                    "time": datetime.fromtimestamp(sent, UTC).isoformat(),
                    "lat": lat,
                    "lon": lon,
                    "speed": 8.0,
                    "course": course,
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
            if window[0] <= sent < window[1]:
                stats["ok_in_window"] += 1
                ms = int((time.time() - sent) * 1000)
                hist[min(ms, HIST_MAX_MS)] += 1

    parts = urlsplit(base)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    conns = [await PostConnection.open(host, port) for _ in range(workers)]
    try:
        await asyncio.gather(schedule(), *(worker(c) for c in conns))
    finally:
        for c in conns:
            c.close()
    return {**stats, "ack_hist": hist}


# -- receivers: dispatcher sockets -----------------------------------------------------------


def receiver_main(
    url: str, sockets: int, probes: int, deflate: bool, window: tuple[float, float], out: Any
) -> None:
    out.put(run_loop(_receiver(url, sockets, probes, deflate, window)))


async def _receiver(
    url: str, sockets: int, probes: int, deflate: bool, window: tuple[float, float]
) -> dict[str, Any]:
    """Hold `sockets` sockets reading every frame; `probes` of them, spread evenly over the
    connection order (the order the server writes them in), also parse and time frames."""
    from websockets.asyncio.client import connect

    hist = [0] * (HIST_MAX_MS + 1)
    # Split of the latency: fix time → frame stamped by the server's tick (ingest + waiting
    # for the tick), and frame stamp → arrival (writing to sockets + the receiver's own lag).
    to_tick = [0] * (HIST_MAX_MS + 1)
    to_arrival = [0] * (HIST_MAX_MS + 1)
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
                to_arrival[min(max(int((now - stamped) * 1000), 0), HIST_MAX_MS)] += 1
                for v in message["vehicles"]:
                    if v["id"].endswith("0"):
                        fixed = datetime.fromisoformat(v["time"]).timestamp()
                        ms = int((now - fixed) * 1000)
                        hist[min(max(ms, 0), HIST_MAX_MS)] += 1
                        ms = int((stamped - fixed) * 1000)
                        to_tick[min(max(ms, 0), HIST_MAX_MS)] += 1
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
    hist: list[int] = field(default_factory=lambda: [0] * (HIST_MAX_MS + 1))
    to_tick: list[int] = field(default_factory=lambda: [0] * (HIST_MAX_MS + 1))
    to_arrival: list[int] = field(default_factory=lambda: [0] * (HIST_MAX_MS + 1))
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
            target=receiver_main,
            args=(url, n, round(probes * n / sockets), deflate, window, queue),
        )
        for n in per
        if n > 0
    ]
    for w in workers:
        w.start()
    time.sleep(max(0.0, start - time.time()))
    pids = [server_pid, pinger_pid, *(w.pid for w in workers if w.pid)]
    before = [cpu_seconds(pid) for pid in pids]
    busy0, total0 = machine_busy()
    time.sleep(max(0.0, window[1] - time.time()))
    used = [(cpu_seconds(pid) - b) / seconds for pid, b in zip(pids, before, strict=True)]
    busy1, total1 = machine_busy()
    phase = Phase(
        sockets,
        seconds,
        server_cpu=used[0],
        pinger_cpu=used[1],
        receivers_cpu=sum(used[2:]),
        machine_busy=(busy1 - busy0) / max(1, total1 - total0),
    )
    for _ in workers:
        result = queue.get(timeout=connect_s + seconds + 120)
        for name in ("hist", "to_tick", "to_arrival"):
            target = getattr(phase, name)
            for i, c in enumerate(result.pop(name)):
                target[i] += c
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
    asyncio.run(fresh_database(BENCH_DB))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = start_server(port, args.tick_ms, args.server_deflate)
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
    try:
        asyncio.run(wait_up(base))
        tokens = asyncio.run(add_devices(base, args.vehicles))
        print(f"server pid {server.pid} on {base}; {len(tokens)} devices registered", flush=True)
        budget_end = began + args.budget_seconds
        phase_s = args.connect_seconds + args.seconds
        until = min(budget_end, time.time() + 3 + phase_s * len(counts) + 5)
        queue = ctx.Queue()
        ping_window = (time.time() + 3 + args.connect_seconds, until)
        pinger = ctx.Process(
            target=pinger_main, args=(base, tokens, args.rate, until, ping_window, queue)
        )
        pinger.start()
        time.sleep(3)  # let the pings reach a steady rate
        url = f"ws://127.0.0.1:{port}/ws/dispatch?token={ADMIN}"
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
                server.pid,
                pinger.pid or 0,
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
        pinger.join(30)
        ack = pinger_stats.pop("ack_hist")
        pinger_stats["ack_p50_ms"] = percentile(ack, 0.5)
        pinger_stats["ack_p99_ms"] = percentile(ack, 0.99)
        pinger_stats["pings_per_s"] = round(
            pinger_stats["ok_in_window"] / max(1.0, ping_window[1] - ping_window[0]), 1
        )
        results["pinger"] = pinger_stats
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
