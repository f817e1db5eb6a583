"""The ingest rules against a real PostGIS: acknowledged = committed, idempotent,
order-tolerant, clear 4xx for bad input, 503 when the database is unreachable."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from tests.conftest import DeviceCreds, Server, ServerFactory, add_device, stored_positions
from tracker.store.writer import PositionRow


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def ping(t: datetime, lat: float = 48.137, lon: float = 11.575, **extra: Any) -> dict[str, Any]:
    return {"time": iso(t), "lat": lat, "lon": lon, **extra}


async def post(srv: Server, dev: DeviceCreds, body: Any, **kw: Any) -> httpx.Response:
    async with srv.client() as client:
        return await client.post("/api/v1/positions", json=body, headers=dev.headers, **kw)


async def stored_rows(db: asyncpg.Pool, dev: DeviceCreds) -> list[asyncpg.Record]:
    return await stored_positions(db, dev.unique_id)


async def last_time(db: asyncpg.Pool, dev: DeviceCreds) -> datetime:
    value: datetime = await db.fetchval(
        "SELECT l.fix_time FROM last_positions l JOIN devices d ON d.id = l.device_id "
        "WHERE d.unique_id = $1",
        dev.unique_id,
    )
    return value


NOW = datetime.now(UTC).replace(microsecond=0)


async def test_single_ping_is_committed_before_the_ack(
    server: Server, device: DeviceCreds, db: asyncpg.Pool
) -> None:
    r = await post(
        server,
        device,
        ping(NOW, speed=12.5, course=90, accuracy=4, altitude=510, attributes={"batt": 80}),
    )
    assert r.status_code == 202
    assert r.json() == {"stored": 1, "duplicates": 0, "rejected": 0, "rejects": []}
    rows = await stored_rows(db, device)
    assert len(rows) == 1
    row = rows[0]
    assert row["fix_time"] == NOW
    assert (round(row["lat"], 6), round(row["lon"], 6)) == (48.137, 11.575)
    assert (row["speed"], row["course"], row["accuracy"], row["altitude"]) == (12.5, 90, 4, 510)
    assert row["attributes"] == {"batt": 80}


async def test_epoch_seconds_and_milliseconds(
    server: Server, device: DeviceCreds, db: asyncpg.Pool
) -> None:
    t1 = NOW - timedelta(minutes=5)
    t2 = NOW - timedelta(minutes=4)
    body = {
        "positions": [
            {"time": int(t1.timestamp()), "lat": 1.0, "lon": 2.0},
            {"time": int(t2.timestamp() * 1000), "lat": 1.0, "lon": 2.0},
        ]
    }
    r = await post(server, device, body)
    assert r.status_code == 202, r.text
    assert [row["fix_time"] for row in await stored_rows(db, device)] == [t1, t2]


async def test_retry_stores_nothing_twice(
    server: Server, device: DeviceCreds, db: asyncpg.Pool
) -> None:
    body = {"positions": [ping(NOW - timedelta(seconds=s)) for s in range(50)]}
    first = await post(server, device, body)
    again = await post(server, device, body)
    assert first.json()["stored"] == 50
    assert again.status_code == 202
    assert again.json()["stored"] == 0 and again.json()["duplicates"] == 50
    assert len(await stored_rows(db, device)) == 50


async def test_duplicates_within_one_batch_count_once(
    server: Server, device: DeviceCreds, db: asyncpg.Pool
) -> None:
    body = {"positions": [ping(NOW), ping(NOW, lat=10.0), ping(NOW - timedelta(seconds=1))]}
    r = await post(server, device, body)
    assert r.json()["stored"] == 2 and r.json()["duplicates"] == 1
    rows = await stored_rows(db, device)
    assert [round(r["lat"], 3) for r in rows] == [48.137, 48.137]  # the first one won


async def test_concurrent_requests_share_group_commits_and_all_land(
    server: Server, device: DeviceCreds, db: asyncpg.Pool
) -> None:
    async with server.client() as client:
        replies = await asyncio.gather(
            *(
                client.post(
                    "/api/v1/positions",
                    json=ping(NOW - timedelta(seconds=i)),
                    headers=device.headers,
                )
                for i in range(200)
            )
        )
    assert all(r.status_code == 202 and r.json()["stored"] == 1 for r in replies)
    assert len(await stored_rows(db, device)) == 200


async def test_late_ping_goes_to_history_but_not_to_last_position(
    server: Server, device: DeviceCreds, db: asyncpg.Pool
) -> None:
    assert (await post(server, device, ping(NOW))).status_code == 202
    late = NOW - timedelta(hours=3)
    r = await post(server, device, ping(late, lat=50.0))
    assert r.status_code == 202 and r.json()["stored"] == 1
    assert await last_time(db, device) == NOW
    assert [row["fix_time"] for row in await stored_rows(db, device)] == [late, NOW]
    async with server.admin() as client:
        listing = (await client.get("/api/v1/devices")).json()["devices"]
    mine = next(d for d in listing if d["id"] == device.unique_id)
    assert mine["last_position"]["lat"] == pytest.approx(48.137)


async def test_old_drive_creates_its_month_partition(
    server: Server, device: DeviceCreds, db: asyncpg.Pool
) -> None:
    old = datetime(2014, 9, 10, 4, 54, 7, tzinfo=UTC)
    r = await post(server, device, ping(old))
    assert r.status_code == 202 and r.json()["stored"] == 1
    assert await db.fetchval("SELECT to_regclass('positions_201409') IS NOT NULL")


async def test_batch_stores_good_pings_and_reports_bad_ones(
    server: Server, device: DeviceCreds, db: asyncpg.Pool
) -> None:
    body = {
        "positions": [
            ping(NOW - timedelta(seconds=3)),
            {"time": iso(NOW), "lat": "48.1", "lon": 11.5},
            {"time": iso(NOW), "lat": 91.0, "lon": 11.5},
            {"time": iso(NOW), "lat": 48.1, "lon": -180.5},
            {"time": iso(NOW), "lon": 11.5},
            {"time": iso(datetime.now(UTC) + timedelta(minutes=11)), "lat": 48.1, "lon": 11.5},
            {"time": "yesterday", "lat": 48.1, "lon": 11.5},
            {"lat": 48.1, "lon": 11.5},
            "not an object",
            ping(NOW - timedelta(seconds=2), speed=-3),
            ping(NOW - timedelta(seconds=1)),
        ]
    }
    r = await post(server, device, body)
    assert r.status_code == 202
    data = r.json()
    assert data["stored"] == 2 and data["rejected"] == 9
    reasons = {rej["index"]: rej["reason"] for rej in data["rejects"]}
    assert set(reasons) == {1, 2, 3, 4, 5, 6, 7, 8, 9}
    assert "lat" in reasons[1] and "number" in reasons[1]
    assert "lat" in reasons[2] and "90" in reasons[2]
    assert "lon" in reasons[3] and "180" in reasons[3]
    assert reasons[4] == "lat: missing"
    assert "future" in reasons[5]
    assert "time" in reasons[6]
    assert reasons[7] == "time: missing"
    assert "speed" in reasons[9]
    assert len(await stored_rows(db, device)) == 2


async def test_implausible_jump_is_rejected(server: Server, device: DeviceCreds) -> None:
    body = {
        "positions": [
            ping(NOW - timedelta(seconds=2)),
            ping(NOW - timedelta(seconds=1), lat=49.5),  # 150 km in a second
            ping(NOW, lat=48.1371),
        ]
    }
    data = (await post(server, device, body)).json()
    assert data["stored"] == 2
    assert data["rejects"][0]["index"] == 1 and "implausible" in data["rejects"][0]["reason"]


@pytest.mark.parametrize(
    ("raw", "status", "needle"),
    [
        (b"{", 400, "malformed JSON"),
        (b'{"time": 1, "lat": NaN, "lon": 1}', 400, "malformed JSON"),
        (b'{"time": 1, "lat": Infinity, "lon": 1}', 400, "malformed JSON"),
        (b"[1, 2]", 400, "body must be"),
        (b'{"positions": {}}', 400, "positions"),
        (b'{"positions": []}', 400, "empty"),
        (b'{"lat": 1e999, "lon": 1, "time": 1}', 400, "malformed JSON"),
    ],
)
async def test_malformed_bodies_get_400(
    server: Server, device: DeviceCreds, raw: bytes, status: int, needle: str
) -> None:
    async with server.client() as client:
        r = await client.post("/api/v1/positions", content=raw, headers=device.headers)
    assert r.status_code == status, r.text
    assert r.json()["error"] and needle in r.json()["message"]


async def test_single_bad_ping_gets_422_naming_the_field(
    server: Server, device: DeviceCreds
) -> None:
    r = await post(server, device, {"time": iso(NOW), "lat": 100, "lon": 0})
    assert r.status_code == 422
    assert "lat" in r.json()["message"]


async def test_wrong_content_type_is_415(server: Server, device: DeviceCreds) -> None:
    async with server.client() as client:
        r = await client.post(
            "/api/v1/positions",
            content=b"lat=1&lon=2",
            headers={"Authorization": f"Bearer {device.token}", "Content-Type": "text/plain"},
        )
    assert r.status_code == 415 and "application/json" in r.json()["message"]


async def test_oversized_body_is_413(server_factory: ServerFactory) -> None:
    srv = await server_factory(max_body_bytes=1000)
    dev = await add_device(srv)
    body = {"positions": [ping(NOW - timedelta(seconds=i)) for i in range(100)]}
    r = await post(srv, dev, body)
    assert r.status_code == 413 and r.json()["error"] == "body_too_large"


async def test_more_than_max_batch_is_413(server_factory: ServerFactory) -> None:
    srv = await server_factory(max_batch=10)
    dev = await add_device(srv)
    r = await post(srv, dev, {"positions": [ping(NOW - timedelta(seconds=i)) for i in range(11)]})
    assert r.status_code == 413 and "at most 10" in r.json()["message"]


async def test_unknown_missing_and_disabled_tokens(server: Server) -> None:
    dev = await add_device(server)
    body = ping(NOW)
    async with server.client() as client:
        missing = await client.post("/api/v1/positions", json=body)
        unknown = await client.post(
            "/api/v1/positions", json=body, headers={"Authorization": "Bearer nope"}
        )
    assert missing.status_code == 401 and unknown.status_code == 401
    assert unknown.json()["error"] == "unknown_device"
    async with server.admin() as admin:
        r = await admin.patch(f"/api/v1/devices/{dev.unique_id}", json={"enabled": False})
        assert r.status_code == 200
    disabled = await post(server, dev, body)
    assert disabled.status_code == 403 and disabled.json()["error"] == "device_disabled"


async def test_token_of_another_device_is_403(
    server: Server, device: DeviceCreds, db: asyncpg.Pool
) -> None:
    other = await add_device(server)
    r = await post(server, device, ping(NOW, device_id=other.unique_id))
    assert r.status_code == 403 and r.json()["error"] == "wrong_device"
    assert await stored_rows(db, other) == [] and await stored_rows(db, device) == []
    own = await post(server, device, ping(NOW, device_id=device.unique_id))
    assert own.status_code == 202


async def test_admin_api_requires_admin(server: Server) -> None:
    async with server.client() as client:
        anon = await client.post("/api/v1/devices", json={"name": "x"})
        listing = await client.get("/api/v1/devices")
    assert anon.status_code == 401 and listing.status_code == 401
    async with server.admin() as admin:
        created = await admin.post("/api/v1/devices", json={"name": "Van", "unique_id": "dupe-1"})
        dupe = await admin.post("/api/v1/devices", json={"name": "Van", "unique_id": "dupe-1"})
        bad = await admin.post("/api/v1/devices", json={"name": ""})
    assert created.status_code == 201 and len(created.json()["token"]) >= 40
    assert dupe.status_code == 409 and bad.status_code == 400


async def test_track_as_geojson(server: Server, device: DeviceCreds) -> None:
    times = [NOW - timedelta(minutes=m) for m in (30, 20, 10)]
    await post(
        server, device, {"positions": [ping(t, lat=48 + i / 100) for i, t in enumerate(times)]}
    )
    async with server.admin() as admin:
        r = await admin.get(
            f"/api/v1/devices/{device.unique_id}/positions",
            params={"from": iso(NOW - timedelta(minutes=25)), "to": iso(NOW)},
        )
        missing = await admin.get("/api/v1/devices/nope/positions")
        bad = await admin.get(
            f"/api/v1/devices/{device.unique_id}/positions", params={"from": "soon"}
        )
    assert r.status_code == 200
    fc = r.json()
    assert fc["type"] == "FeatureCollection"
    assert [f["properties"]["time"] for f in fc["features"]] == [t.isoformat() for t in times[1:]]
    assert fc["features"][0]["geometry"] == {"type": "Point", "coordinates": [11.575, 48.01]}
    assert missing.status_code == 404 and bad.status_code == 400


async def test_health_and_readiness(server: Server) -> None:
    async with server.client() as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        assert (await client.get("/readyz")).status_code == 200
        nf = await client.get("/no/such/page")
    assert nf.status_code == 404 and nf.json()["error"] == "not_found"


# --- the database going away -------------------------------------------------------------


class TcpProxy:
    """A loopback TCP proxy to PostgreSQL that a test can cut and restore."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self, port: int = 0) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for w in list(self._writers):
            w.close()
        await self._server.wait_closed()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers.update({writer, up_writer})
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))


