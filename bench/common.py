"""What the end-to-end benchmarks share: a fresh database, a `tracker serve` process on a
free port, CPU accounting from /proc, 1 ms latency histograms, device registration, and a
cheap keep-alive HTTP client for load generators.

The benchmark scripts import this as `common`: Python puts a script's own folder (bench/)
first on sys.path when it runs `.venv/bin/python bench/<name>.py`, and spawned worker
processes inherit that path.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import orjson

# The `tracker` console script installed beside the interpreter running the benchmark.
TRACKER = Path(sys.executable).parent / "tracker"
HIST_MAX_MS = 20_000  # latency histograms: 1 ms bins up to 20 s, plus one overflow bin


# -- processes and CPU -----------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_tree(pid: int) -> list[int]:
    """`pid` and every process descended from it (a `tracker serve --workers N` parent and
    its workers), from the parent ids in /proc."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        parents.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(parents.get(p, []))
    return tree


def cpu_of(pids: Sequence[int]) -> dict[int, float]:
    """CPU seconds so far of each process still running (see cpu_seconds)."""
    used = {}
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            used[pid] = cpu_seconds(pid)
    return used


def cpu_spent(before: Mapping[int, float], after: Mapping[int, float]) -> float:
    """CPU seconds the processes in `after` used since `before` (a process new since then
    counts from 0; one that exited meanwhile is lost)."""
    return sum(t - before.get(pid, 0.0) for pid, t in after.items())


def machine_busy() -> tuple[int, int]:
    """(busy, total) CPU jiffies of the whole machine so far, from /proc/stat."""
    values = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    total = sum(values[:8])  # guest time is already counted in user time
    return total - idle, total


def cpu_until(pids: Sequence[int], until: float, seconds: float) -> tuple[list[float], float]:
    """Sleep until the wall-clock time `until`; return each process's CPU use in cores
    (CPU seconds per `seconds`) and the share of all cores busy over that span."""
    before = [cpu_seconds(pid) for pid in pids]
    busy0, total0 = machine_busy()
    time.sleep(max(0.0, until - time.time()))
    used = [(cpu_seconds(pid) - b) / seconds for pid, b in zip(pids, before, strict=True)]
    busy1, total1 = machine_busy()
    return used, (busy1 - busy0) / max(1, total1 - total0)


