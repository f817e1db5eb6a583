"""Route progress after the ack: the phone's 202 never waits for it, and fixes that were
acknowledged but never applied (an instance killed in between) are applied by the sweep,
exactly once and in order."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx

from tests.conftest import DeviceCreds, Server
from tests.integration.test_routes_api import (
    STOP_AT_M,
    STREET,
    create_route,
    drive,
    offline_events,
    ping_json,
    route_body,
    stored_events,
)
from tracker.core.route import progress
from tracker.store import learning
from tracker.store.routes import lock_device


async def _device_id(db: asyncpg.Pool, unique_id: str) -> int:
    device_id: int = await db.fetchval("SELECT id FROM devices WHERE unique_id = $1", unique_id)
    return device_id


async def _until_events(db: asyncpg.Pool, route_id: int, kind: str, within_s: float) -> None:
    deadline = asyncio.get_running_loop().time() + within_s
    while not any(e["type"] == kind for e in await stored_events(db, route_id)):
        assert asyncio.get_running_loop().time() < deadline, f"no {kind} within {within_s} s"
        await asyncio.sleep(0.05)


async def test_the_ack_does_not_wait_for_route_progress(
    server: Server, device: DeviceCreds, db: asyncpg.Pool
) -> None:
    start = datetime(2020, 6, 1, 8, tzinfo=UTC)
    route = await create_route(server, route_body(device, start))
    history = await learning.snapshot(db, STREET)  # what the plan knew
    fixes = drive(start, until_m=900.0, dwell_at_m=STOP_AT_M[0], dwell_s=90.0)
    device_id = await _device_id(db, device.unique_id)
    async with db.acquire() as conn:
        hold = conn.transaction()
        await hold.start()
        # Another instance in the middle of this device's round: it holds the route lock.
        await lock_device(conn, device_id)
        async with httpx.AsyncClient(base_url=server.base_url, timeout=3.0) as client:
            for k in range(0, len(fixes), 4):
                r = await client.post(
                    "/api/v1/positions",
                    json={"positions": [ping_json(f) for f in fixes[k : k + 4]]},
                    headers=device.headers,
                )
                assert r.status_code == 202, r.text
        state = await db.fetchval("SELECT route_state FROM routes WHERE id = $1", route["id"])
        assert progress.RouteState.from_json(state).last_fix_time is None
        assert await stored_events(db, route["id"]) == []
        await hold.rollback()
    # The lock is free: the route catches up with every acknowledged fix, in order, once.
    await _until_events(db, route["id"], "stop.departed", 5.0)
    await server.settled()
    assert await stored_events(db, route["id"]) == offline_events(
        route, STREET, fixes, history=history
    )


async def test_fixes_acknowledged_but_never_applied_are_taken_up_by_the_sweep(
    server: Server, device: DeviceCreds, db: asyncpg.Pool
) -> None:
    start = datetime(2020, 6, 2, 8, tzinfo=UTC)
    route = await create_route(server, route_body(device, start))
    history = await learning.snapshot(db, STREET)  # what the plan knew
    fixes = drive(start, until_m=900.0, dwell_at_m=STOP_AT_M[0], dwell_s=90.0)
    device_id = await _device_id(db, device.unique_id)
    # What an instance SIGKILLed right after its commit leaves: the fixes and the last
    # position stored, no round run, nobody told.
    await db.execute("SELECT tracker_ensure_partition($1)", start)
    await db.executemany(
        "INSERT INTO positions (device_id, fix_time, received_at, geog, speed) "
        "VALUES ($1, $2, now(), ST_SetSRID(ST_MakePoint($3, $4), 4326)::geography, $5)",
        [(device_id, f.time, f.lon, f.lat, f.speed) for f in fixes],
    )
    last = fixes[-1]
    await db.execute(
        "INSERT INTO last_positions (device_id, fix_time, received_at, geog, speed) "
        "VALUES ($1, $2, now(), ST_SetSRID(ST_MakePoint($3, $4), 4326)::geography, $5)",
        device_id,
        last.time,
        last.lon,
        last.lat,
        last.speed,
    )
    await _until_events(db, route["id"], "stop.departed", 8.0)
    await server.settled()
    assert await stored_events(db, route["id"]) == offline_events(
        route, STREET, fixes, history=history
    )
    state = await db.fetchval("SELECT route_state FROM routes WHERE id = $1", route["id"])
    assert progress.RouteState.from_json(state).last_fix_time == last.time


async def test_a_read_after_the_ack_shows_what_the_ping_did(
    server: Server, device: DeviceCreds, db: asyncpg.Pool
) -> None:
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    route = await create_route(server, route_body(device, start))
    fixes = drive(start, until_m=700.0, dwell_at_m=STOP_AT_M[0], dwell_s=60.0)
    async with server.client() as client:
        r = await client.post(
            "/api/v1/positions",
            json={"positions": [ping_json(f) for f in fixes]},
            headers=device.headers,
        )
        assert r.status_code == 202, r.text
        # No waiting: the read itself applies what was acknowledged.
        got = await client.get(f"/api/v1/routes/{route['id']}", headers=device.headers)
    assert got.status_code == 200
    assert got.json()["stops"][0]["status"] in ("arrived", "visited", "completed")