@contextlib.asynccontextmanager
async def proxy_to_postgres() -> AsyncIterator[TcpProxy]:
    proxy = TcpProxy(5432)
    await proxy.start()
    try:
        yield proxy
    finally:
        with contextlib.suppress(Exception):
            await proxy.cut()


async def test_database_down_means_503_with_retry_after_never_2xx(
    server_factory: ServerFactory, database_url: str, db: asyncpg.Pool
) -> None:
    async with proxy_to_postgres() as proxy:
        url = database_url.replace(":5432/", f":{proxy.port}/")
        srv = await server_factory(database_url=url, auth_cache_s=3600.0)
        dev = await add_device(srv)
        assert (await post(srv, dev, ping(NOW))).status_code == 202  # warms the auth cache
        await proxy.cut()
        r = await post(srv, dev, ping(NOW - timedelta(seconds=1)))
        assert r.status_code == 503
        assert r.headers["Retry-After"].isdigit()
        assert r.json()["error"] == "unavailable"
        async with srv.client() as client:
            assert (await client.get("/readyz")).status_code == 503
        # Back up: the phone's retry lands, once.
        await proxy.start(proxy.port)
        for _ in range(50):
            retry = await post(srv, dev, ping(NOW - timedelta(seconds=1)))
            if retry.status_code == 202:
                break
            await asyncio.sleep(0.1)
        assert retry.status_code == 202 and retry.json()["stored"] == 1
        assert len(await stored_rows(db, dev)) == 2


