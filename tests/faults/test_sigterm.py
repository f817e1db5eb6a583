"""SIGTERM is a graceful stop: pings waiting in a group commit when it arrives are committed
and acknowledged, and live WebSocket clients (dispatch map and customer tracking page) get a
proper close frame (1012 service restart or 1001 going away), never an abnormal 1006."""

from __future__ import annotations

import asyncio
import signal
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import ADMIN_TOKEN
from tests.faults.conftest import HOST, Phone, TrackerProcess, audit, record
from tracker.store.db import create_pool
from tracker.store.devices import add_device

PHONES = 10
# A long group-commit window, so the SIGTERM surely lands while the pings wait in it.
COMMIT_INTERVAL_MS = 1000
PROPER_CLOSE = {1001, 1012}


async def close_code(ws: ClientConnection) -> tuple[int, int]:
    """Read until the server closes; (close code received, 1006 if none; frames read)."""
    frames = 0
    try:
        async for _ in ws:
            frames += 1
    except ConnectionClosed as exc:
        return (exc.rcvd.code if exc.rcvd is not None else 1006), frames
    rcvd = ws.protocol.close_rcvd
    return (rcvd.code if rcvd is not None else 1006), frames


async def tracking_token(server: TrackerProcess, device: str) -> str:
    """A route for `device` with one stop; the stop's customer tracking token."""
    start = datetime.now(UTC).isoformat()
    route = {
        "device": device,
        "planned_start": start,
        "stops": [{"lat": 50.86, "lon": 4.36, "name": "Stop 1", "service_s": 60.0}],
        "path": {"type": "LineString", "coordinates": [[4.35, 50.85], [4.36, 50.86]]},
    }
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
        r = await client.post(
            "/api/v1/routes", json=route, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )
    assert r.status_code == 201, r.text
    url: str = r.json()["stops"][0]["tracking_url"]
    return url.rsplit("/", 1)[1]


@pytest.mark.parametrize("workers", [1, 2])
async def test_sigterm_flushes_pending_pings_and_closes_websockets(
    workers: int, database_url: str, tracker_processes: list[TrackerProcess]
) -> None:
    server = TrackerProcess(
        database_url, workers=workers, TRACKER_COMMIT_INTERVAL_MS=str(COMMIT_INTERVAL_MS)
    )
    tracker_processes.append(server)
    await server.start()
    pool = await create_pool(database_url, 2)
    try:
        devices = [await add_device(pool, f"Stopping van {i}") for i in range(PHONES)]
    finally:
        await pool.close()
    token = await tracking_token(server, devices[0][0].unique_id)
    start = datetime.now(UTC) - timedelta(minutes=5)
    phones = [Phone(d.unique_id, t, HOST, server.port, start=start, lat0=50.85) for d, t in devices]
    for p in phones:
        await p.connect()

    dispatch = await connect(f"{server.ws_url}/ws/dispatch?token={ADMIN_TOKEN}", open_timeout=10)
    customer = await connect(f"{server.ws_url}/ws/track/{token}", open_timeout=10)
    firsts: list[dict[str, Any]] = [
        orjson.loads(await asyncio.wait_for(ws.recv(), 10)) for ws in (dispatch, customer)
    ]
    assert [m["type"] for m in firsts] == ["snapshot", "snapshot"]
    closes = [asyncio.create_task(close_code(ws)) for ws in (dispatch, customer)]

    # One ping from half the phones, a batch of three from the others.
    posts = [
        asyncio.create_task(p.post(p.next_pings(1 if i % 2 else 3))) for i, p in enumerate(phones)
    ]
    await asyncio.sleep(0.3)
    answered_before = sum(1 for t in posts if t.done())
    sigterm_at = time.monotonic()
    server.signal(signal.SIGTERM)
    outcomes = await asyncio.gather(*posts)
    answered_at = [e[1] for p in phones for e in p.log]
    (dispatch_code, dispatch_frames), (customer_code, customer_frames) = await asyncio.gather(
        *closes
    )
    exit_code = await server.wait(30)
    stopped_at = time.monotonic()
    for p in phones:
        p.close()
    found = await audit(database_url, phones)
    numbers = {
        "workers": workers,
        "commit_interval_ms": COMMIT_INTERVAL_MS,
        "requests": len(posts),
        "requests_answered_before_sigterm": answered_before,
        "first_answer_after_sigterm_s": round(min(answered_at) - sigterm_at, 3),
        "outcomes": sorted(outcomes),
        "pings_sent": found.sent,
        "pings_acknowledged": found.acked,
        "rows_stored": found.stored,
        "acknowledged_missing": found.acked_missing,
        "dispatch_close_code": dispatch_code,
        "dispatch_frames_after_snapshot": dispatch_frames,
        "customer_close_code": customer_code,
        "customer_frames_after_snapshot": customer_frames,
        "exit_code": exit_code,
        # One line per worker process that ran its lifespan shutdown to the end.
        "lifespan_shutdowns_completed": server.log().count("Application shutdown complete"),
        "shutdown_s": round(stopped_at - sigterm_at, 2),
    }
    record(f"server_sigterm_{workers}_workers", numbers)

    # The pings were still waiting for their commit when the signal came ...
    assert answered_before == 0
    assert min(answered_at) > sigterm_at
    # ... and were committed and acknowledged all the same.
    assert outcomes == ["202"] * PHONES
    assert found.acked == found.sent == found.stored
    assert found.acked_missing == 0 and found.wrong_row == 0
    # Both live feeds were told the server is going away.
    assert dispatch_code in PROPER_CLOSE
    assert customer_code in PROPER_CLOSE
    # uvicorn shuts down gracefully, then re-raises the signal it caught (one worker: the
    # exit status is "terminated by SIGTERM"); with more, the supervisor exits after them.
    assert exit_code in (0, -signal.SIGTERM)
    assert numbers["lifespan_shutdowns_completed"] == workers
