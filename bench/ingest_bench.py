"""Ingest benchmark: drives a real `tracker serve` process from separate processes.

Prints, on this machine:
  1. single-ping requests acknowledged per second with p50/p99 latency at 64 concurrent
     clients (wrk with a Lua script; each request the next ping of one of 64 devices, its
     fix time moving forward, so every ping is its device's new last position),
  2. pings per second in batches of 500 (several client processes),
  3. the raw PostGIS COPY rate of the same rows, for the gap to the limit.

Usage: .venv/bin/python bench/ingest_bench.py [--workers 2] [--seconds 15]
Needs wrk (Debian package `wrk`) for part 1. Uses its own database `tracker_bench`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import shapely
from common import add_devices, running_server

BENCH_DB = os.environ.get(
    "BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/tracker_bench"
)
ADMIN = "bench-admin-token"

WRK_SCRIPT = r"""
local tokens = {}
local counter = 0
local thread_id = 0
function setup(thread)
  thread_id = thread_id + 1
  thread:set("tid", thread_id)
end
-- Each thread posts for its own share of the devices (every N_THREADS-th token), so the
-- pings of one device come from one thread, in order.
function init(args)
  local i = 0
  for token in string.gmatch(args[1], "[^,]+") do
    if i % N_THREADS == tid - 1 then table.insert(tokens, token) end
    i = i + 1
  end
  counter = 0