async def test_shutdown_flushes_pending_writes(
    server_factory: ServerFactory, db: asyncpg.Pool
) -> None:
    # A long commit interval keeps the ping pending while the server is told to stop.
    srv = await server_factory(commit_interval_ms=700.0)
    dev = await add_device(srv)
    async with srv.client() as client:
        pending = asyncio.create_task(
            client.post("/api/v1/positions", json=ping(NOW), headers=dev.headers)
        )
        await asyncio.sleep(0.2)
        await srv.stop()
        r = await pending
    assert r.status_code == 202
    assert len(await stored_rows(db, dev)) == 1


async def test_writer_close_flushes_what_is_queued(database_url: str, db: asyncpg.Pool) -> None:
    from tracker.store.writer import PositionWriter, StoreUnavailable

    async with writer_pool(database_url) as (_pool, device_id):
        writer = PositionWriter(database_url, interval_ms=5000.0)
        writer.start()
        row: PositionRow = (device_id, NOW, NOW, (11.0, 48.0), None, None, None, None, {})
        task = asyncio.create_task(writer.write([row]))
        await asyncio.sleep(0.05)
        await writer.close()
        assert (await task).stored == [True]
        with pytest.raises(StoreUnavailable):
            await writer.write([row])
    assert await db.fetchval("SELECT count(*) FROM positions WHERE device_id = $1", device_id) == 1


