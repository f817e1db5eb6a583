"""SIGKILL in the middle of a routed drive: route progress runs after the ack, so the kill
can fall between a ping's commit and its round. After the restart every stored fix has
been applied once, in order: the events are exactly those of an uninterrupted replay,
none lost, none twice."""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime

import httpx

from tests.conftest import ADMIN_TOKEN, DeviceCreds
from tests.faults.conftest import TrackerProcess, record
from tests.integration.test_routes_api import (
    STOP_AT_M,
    STREET,
    drive,
    offline_events,
    ping_json,
    route_body,
)
from tracker.core.model import Fix
from tracker.core.route import progress
from tracker.store.db import create_pool

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def _post_until_acked(server: TrackerProcess, token: str, chunk: list[Fix]) -> None:
    body = {"positions": [ping_json(f) for f in chunk]}
    while True:
        with contextlib.suppress(httpx.TransportError):
            async with httpx.AsyncClient(base_url=server.base_url, timeout=5.0) as client:
                r = await client.post(
                    "/api/v1/positions", json=body, headers={"Authorization": f"Bearer {token}"}
                )
            if r.status_code == 202:
                return
        await asyncio.sleep(0.1)  # down (or 503 while starting): the phone retries


async def test_sigkill_mid_route_loses_and_repeats_no_event(
    database_url: str, tracker_processes: list[TrackerProcess]
) -> None:
    server = TrackerProcess(database_url, workers=2)
    tracker_processes.append(server)
    await server.start()
    async with httpx.AsyncClient(base_url=server.base_url, headers=ADMIN) as admin:
        r = await admin.post("/api/v1/devices", json={"name": "Killed van", "unique_id": "kv-1"})
        assert r.status_code == 201, r.text
        dev = DeviceCreds(r.json()["id"], r.json()["token"])
        start = datetime(2021, 3, 1, 8, tzinfo=UTC)
        r = await admin.post("/api/v1/routes", json=route_body(dev, start))
        assert r.status_code == 201, r.text
        route = r.json()
    fixes = drive(start, until_m=2100.0, every_s=2.0, dwell_at_m=STOP_AT_M[1], dwell_s=90.0)
    chunks = [fixes[k : k + 3] for k in range(0, len(fixes), 3)]
    kill_at = len(chunks) * 2 // 5
    for k, chunk in enumerate(chunks):
        await _post_until_acked(server, dev.token, chunk)
        if k == kill_at:
            # Right after an ack: that round may well not have run yet.
            server.kill_group()
            await server.start()
    # A read settles the route (on whichever worker answers) with everything stored.
    async with httpx.AsyncClient(base_url=server.base_url, headers=ADMIN) as admin:
        deadline = time.monotonic() + 20.0
        while True:
            r = await admin.get(f"/api/v1/routes/{route['id']}")
            assert r.status_code == 200, r.text
            if r.json()["stops"][-1]["status"] != "pending" or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
    db = await create_pool(database_url, 1)
    try:
        rows = await db.fetch(
            "SELECT type, time, stop_id, data FROM events WHERE route_id = $1 ORDER BY id",
            route["id"],
        )
        state = progress.RouteState.from_json(
            await db.fetchval("SELECT route_state FROM routes WHERE id = $1", route["id"])
        )
    finally:
        await db.close()
    events = [dict(r) for r in rows]
    expected = offline_events(route, STREET, fixes)
    record(
        "route_sigkill",
        {"fixes": len(fixes), "events": len(events), "expected_events": len(expected)},
    )
    assert state.last_fix_time == fixes[-1].time
    assert events == expected