def run_loop(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine on uvloop when installed (cheaper per socket), else asyncio."""
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


def run_to_queue(out: Any, main: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> None:
    """A worker process's target: run `main(*args)` on an event loop and put its result on
    the multiprocessing queue `out`."""
    out.put(run_loop(main(*args)))


# -- latency histograms ------------------------------------------------------------------------


def new_hist() -> list[int]:
    """An empty 1 ms histogram."""
    return [0] * (HIST_MAX_MS + 1)


def record(hist: list[int], seconds: float) -> None:
    """Count one latency in its 1 ms bin (negative clamps to 0, beyond range to overflow)."""
    hist[min(max(int(seconds * 1000), 0), HIST_MAX_MS)] += 1


def merge(into: list[int], hist: list[int]) -> None:
    """Add `hist`'s counts to `into`, bin by bin."""
    for i, n in enumerate(hist):
        into[i] += n


def percentile(hist: list[int], q: float) -> float | None:
    """The q-quantile (0..1) of a 1 ms histogram, in ms; None when it is empty."""
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


def print_results(results: Mapping[str, Any], path: Path | None) -> None:
    """Print the results as indented JSON, and write them to `path` too when given."""
    text = json.dumps(results, indent=2)
    print(text)
    if path:
        path.write_text(text)


# -- the server under test -------------------------------------------------------------------


async def fresh_database(url: str) -> None:
    """Drop and recreate the database named in `url`, then apply the migrations."""
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


def start_server(
    port: int,
    database_url: str,
    admin_token: str,
    env_overrides: Mapping[str, str] | None = None,
    extra_args: Sequence[str] = (),
) -> subprocess.Popen[bytes]:
    """Start `tracker serve` on 127.0.0.1:`port` with a local bus (REDIS_URL removed unless
    `env_overrides` sets it), its public URL that address; `env_overrides` and `extra_args`
    add settings and options. Does not wait for it to be ready."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "TRACKER_ADMIN_TOKEN": admin_token,
        "TRACKER_PUBLIC_URL": f"http://127.0.0.1:{port}",
        # The load generators play thousands of phones from one address, some post faster
        # than a phone would, and the fan-out benchmark holds hundreds of dispatcher sockets
        # on the admin token: the limits would refuse them. (A benchmark can still turn
        # them on through `env_overrides`.)
        "TRACKER_RATE_LIMIT_DEVICE": "off",
        "TRACKER_RATE_LIMIT_IP": "off",
        "TRACKER_WS_MAX_PER_TOKEN": "0",
        **(env_overrides or {}),
    }
    if "REDIS_URL" not in (env_overrides or {}):
        env.pop("REDIS_URL", None)
    return subprocess.Popen(
        [str(TRACKER), "serve", "--port", str(port), *extra_args, "--log-level", "warning"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=None,
    )


async def wait_up(base: str, path: str = "/healthz") -> None:
    """Poll `path` until it answers 200 (up to 30 s)."""
    async with httpx.AsyncClient(base_url=base, timeout=2) as client:
        for _ in range(300):
            with contextlib.suppress(httpx.TransportError):
                if (await client.get(path)).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    raise RuntimeError("server did not come up")


def stop_server(server: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """SIGTERM the server, and kill it if it has not exited within `timeout` seconds."""
    server.send_signal(signal.SIGTERM)
    try:
        server.wait(timeout)
    except subprocess.TimeoutExpired:
        server.kill()


@contextlib.contextmanager
def private_redis() -> Iterator[str]:
    """A redis-server of the benchmark's own on a free port, saving nothing; yields its URL.

    Pub/sub channels are global to a Redis server (whatever the database number), so on a
    shared one the benchmark's bus messages would reach every other tracker using it, and
    theirs the benchmark's server.
    """
    port = free_port()
    args = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    process = subprocess.Popen(["redis-server", *args], stdout=subprocess.DEVNULL)
    try:
        address = ("127.0.0.1", port)
        for _ in range(100):
            with contextlib.suppress(OSError), socket.create_connection(address, 1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    break
            time.sleep(0.05)
        else:
            raise RuntimeError("redis-server did not come up")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()


@dataclass(frozen=True)
class Server:
    """A running `tracker serve` process and where it listens."""

    port: int
    process: subprocess.Popen[bytes]

    @property
    def base(self) -> str:
        """Its HTTP base URL."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_base(self) -> str:
        """Its WebSocket base URL."""
        return f"ws://127.0.0.1:{self.port}"


@contextlib.contextmanager
def running_server(
    database_url: str,
    admin_token: str,
    env_overrides: Mapping[str, str] | None = None,
    extra_args: Sequence[str] = (),
    ready_path: str = "/healthz",
    stop_timeout: float = 20.0,
) -> Iterator[Server]:
    """A fresh database and a server on a free port (see start_server), ready to serve when
    entered and stopped on exit."""
    asyncio.run(fresh_database(database_url))
    port = free_port()
    process = start_server(port, database_url, admin_token, env_overrides, extra_args)
    try:
        server = Server(port, process)
        asyncio.run(wait_up(server.base, ready_path))
        yield server
    finally:
        stop_server(process, stop_timeout)


async def add_devices(
    base: str, admin_token: str, n: int, unique_prefix: str = "bench", name_prefix: str = "Van"
) -> list[str]:
    """Register devices `{unique_prefix}-0000`… (named `{name_prefix} 0000`…), 16 at a time;
    returns their tokens in order."""
    sem = asyncio.Semaphore(16)
    headers = {"Authorization": f"Bearer {admin_token}"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as client:

        async def one(i: int) -> str:
            async with sem:
                r = await client.post(
                    "/api/v1/devices",
                    json={
                        "name": f"{name_prefix} {i:04d}",
                        "unique_id": f"{unique_prefix}-{i:04d}",
                    },
                )
                r.raise_for_status()
                token: str = r.json()["token"]
                return token

        return list(await asyncio.gather(*(one(i) for i in range(n))))


# -- load generation -------------------------------------------------------------------------


async def post_pings(
    base: str,
    tokens: Sequence[str],
    make_ping: Callable[[int, float], tuple[float, bytes]],
    *,
    period: float,
    begin: float | None,
    until: float,
    window: tuple[float, float],
    workers: int,
    stats: dict[str, int],
    ack: list[int],
) -> None:
    """Post one ping per vehicle (token) per `period` from `begin` (None: once connected) to
    `until`, the fleet spread evenly over the period, over `workers` keep-alive connections.

    `make_ping(vehicle, due)` returns (sent time, JSON body) for a ping due at wall-clock
    `due`. Counts into `stats`: "sent", "ok" (202), "errors"; and for pings sent within
    `window`, "ok_in_window" and their ack latency into the histogram `ack`.
    """
    due: asyncio.Queue[tuple[int, float]] = asyncio.Queue()

    async def schedule(start: float) -> None:
        await asyncio.sleep(max(0.0, start - time.time()))
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
            due.put_nowait((-1, 0.0))  # stops a worker

    async def worker(client: PostConnection) -> None:
        while True:
            i, at = await due.get()
            if i < 0:
                return
            sent, body = make_ping(i, at)
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
                record(ack, time.time() - sent)

    parts = urlsplit(base)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    conns = [await PostConnection.open(host, port) for _ in range(workers)]
    try:
        start = time.time() if begin is None else begin
        await asyncio.gather(schedule(start), *(worker(c) for c in conns))
    finally:
        for c in conns:
            c.close()


def ping_body(sent: float, lat: float, lon: float, speed: float, course: float) -> bytes:
    """The native API's JSON for one fix taken at wall-clock `sent` (speed in m/s)."""
    return orjson.dumps(
        {
            "time": datetime.fromtimestamp(sent, UTC).isoformat(),
            "lat": lat,
            "lon": lon,
            "speed": speed,
            "course": course,
            "accuracy": 5.0,
        }
    )


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
        self._body: list[bytes] = []
        self.transport: asyncio.Transport | None = None
        self.body = b""  # the last response's body

    @classmethod
    async def open(cls, host: str, port: int) -> PostConnection:
        """Connect to host:port."""
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

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        self.body = b"".join(self._body)
        self._body.clear()
        if self._done is not None and not self._done.done():
            self._done.set_result(self._parser.get_status_code())

    async def post(self, path: str, token: str, body: bytes) -> int:
        """POST and wait for the response; returns its status code (its body in `body`)."""
        assert self.transport is not None
        self._done = asyncio.get_running_loop().create_future()
        self.transport.write(
            b"POST %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
            % (path.encode(), self._host, token.encode(), len(body), body)
        )
        return await self._done

    def close(self) -> None:
        """Close the connection."""
        if self.transport is not None:
            self.transport.close()