end
-- Each request is the next ping of the thread's next device: a device's fix times move
-- forward STEP_MS per ping from BASE_MS (in the past), so every ping is new (no
-- duplicates) and its device's new last position, as a live phone's: it takes the jump
-- check and the last-position update, not the late-ping path.
function request()
  local n = #tokens
  local token = tokens[(counter % n) + 1]
  local t = BASE_MS + math.floor(counter / n) * STEP_MS
  counter = counter + 1
  -- The position follows the time (0.1 m/s), so any two pings of a device are plausible.
  local body = string.format('{"time":%d,"lat":%.9f,"lon":%.6f,"speed":12.5,"course":90}',
    t, 48.1 + (t - ORIGIN_MS) / 1000000000, 11.5)
  return wrk.format("POST", "/api/v1/positions",
    {["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json"}, body)
end
function response(status, headers, body)
  if status ~= 202 and not first_error then
    first_error = status .. " " .. body
    local f = io.open(OUT_FILE .. ".err", "a")
    f:write(first_error .. "\n")
    f:close()
  end
end
done = function(summary, latency, requests)
  local out = io.open(OUT_FILE, "w")
  out:write(string.format('{"requests": %d, "seconds": %f, "p50_us": %d, "p99_us": %d, ' ..
    '"mean_us": %f, "errors_status": %d, "errors_io": %d}',
    summary.requests, summary.duration / 1e6, latency:percentile(50), latency:percentile(99),
    latency.mean, summary.errors.status, summary.errors.connect + summary.errors.read +
    summary.errors.write + summary.errors.timeout))
  out:close()
end
"""


THREADS = 2
STEP_MS = 10  # between a device's fixes
MAX_RATE = 40_000  # requests/s no run reaches: sets how far in the past the fixes start
ORIGIN_MS = int(time.time() * 1000)  # positions are relative to this, the same every run


def bench_single(
    port: int, tokens: list[str], seconds: int, connections: int, after_ms: int
) -> dict[str, float]:
    """One wrk run; `after_ms`: every fix is later than this (the previous run's last).
    The result's "last_ms" bounds this run's newest fix."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install wrk")
    per_thread = len(tokens) // THREADS  # the fewest devices a thread has
    # Far enough back that even MAX_RATE never runs the fixes into the future.
    lead_ms = MAX_RATE * seconds // per_thread * STEP_MS + 5000
    base_ms = max(int(time.time() * 1000) - lead_ms, after_ms + STEP_MS)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        script = Path(tmp) / "ping.lua"
        script.write_text(
            f"BASE_MS = {base_ms}\nSTEP_MS = {STEP_MS}\nORIGIN_MS = {ORIGIN_MS}\n"
            f'N_THREADS = {THREADS}\nOUT_FILE = "{out}"\n' + WRK_SCRIPT
        )
        subprocess.run(
            [
                "wrk",
                f"-t{THREADS}",
                f"-c{connections}",
                f"-d{seconds}s",
                "--latency",
                "-s",
                str(script),
                f"http://127.0.0.1:{port}",
                "--",
                ",".join(tokens),
            ],
            check=True,
            capture_output=True,
        )
        result: dict[str, float] = json.loads(out.read_text())
        result["last_ms"] = base_ms + (int(result["requests"]) // per_thread + 1) * STEP_MS
        errors = Path(str(out) + ".err")
        if errors.exists():
            print("first non-202 answers:", errors.read_text()[:600], file=sys.stderr)
    return result


def _batch_bodies(batch: int, count: int, seed: int) -> list[bytes]:
    """Request bodies made before the clock starts, so the client spends its CPU on sending.
    Each client has its own device; its fixes move forward 1 ms each from a day ago (at
    most ~30 minutes' worth), so every batch's newest is the device's new last position."""
    base_ms = int((datetime.now(UTC) - timedelta(days=1)).timestamp() * 1000)
    bodies = []
    n = 0
    for _ in range(count):
        pings = []
        for _ in range(batch):
            n += 1
            # Newer by 1 ms and ~0.1 m/s along a line each step: plausible for the filters.
            lat = 48.1 + seed * 0.01 + n * 1e-9
            pings.append({"time": base_ms + n, "lat": lat, "lon": 11.5, "speed": 10.0})
        bodies.append(orjson.dumps({"positions": pings}))
    return bodies


def _batch_client(args: tuple[int, str, int, float, int, float]) -> tuple[int, list[float]]:
    port, token, batch, seconds, seed, start_at = args
    bodies = _batch_bodies(batch, int(seconds * 100_000 / batch) + 1, seed)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    sent = 0
    latencies = []
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        time.sleep(max(0.0, start_at - time.time()))
        deadline = start_at + seconds
        for body in bodies:
            if time.time() >= deadline:
                break
            t0 = time.perf_counter()
            r = client.post("/api/v1/positions", content=body, headers=headers)
            latencies.append(time.perf_counter() - t0)
            if r.status_code != 202 or r.json()["stored"] != batch:
                raise SystemExit(f"batch failed: {r.status_code} {r.text[:200]}")
            sent += batch
    return sent, latencies


def bench_batches(
    port: int, tokens: list[str], seconds: int, clients: int, batch: int
) -> dict[str, float]:
    # Every client makes its bodies first, then all start sending at the same moment.
    start_at = time.time() + 4.0
    with multiprocessing.Pool(clients) as pool:
        results = pool.map(
            _batch_client,
            [(port, tokens[i], batch, seconds, i + 1, start_at) for i in range(clients)],
        )
    total = sum(s for s, _ in results)
    lat = sorted(x for _, ls in results for x in ls)
    return {
        "pings": total,
        "seconds": seconds,
        "rate": total / seconds,
        "p50_ms": statistics.median(lat) * 1000,
        "p99_ms": lat[int(len(lat) * 0.99) - 1] * 1000,
    }


async def bench_raw_copy(rows: int) -> dict[str, float]:
    from tracker.store.db import create_pool
    from tracker.store.writer import POSITION_COLUMNS

    pool = await create_pool(BENCH_DB, 2)
    device_id = await pool.fetchval("SELECT min(id) FROM devices")
    base = datetime.now(UTC) - timedelta(days=3)
    now = datetime.now(UTC)
    records: list[tuple[Any, ...]] = [
        (
            device_id,
            base - timedelta(milliseconds=i),
            now,
            shapely.Point(11.5 + (i % 1000) / 1e5, 48.1 + (i % 777) / 1e5),
            10.0,
            90.0,
            None,
            None,
            {},
        )
        for i in range(rows)
    ]
    await pool.execute("SELECT tracker_ensure_partition($1)", base)
    await pool.execute("SELECT tracker_ensure_partition($1)", base - timedelta(days=1))
    async with pool.acquire() as conn:
        t0 = time.perf_counter()
        chunk = 50_000
        for i in range(0, rows, chunk):
            async with conn.transaction():
                await conn.copy_records_to_table(
                    "positions",
                    records=records[i : i + chunk],
                    columns=POSITION_COLUMNS,
                )
        elapsed = time.perf_counter() - t0
    await pool.close()
    return {"rows": rows, "seconds": elapsed, "rate": rows / elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--batch-clients", type=int, default=4)
    parser.add_argument("--copy-rows", type=int, default=200_000)
    args = parser.parse_args()

    env = {"TRACKER_AUTH_CACHE_S": "30"}
    workers = ["--workers", str(args.workers)]
    with running_server(BENCH_DB, ADMIN, env, workers, "/readyz", 30.0) as server:
        base, port = server.base, server.port
        single_tokens = asyncio.run(add_devices(base, ADMIN, args.connections, "single", "single"))
        batch_tokens = asyncio.run(add_devices(base, ADMIN, args.batch_clients, "batch", "batch"))
        asyncio.run(add_devices(base, ADMIN, 1, "copy", "copy"))
        # Warm-up: fills auth caches and connection pools of both workers.
        warm = bench_single(port, single_tokens, 2, args.connections, 0)
        single = bench_single(
            port, single_tokens, args.seconds, args.connections, int(warm["last_ms"])
        )
        batches = bench_batches(port, batch_tokens, args.seconds, args.batch_clients, args.batch)
    raw = asyncio.run(bench_raw_copy(args.copy_rows))

    cpu = os.cpu_count()
    print(f"machine: {cpu} cores; server: tracker serve --workers {args.workers}")
    print(
        f"single-ping requests, {args.connections} concurrent clients (wrk): "
        f"{single['requests'] / single['seconds']:,.0f} acknowledged/s, "
        f"p50 {single['p50_us'] / 1000:.1f} ms, p99 {single['p99_us'] / 1000:.1f} ms, "
        f"non-202: {single['errors_status']}, I/O errors: {single['errors_io']}"
    )
    print(
        f"batches of {args.batch}, {args.batch_clients} client processes: "
        f"{batches['rate']:,.0f} pings/s "
        f"(request p50 {batches['p50_ms']:.0f} ms, p99 {batches['p99_ms']:.0f} ms)"
    )
    print(f"raw COPY into positions (same row shape, one connection): {raw['rate']:,.0f} rows/s")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
