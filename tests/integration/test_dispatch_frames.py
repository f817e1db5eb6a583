"""Large fleets on /ws/dispatch (finding 10 of issue 15): no frame outgrows what a WebSocket
client accepts. Python websockets refuses messages over 1 MiB by default (close 1009); a
snapshot of 500 vehicles with long names passed that. Snapshots now come in parts, deltas
as several deltas, each at most TRACKER_WS_MAX_FRAME_BYTES."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.conftest import ADMIN_TOKEN, ServerFactory, own_database
from tracker.core import tokens

Json = dict[str, Any]
LONG = "Lieferwagen mit einem sehr langen Namen für die Disposition " * 4  # ~240 characters


@pytest.fixture(scope="module")
async def fleet_url() -> AsyncIterator[str]:
    """A database of its own holding 20,000 vehicles with long names and a last position."""
    async with own_database("fleet20k") as url:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(
                """
                INSERT INTO devices (unique_id, name, token_hash)
                SELECT 'big-' || g, $1 || g, sha256(('token-' || g)::bytea)
                FROM generate_series(1, 20000) AS g
                """,
                LONG,
            )
            await conn.execute(
                """
                INSERT INTO last_positions (device_id, fix_time, received_at, geog, speed,
                                            course, accuracy, attributes)
                SELECT id, now() - interval '1 minute', now(),
                       ST_SetSRID(ST_MakePoint(11.0 + id % 1000 * 0.001,
                                               48.0 + id / 1000 * 0.001), 4326)::geography,
                       12.5, 90, 5, '{}'::jsonb
                FROM devices WHERE unique_id LIKE 'big-%'
                """
            )
        finally:
            await conn.close()
        yield url


async def dispatch(url: str, **kwargs: Any) -> ClientConnection:
    # The default max_size (1 MiB) is the point: no max_size argument here.
    return await connect(f"{url}/ws/dispatch?token={ADMIN_TOKEN}", open_timeout=10, **kwargs)


async def snapshot(ws: ClientConnection, timeout: float = 30.0) -> tuple[list[Json], list[int]]:
    """The vehicles of one whole snapshot, and the size of each of its frames."""
    vehicles: list[Json] = []
    sizes: list[int] = []
    expected = 0
    while True:
        raw = await asyncio.wait_for(ws.recv(decode=False), timeout)
        frame = orjson.loads(raw)
        if frame["type"] != "snapshot":
            continue
        sizes.append(len(raw))
        if "part" not in frame:
            return frame["vehicles"], sizes
        assert frame["part"] == expected, "parts arrive in order"
        expected += 1
        vehicles.extend(frame["vehicles"])
        if frame["final"]:
            return vehicles, sizes


async def test_a_snapshot_of_20000_vehicles_reaches_a_default_websockets_client(
    server_factory: ServerFactory, fleet_url: str
) -> None:
    srv = await server_factory(database_url=fleet_url)
    limit = srv.settings.ws_max_frame_bytes
    assert limit == 256 * 1024
    async with await dispatch(srv.ws_url) as ws:
        vehicles, sizes = await snapshot(ws)
        assert len(vehicles) == 20_000
        assert {v["id"] for v in vehicles} == {f"big-{k}" for k in range(1, 20_001)}
        assert all(v["name"].startswith(LONG) for v in vehicles)
        assert max(sizes) <= limit
        assert sum(sizes) > 4 * 1024 * 1024  # the whole would be a 4 MiB+ message
        # A resync sends the whole fleet again, in parts again.
        await ws.send('{"type": "resync"}')
        again, sizes = await snapshot(ws)
        assert len(again) == 20_000 and max(sizes) <= limit
        await ws.send('{"type": "ping"}')
        pong = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
        assert pong["type"] == "pong"


async def test_small_fleets_keep_the_one_frame_snapshot(server_factory: ServerFactory) -> None:
    async with own_database("fleet_small") as url:
        srv = await server_factory(database_url=url)
        async with await dispatch(srv.ws_url) as ws:
            frame = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
    assert frame["type"] == "snapshot" and "part" not in frame and frame["vehicles"] == []


async def test_a_large_delta_goes_out_as_several_bounded_deltas(
    server_factory: ServerFactory,
) -> None:
    async with own_database("fleet_delta") as url:
        # A long tick gathers 200 vehicles' updates into one delta of ~60 KB: past 16 KiB.
        srv = await server_factory(database_url=url, tick_ms=1500.0, ws_max_frame_bytes=16384)
        conn = await asyncpg.connect(url)
        creds: list[str] = []
        try:
            for k in range(200):
                token = secrets.token_urlsafe(32)
                creds.append(token)
                await conn.execute(
                    "INSERT INTO devices (unique_id, name, token_hash) VALUES ($1, $2, $3)",
                    f"d-{k}",
                    LONG + str(k),
                    tokens.digest(token),
                )
        finally:
            await conn.close()
        now = datetime.now(UTC)
        async with await dispatch(srv.ws_url) as ws:
            first = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
            assert first["type"] == "snapshot" and first["vehicles"] == []
            async with httpx.AsyncClient(base_url=srv.base_url, timeout=30) as client:

                async def post(k: int) -> int:
                    body = {"time": (now - timedelta(seconds=k)).isoformat(), "lat": 48.1,
                            "lon": 11.5 + k / 10_000}  # fmt: skip
                    r = await client.post(
                        "/api/v1/positions",
                        json=body,
                        headers={"Authorization": f"Bearer {creds[k]}"},
                    )
                    return r.status_code

                assert set(await asyncio.gather(*(post(k) for k in range(200)))) == {202}
            seen: set[str] = set()
            times: list[str] = []
            while len(seen) < 200:
                raw = await asyncio.wait_for(ws.recv(decode=False), 15)
                assert len(raw) <= 16384
                frame = orjson.loads(raw)
                assert frame["type"] == "delta"
                times.append(frame["time"])
                seen.update(v["id"] for v in frame["vehicles"])
    assert seen == {f"d-{k}" for k in range(200)}
    # Parts of one delta share its time stamp: at least one tick was split.
    assert len(times) > len(set(times))
