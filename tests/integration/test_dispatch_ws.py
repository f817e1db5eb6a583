"""GET /ws/dispatch and the sign-in session, against a real server with real WebSocket clients:
snapshot then deltas, credentials (admin, dispatcher key, cookie) and refusals, resync,
route summaries and events from the bus."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.conftest import ADMIN_TOKEN, DeviceCreds, Server, add_device
from tracker.store.devices import add_key

VEHICLE_KEYS = {"id", "name", "time", "lat", "lon", "speed", "course", "accuracy", "route"}
Message = dict[str, Any]


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


async def post_ping(
    srv: Server, dev: DeviceCreds, t: datetime, lat: float, lon: float = 4.35, **extra: Any
) -> httpx.Response:
    async with srv.client() as client:
        r = await client.post(
            "/api/v1/positions",
            json={"time": iso(t), "lat": lat, "lon": lon, **extra},
            headers=dev.headers,
        )
    assert r.status_code == 202, r.text
    return r


async def receive(ws: ClientConnection, timeout: float = 5.0) -> Message:
    message: Message = orjson.loads(await asyncio.wait_for(ws.recv(), timeout))
    return message


async def receive_until(
    ws: ClientConnection, match: Callable[[Message], bool], timeout: float = 5.0
) -> Message:
    """The first message matching `match` (others are skipped)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0:
            raise TimeoutError("no matching message")
        message = await receive(ws, left)
        if match(message):
            return message


def has_vehicle(device: str, t: datetime | None = None) -> Callable[[Message], bool]:
    def match(message: Message) -> bool:
        return any(
            v["id"] == device and (t is None or datetime.fromisoformat(v["time"]) == t)
            for v in message.get("vehicles", [])
        )

    return match


def vehicle(message: Message, device: str) -> Message:
    found: Message = next(v for v in message["vehicles"] if v["id"] == device)
    return found


def dispatch_url(srv: Server, token: str | None = ADMIN_TOKEN) -> str:
    return f"{srv.ws_url}/ws/dispatch" + (f"?token={token}" if token else "")


NOW = datetime.now(UTC).replace(microsecond=0)


async def test_snapshot_on_connect_then_deltas(server: Server) -> None:
    dev = await add_device(server, name="Snapshot van")
    await post_ping(server, dev, NOW - timedelta(seconds=30), 52.01, speed=4.5, course=270)
    async with connect(dispatch_url(server)) as ws:
        snapshot = await receive(ws)
        assert snapshot["type"] == "snapshot" and snapshot["v"] == 1
        datetime.fromisoformat(snapshot["time"])
        mine = vehicle(snapshot, dev.unique_id)
        assert set(mine) == VEHICLE_KEYS
        assert mine["name"] == "Snapshot van"
        assert mine["lat"] == pytest.approx(52.01) and mine["lon"] == pytest.approx(4.35)
        assert mine["speed"] == 4.5 and mine["course"] == 270
        assert datetime.fromisoformat(mine["time"]) == NOW - timedelta(seconds=30)
        assert mine["route"] is None

        t1 = NOW - timedelta(seconds=20)
        await post_ping(server, dev, t1, 52.0102)
        delta = await receive_until(ws, has_vehicle(dev.unique_id, t1))
        assert delta["type"] == "delta" and delta["v"] == 1 and delta["events"] == []
        moved = vehicle(delta, dev.unique_id)
        assert set(moved) == VEHICLE_KEYS
        assert moved["lat"] == pytest.approx(52.0102)
        assert moved["speed"] is None


async def test_late_ping_is_not_sent_as_a_backward_move(server: Server) -> None:
    dev = await add_device(server)
    newest = NOW - timedelta(seconds=5)
    await post_ping(server, dev, newest, 52.1)
    async with connect(dispatch_url(server)) as ws:
        await receive(ws)  # snapshot
        await post_ping(server, dev, NOW - timedelta(seconds=60), 52.099)  # late, offline ping
        later = NOW - timedelta(seconds=1)
        await post_ping(server, dev, later, 52.1001)
        # The first delta naming the device is the newer ping, never the late one.
        delta = await receive_until(ws, has_vehicle(dev.unique_id))
        assert datetime.fromisoformat(vehicle(delta, dev.unique_id)["time"]) == later


