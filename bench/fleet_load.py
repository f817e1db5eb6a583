"""The fleet benchmark's load generators: each device's pings in turn, fixes moving
forward along its drive (fleet_drive.Fleet), one ping per request, a closed loop of
keep-alive connections posting as fast as the server answers.

- `wrk_load`: wrk with a Lua script (the default): a third of the Python client's CPU per
  request (against a stub server: ~20 µs against ~60 µs), so on a small machine the
  server, not the load generator, sets the rate. The drive, resampled to
  1 s, goes into the script; device i's j-th ping of the phase is `j × step` seconds after
  its start, in fix time and along the drive, the same arithmetic as `Pings`.
- `python_load`: common.PostConnection from this process, about 3× wrk's CPU per request;
  needs no wrk and measures exactly the window (used by the smoke test).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import resource
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
from common import (
    PostConnection,
    cpu_of,
    cpu_spent,
    machine_busy,
    new_hist,
    process_tree,
    record,
)
from fleet_drive import GRID, GRID_STEP_DEG, Fleet

WARM_PINGS = 4  # acknowledged per device before the window opens
WARM_MAX_S = 600.0


@dataclass
class Load:
    """What the load generator saw in the measured window (and outside it, for errors)."""

    seconds: float = 0.0
    acked: int = 0  # 202 with "stored":1, sent in the window
    hist: list[int] = field(default_factory=new_hist)
    p50_ms: float | None = None  # from wrk (the histogram stays empty then)
    p99_ms: float | None = None
    newest_fix: float = 0.0  # epoch seconds
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

    def newest(self) -> float:
        """The newest fix time sent (epoch seconds)."""
        return max(self.last)

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


class Meter:
    """Measures the window it is entered for: its length, the events stored meanwhile and
    the CPU of the tracker processes, PostgreSQL's backends and the load generator `own`
    (RUSAGE_CHILDREN covers a client run as a subprocess meanwhile), into `load`."""

    def __init__(self, db_url: str, server_pid: int, own: list[int], load: Load) -> None:
        self.db_url, self.server_pid, self.own, self.load = db_url, server_pid, own, load
        self.t0 = 0.0

    async def __aenter__(self) -> Meter:
        self.db = await asyncpg.connect(self.db_url)
        self.events0 = await self.db.fetchval("SELECT count(*) FROM events")
        self.procs = process_tree(self.server_pid)  # tracker serve and its workers
        self.backends = await backend_pids(self.db)
        self.children = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.before = (cpu_of(self.procs), cpu_of(self.backends), cpu_of(self.own))
        self.busy0 = machine_busy()
        self.t0 = time.perf_counter()
        return self

    async def __aexit__(self, *exc: object) -> None:
        load = self.load
        load.seconds = time.perf_counter() - self.t0
        try:
            backends = sorted(set(self.backends) | set(await backend_pids(self.db)))
            after = (cpu_of(self.procs), cpu_of(backends), cpu_of(self.own))
            busy1 = machine_busy()
            load.events = await self.db.fetchval("SELECT count(*) FROM events") - self.events0
        finally:
            await self.db.close()
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        waited = (children.ru_utime - self.children.ru_utime) + (
            children.ru_stime - self.children.ru_stime
        )
        load.cpu = {
            "server_s": cpu_spent(self.before[0], after[0]),
            "postgres_s": cpu_spent(self.before[1], after[1]),
            "client_s": cpu_spent(self.before[2], after[2]) + waited,
        }
        busy, total = busy1[0] - self.busy0[0], busy1[1] - self.busy0[1]
        load.machine_busy = busy / max(1, total)


async def python_load(
    base: str,
    db_url: str,
    tokens: list[str],
    pings: Pings,
    *,
    clients: int,
    warmup_s: float,
    seconds: float,
    count: int | None,
    server_pid: int,
) -> Load:
    """Post pings from `clients` keep-alive connections (common.PostConnection) for
    `warmup_s` + `seconds` (or until `count` pings sent in the window were answered);
    measure the window after the warm-up."""
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
        async with Meter(db_url, server_pid, [os.getpid()], load) as meter:
            state["measuring"] = True
            deadline = meter.t0 + (seconds if count is None else 3600.0)
            while not state["stop"] and time.perf_counter() < deadline:
                await asyncio.sleep(0.05)
            state["measuring"] = False
        state["stop"] = True

    try:
        await asyncio.gather(clock(), *(client(c) for c in conns))
    finally:
        for c in conns:
            c.close()
    load.newest_fix = pings.newest()
    return load


WRK_SCRIPT = r"""
-- Set before this: N_DEVICES, N_THREADS, START_MS, STEP_MS, COUNTERS, PERIOD, GRID,
-- GRID_STEP, LAT, LON, SPEED, COURSE (the loop at whole seconds), TOKENS_FILE (one a
-- line: too many for wrk's command line), OUT_FILE.
local threads = {}
function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

local mine, heads = {}, {}
counter, errors, first_error = 0, 0, ""
-- Thread tid plays every N_THREADS-th device, so one device's pings come from one thread in
-- order (with at least as many devices per thread as connections, one at a time).
function init(args)
  local i = 0
  for token in io.lines(TOKENS_FILE) do
    if i % N_THREADS == tid - 1 then
      table.insert(mine, i)
      heads[#mine] = {["Authorization"] = "Bearer " .. token,
                      ["Content-Type"] = "application/json"}
    end
    i = i + 1
  end
  counter = COUNTERS[tid]
end

local half = math.floor(GRID / 2)
function request()
  local n = #mine
  local slot = counter % n
  local j = math.floor(counter / n) + 1  -- this device's ping number, from 1
  counter = counter + 1
  local i = mine[slot + 1]
  -- fleet_drive.Fleet.where: the loop at phase + drive time, plus the device's offset.
  local x = (PERIOD * i / N_DEVICES + j * STEP_MS / 1000) % PERIOD
  local k = math.floor(x)
  local f = x - k
  local g = (i * 7919) % (GRID * GRID)
  local lat = LAT[k + 1] + (LAT[k + 2] - LAT[k + 1]) * f + (math.floor(g / GRID) - half) * GRID_STEP
  local lon = LON[k + 1] + (LON[k + 2] - LON[k + 1]) * f + (g % GRID - half) * GRID_STEP
  local body = string.format(
    '{"time":%d,"lat":%.7f,"lon":%.7f,"speed":%.2f,"course":%.1f,"accuracy":5.0}',
    START_MS + j * STEP_MS, lat, lon, SPEED[k + 2], COURSE[k + 2])
  return wrk.format("POST", "/api/v1/positions", heads[slot + 1], body)
end

function response(status, headers, body)
  if status ~= 202 or not string.find(body, '"stored":1', 1, true) then
    errors = errors + 1
    if first_error == "" then first_error = status .. " " .. string.sub(body, 1, 300) end
  end
end

function done(summary, latency, requests)
  local out = io.open(OUT_FILE, "w")
  local parts = {}
  for _, t in ipairs(threads) do
    local first = (string.gsub((string.gsub(t:get("first_error"), '[\\"]', "'")), "%c", " "))
    table.insert(parts, string.format('{"counter": %d, "errors": %d, "first_error": "%s"}',
      t:get("counter"), t:get("errors"), first))
  end
  out:write(string.format('{"requests": %d, "seconds": %f, "p50_us": %d, "p99_us": %d, ' ..
    '"io_errors": %d, "threads": [%s]}', summary.requests, summary.duration / 1e6,
    latency:percentile(50), latency:percentile(99), summary.errors.connect +
    summary.errors.read + summary.errors.write + summary.errors.timeout,
    table.concat(parts, ", ")))
  out:close()
end
"""


def _first_error(result: dict[str, Any]) -> str:
    return next((t["first_error"] for t in result["threads"] if t["first_error"]), "")


def _lua_list(values: list[float], digits: int) -> str:
    return "{" + ",".join(f"{v:.{digits}f}" for v in values) + "}"


class Wrk:
    """wrk runs playing the fleet, each run continuing every device's drive where the last
    one left it (the threads' request counters carry over)."""

    THREADS = 2

    def __init__(
        self, base: str, tokens: list[str], fleet: Fleet, step_s: float, lead_s: float
    ) -> None:
        if shutil.which("wrk") is None:
            raise SystemExit("wrk not found (Debian package `wrk`); or use --client python")
        self.base, self.tokens, self.fleet = base, tokens, fleet
        self.step_ms = round(step_s * 1000)
        self.start_ms = int((time.time() - lead_s) * 1000)
        self.counters = [0] * self.THREADS
        self.per_thread = [len(range(t, len(tokens), self.THREADS)) for t in range(self.THREADS)]
        # The loop at whole seconds (two samples past its end for the interpolation).
        samples = [fleet.loop.at(float(k)) for k in range(math.ceil(fleet.period) + 2)]
        self.header = (
            f"N_DEVICES = {len(tokens)}\nN_THREADS = {self.THREADS}\n"
            f"START_MS = {self.start_ms}\nSTEP_MS = {self.step_ms}\n"
            f"PERIOD = {fleet.period!r}\nGRID = {GRID}\nGRID_STEP = {GRID_STEP_DEG!r}\n"
            f"LAT = {_lua_list([s.lat for s in samples], 9)}\n"
            f"LON = {_lua_list([s.lon for s in samples], 9)}\n"
            f"SPEED = {_lua_list([s.speed or 0.0 for s in samples], 2)}\n"
            f"COURSE = {_lua_list([s.course or 0.0 for s in samples], 1)}\n"
        )

    def min_pings(self) -> int:
        """The fewest pings any device has had so far."""
        return min(c // n for c, n in zip(self.counters, self.per_thread, strict=True))

    def newest_fix(self) -> float:
        """The newest fix time sent so far (epoch seconds)."""
        most = max(-(-c // n) for c, n in zip(self.counters, self.per_thread, strict=True))
        return (self.start_ms + most * self.step_ms) / 1000

    def options(self, seconds: int, connections: int) -> list[str]:
        """wrk and its options for a run."""
        # wrk's default timeout (2 s) would count a route's slow first pings as errors.
        return [
            "wrk",
            f"-t{self.THREADS}",
            f"-c{connections}",
            f"-d{seconds}s",
            "--timeout",
            "60s",
            "--latency",
        ]

    def run(self, seconds: int, connections: int) -> dict[str, Any]:
        """One wrk run of `seconds`; returns wrk's figures (and advances the counters)."""
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "result.json"
            script = Path(tmp) / "fleet.lua"
            tokens = Path(tmp) / "tokens"
            tokens.write_text("\n".join(self.tokens) + "\n")
            counters = "{" + ",".join(str(c) for c in self.counters) + "}"
            script.write_text(
                self.header
                + f'COUNTERS = {counters}\nTOKENS_FILE = "{tokens}"\nOUT_FILE = "{out}"\n'
                + WRK_SCRIPT
            )
            subprocess.run(
                [*self.options(seconds, connections), "-s", str(script), self.base],
                check=True,
                capture_output=True,
            )
            result: dict[str, Any] = json.loads(out.read_text())
        self.counters = [t["counter"] for t in result["threads"]]
        return result


async def wrk_load(
    base: str,
    db_url: str,
    tokens: list[str],
    fleet: Fleet,
    *,
    step_s: float,
    lead_s: float,
    clients: int,
    warmup_s: float,
    seconds: float,
    server_pid: int,
) -> Load:
    """Warm-up runs of `warmup_s` until every device had WARM_PINGS pings answered, then
    one measured run of `seconds` (whole seconds: wrk's unit)."""
    if len(tokens) < clients:
        raise SystemExit("wrk needs at least as many devices as --clients; or --client python")
    wrk = Wrk(base, tokens, fleet, step_s, lead_s)
    load = Load()
    began = time.perf_counter()
    warm_errors = {"warm-up: not stored": 0, "warm-up: I/O errors": 0}
    first_error = ""
    while True:
        warm = await asyncio.to_thread(wrk.run, max(1, round(warmup_s)), clients)
        warm_errors["warm-up: not stored"] += sum(t["errors"] for t in warm["threads"])
        warm_errors["warm-up: I/O errors"] += warm["io_errors"]
        first_error = first_error or _first_error(warm)
        # wrk leaves its last requests unanswered (the server logs them 400 once it sees the
        # disconnect); a moment for them to end keeps them apart from the next run's pings
        # of the same devices (their fixes were counted: the next run leaves a gap).
        await asyncio.sleep(1.0)
        load.sent += warm["requests"]
        if wrk.min_pings() >= WARM_PINGS or time.perf_counter() - began > WARM_MAX_S:
            break
    load.warmup_s = time.perf_counter() - began
    async with Meter(db_url, server_pid, [], load):
        result = await asyncio.to_thread(wrk.run, max(1, round(seconds)), clients)
    not_stored = sum(t["errors"] for t in result["threads"])
    load.sent += result["requests"]
    load.acked = result["requests"] - not_stored - result["io_errors"]
    load.seconds = result["seconds"]  # wrk's own: from its first request to its last
    load.p50_ms = result["p50_us"] / 1000
    load.p99_ms = result["p99_us"] / 1000
    load.statuses = {k: v for k, v in warm_errors.items() if v}
    if not_stored:
        load.statuses["not stored (status or body)"] = not_stored
    if result["io_errors"]:
        load.statuses["I/O errors"] = result["io_errors"]
    load.first_error = first_error or _first_error(result)
    load.newest_fix = wrk.newest_fix()
    return load