@contextlib.asynccontextmanager
async def writer_pool(database_url: str) -> AsyncIterator[tuple[asyncpg.Pool, int]]:
    from tracker.store import devices
    from tracker.store.db import create_pool

    pool = await create_pool(database_url, 2)
    try:
        device, _ = await devices.add_device(pool, "writer test")
        yield pool, device.id
    finally:
        await pool.close()


async def test_a_duplicate_in_a_shared_batch_spares_the_other_requests(
    database_url: str, db: asyncpg.Pool
) -> None:
    from tracker.store.writer import PositionWriter

    async with writer_pool(database_url) as (_pool, device_id):
        writer = PositionWriter(database_url, interval_ms=50.0)
        writer.start()
        old = NOW - timedelta(hours=1)
        first = await writer.write(
            [(device_id, old, NOW, (11.0, 48.0), None, None, None, None, {})]
        )
        assert first.stored == [True] and first.advanced == [True]
        fresh: list[PositionRow] = [(device_id, NOW, NOW, (11.0, 48.0), None, None, None, None, {})]
        retry: list[PositionRow] = [(device_id, old, NOW, (11.0, 48.0), None, None, None, None, {})]
        # Both land in one group commit; the retry forces the batch onto the staging path.
        a, b = await asyncio.gather(writer.write(fresh), writer.write(retry))
        await writer.close()
    assert a.stored == [True] and a.advanced == [True]
    assert b.stored == [False] and b.advanced == [False]
    count = await db.fetchval("SELECT count(*) FROM positions WHERE device_id = $1", device_id)
    assert count == 2