async def test_several_pings_in_one_tick_arrive_as_one_latest_state(server: Server) -> None:
    dev = await add_device(server)
    async with connect(dispatch_url(server)) as ws:
        await receive(ws)
        times = [NOW - timedelta(seconds=50 - i) for i in range(8)]
        # One connection, back to back: several commits land within one 150 ms tick.
        async with server.client() as client:
            for i, t in enumerate(times):
                r = await client.post(
                    "/api/v1/positions",
                    json={"time": iso(t), "lat": 52.0 + i / 100_000, "lon": 4.0},
                    headers=dev.headers,
                )
                assert r.status_code == 202
        seen: list[datetime] = []
        while not seen or seen[-1] != times[-1]:
            message = await receive_until(ws, has_vehicle(dev.unique_id))
            entries = [v for v in message["vehicles"] if v["id"] == dev.unique_id]
            assert len(entries) == 1  # never two states of one vehicle in a frame
            seen.append(datetime.fromisoformat(entries[0]["time"]))
        assert seen == sorted(seen)
        assert len(seen) < len(times)  # coalesced: fewer frames than pings


@pytest.mark.parametrize(
    "token", [None, "wrong-token", "device-token"], ids=["none", "unknown", "device"]
)
async def test_unauthorised_connections_are_refused(server: Server, token: str | None) -> None:
    if token == "device-token":
        token = (await add_device(server)).token  # a device is not a dispatcher
    with pytest.raises(InvalidStatus) as refused:
        async with connect(dispatch_url(server, token)):
            pass
    assert refused.value.response.status_code == 401
    body = orjson.loads(refused.value.response.body or b"{}")
    assert body["error"] == "unauthorized"


async def test_dispatcher_key_connects_and_bearer_header_works(
    server: Server, db: asyncpg.Pool
) -> None:
    key = await add_key(db, "ws test", "dispatcher")
    async with connect(dispatch_url(server, key)) as ws:
        assert (await receive(ws))["type"] == "snapshot"
    headers = {"Authorization": f"Bearer {key}"}
    async with connect(dispatch_url(server, None), additional_headers=headers) as ws:
        assert (await receive(ws))["type"] == "snapshot"
    await db.execute("UPDATE api_keys SET enabled = false WHERE name = 'ws test'")
    with pytest.raises(InvalidStatus):
        async with connect(dispatch_url(server, key)):
            pass


async def test_session_cookie_signs_in_once_and_out(server: Server, db: asyncpg.Pool) -> None:
    key = await add_key(db, "session test", "dispatcher")
    async with server.client() as client:
        bad = await client.post("/api/v1/session", json={"token": "nope"})
        assert bad.status_code == 401 and bad.json()["error"] == "unauthorized"
        assert "set-cookie" not in bad.headers
        r = await client.post("/api/v1/session", json={"token": key})
        assert r.status_code == 200 and r.json() == {"role": "dispatcher"}
        cookie = r.headers["set-cookie"]
        # The cookie holds a session's random id, never the key itself.
        session_id = client.cookies["tracker_session"]
        assert cookie.startswith(f"tracker_session={session_id};")
        assert key not in cookie and len(session_id) >= 43
        lowered = cookie.lower()
        assert "httponly" in lowered and "samesite=strict" in lowered and "path=/" in lowered
        # The client kept the cookie: the session answers without any token.
        who = await client.get("/api/v1/session")
        assert who.status_code == 200 and who.json() == {"role": "dispatcher"}
        devices = await client.get("/api/v1/devices")
        assert devices.status_code == 200

        cookie_header = {"Cookie": f"tracker_session={session_id}"}
        async with connect(dispatch_url(server, None), additional_headers=cookie_header) as ws:
            assert (await receive(ws))["type"] == "snapshot"
        # Another site's page cannot use the cookie (SameSite aside, the Origin tells).
        foreign = {**cookie_header, "Origin": "https://evil.example"}
        with pytest.raises(InvalidStatus) as refused:
            async with connect(dispatch_url(server, None), additional_headers=foreign):
                pass
        assert refused.value.response.status_code == 403
        own = {**cookie_header, "Origin": server.base_url}
        async with connect(dispatch_url(server, None), additional_headers=own) as ws:
            assert (await receive(ws))["type"] == "snapshot"

        out = await client.delete("/api/v1/session")
        assert out.status_code == 204
        assert "max-age=0" in out.headers["set-cookie"].lower()
        assert (await client.get("/api/v1/session")).status_code == 401