async def test_text_postgres_cannot_store_is_rejected_not_a_503(
    server: Server, device: DeviceCreds, db: asyncpg.Pool
) -> None:
    body = {
        "positions": [
            ping(NOW - timedelta(seconds=2), attributes={"\x00": None}),
            ping(NOW - timedelta(seconds=1), attributes={"note": "gate code 12"}),
        ]
    }
    r = await post(server, device, body)
    assert r.status_code == 202
    assert r.json()["stored"] == 1 and r.json()["rejects"][0]["index"] == 0
    assert "NUL" in r.json()["rejects"][0]["reason"]
    assert [row["attributes"] for row in await stored_rows(db, device)] == [
        {"note": "gate code 12"}
    ]


async def test_rows_the_database_refuses_fail_only_their_own_request(
    database_url: str, db: asyncpg.Pool
) -> None:
    from tracker.store.writer import PositionWriter, StoreRefused

    async with writer_pool(database_url) as (_pool, device_id):
        writer = PositionWriter(database_url, interval_ms=50.0)
        writer.start()
        good: list[PositionRow] = [
            (device_id, NOW, NOW, (11.0, 48.0), None, None, None, None, {"ok": 1})
        ]
        # jsonb refuses NUL: here the writer is called directly, past the filters.
        bad: list[PositionRow] = [
            (
                device_id,
                NOW - timedelta(seconds=1),
                NOW,
                (11.0, 48.0),
                None,
                None,
                None,
                None,
                {"\x00": 1},
            )
        ]
        outcomes = await asyncio.gather(
            writer.write(good), writer.write(bad), return_exceptions=True
        )
        await writer.close()
    assert not isinstance(outcomes[0], BaseException) and outcomes[0].stored == [True]
    assert isinstance(outcomes[1], StoreRefused)
    count = await db.fetchval("SELECT count(*) FROM positions WHERE device_id = $1", device_id)
    assert count == 1


async def test_other_methods_on_positions_get_405(server: Server) -> None:
    async with server.client() as client:
        r = await client.get("/api/v1/positions")
        d = await client.delete("/api/v1/positions")
    assert (r.status_code, d.status_code) == (405, 405)
    assert r.headers["allow"] == "POST"
    assert r.json()["error"] == "method_not_allowed"