async def test_session_rejects_malformed_bodies(server: Server) -> None:
    async with server.client() as client:
        r = await client.post("/api/v1/session", json={"token": 42})
        assert r.status_code == 400
        r = await client.post(
            "/api/v1/session", content=b"{", headers={"content-type": "application/json"}
        )
        assert r.status_code == 400 and r.json()["error"] == "invalid_json"
        r = await client.post("/api/v1/session", content=b"token=x")
        assert r.status_code == 415


async def test_resync_and_application_ping(server: Server) -> None:
    dev = await add_device(server)
    await post_ping(server, dev, NOW - timedelta(seconds=3), 52.3)
    async with connect(dispatch_url(server)) as ws:
        assert (await receive(ws))["type"] == "snapshot"
        await ws.send(orjson.dumps({"type": "ping"}).decode())
        pong = await receive_until(ws, lambda m: m["type"] == "pong")
        assert pong["v"] == 1
        await ws.send("not json at all")  # ignored, the connection stays
        await ws.send(orjson.dumps({"type": "resync"}).decode())
        again = await receive_until(ws, lambda m: m["type"] == "snapshot")
        assert vehicle(again, dev.unique_id)["lat"] == pytest.approx(52.3)


async def test_route_summaries_and_events_from_the_bus(server: Server) -> None:
    dev = await add_device(server)
    await post_ping(server, dev, NOW - timedelta(seconds=2), 52.4)
    bus = server.runtime.bus
    async with connect(dispatch_url(server)) as ws:
        await receive(ws)
        summary = {"next_stop": "S-1", "eta": iso(NOW + timedelta(minutes=9)), "remaining": 3}
        await bus.publish("routes", {"type": "route", "device": dev.unique_id, **summary})
        delta = await receive_until(ws, has_vehicle(dev.unique_id))
        assert vehicle(delta, dev.unique_id)["route"] == summary
        assert vehicle(delta, dev.unique_id)["lat"] == pytest.approx(52.4)

        event = {"type": "arrived", "stop": "S-1", "time": iso(NOW)}
        await bus.publish("events", {"type": "event", "device": dev.unique_id, "event": event})
        with_event = await receive_until(ws, lambda m: bool(m.get("events")))
        assert with_event["events"] == [{**event, "device": dev.unique_id}]

        # A later position keeps the summary; a new connection's snapshot has it too.
        t = NOW - timedelta(seconds=1)
        await post_ping(server, dev, t, 52.4001)
        moved = await receive_until(ws, has_vehicle(dev.unique_id, t))
        assert vehicle(moved, dev.unique_id)["route"] == summary
    async with connect(dispatch_url(server)) as ws:
        assert vehicle(await receive(ws), dev.unique_id)["route"] == summary


async def test_database_down_means_try_again_never_a_broken_feed(server_factory: Any) -> None:
    srv = await server_factory(database_url="postgresql://postgres@127.0.0.1:1/nothing")
    # A key needs the database to be checked: refused with 503, like the HTTP API.
    with pytest.raises(InvalidStatus) as refused:
        async with connect(dispatch_url(srv, "some-dispatcher-key")):
            pass
    assert refused.value.response.status_code == 503
    # The admin token needs no database, but the snapshot does: closed with "try again".
    async with connect(dispatch_url(srv)) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013


async def test_closing_client_is_forgotten(server: Server) -> None:
    before = server.runtime.hub.stats()["subscribers"]
    async with connect(dispatch_url(server)) as ws:
        await receive(ws)
        assert server.runtime.hub.stats()["subscribers"] == before + 1
    for _ in range(100):
        if server.runtime.hub.stats()["subscribers"] == before:
            break
        await asyncio.sleep(0.02)
    assert server.runtime.hub.stats()["subscribers"] == before
    with pytest.raises(ConnectionClosed):
        await ws.recv()


async def test_heartbeat_drops_a_client_that_stopped_answering(server: Server) -> None:
    hub = server.runtime.hub
    before = hub.stats()["subscribers"]
    ws = await connect(dispatch_url(server), ping_interval=None)
    await receive(ws)
    assert hub.stats()["subscribers"] == before + 1
    # The peer goes silent (as a phone that lost its network would): it never reads the
    # server's pings, so never answers them. The test server pings every 5 s, waits 5 s.
    ws.transport.pause_reading()
    for _ in range(200):
        if hub.stats()["subscribers"] == before:
            break
        await asyncio.sleep(0.1)
    assert hub.stats()["subscribers"] == before
    ws.transport.abort()
