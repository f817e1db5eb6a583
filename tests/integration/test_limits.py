"""The limits against real servers: per-device and per-address rate limits (429 with
Retry-After, nothing of a refused request stored), WebSockets per credential, and the body
and batch sizes (413) on every ingest endpoint."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from tests.conftest import (
    ADMIN_TOKEN,
    DeviceCreds,
    Server,
    ServerFactory,
    add_device,
    free_port,
    stored_positions,
)
from tracker.store.devices import add_key

Json = dict[str, Any]
START = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def fix_time(k: int) -> datetime:
    return START + timedelta(seconds=10 * k)


# One ping (the k-th) as each app sends it: an ingest call returns the HTTP response.
Sender = Callable[[Server, DeviceCreds, int], Awaitable[httpx.Response]]


async def send_native(srv: Server, dev: DeviceCreds, k: int) -> httpx.Response:
    body = {"time": iso(fix_time(k)), "lat": 48.1 + k * 1e-4, "lon": 11.5}
    async with srv.client() as client:
        return await client.post("/api/v1/positions", json=body, headers=dev.headers)


async def send_osmand(srv: Server, dev: DeviceCreds, k: int) -> httpx.Response:
    query = {
        "id": dev.unique_id,
        "lat": str(48.1 + k * 1e-4),
        "lon": "11.5",
        "timestamp": str(int(fix_time(k).timestamp())),
    }
    async with srv.client() as client:
        return await client.post("/ingest/osmand", params=query)


def owntracks_headers(dev: DeviceCreds) -> dict[str, str]:
    basic = base64.b64encode(f"{dev.unique_id}:{dev.token}".encode()).decode()
    return {"Authorization": f"Basic {basic}", "Content-Type": "application/json"}


async def send_owntracks(srv: Server, dev: DeviceCreds, k: int) -> httpx.Response:
    body = {"_type": "location", "lat": 48.1 + k * 1e-4, "lon": 11.5, "tst": 0}
    body["tst"] = int(fix_time(k).timestamp())
    async with srv.client() as client:
        return await client.post(
            "/ingest/owntracks", content=orjson.dumps(body), headers=owntracks_headers(dev)
        )


def overland_batch(ks: range) -> bytes:
    return orjson.dumps(
        {
            "locations": [
                {
                    "type": "Feature",
                    "geometry": {"type": "Point", "coordinates": [11.5, 48.1 + k * 1e-4]},
                    "properties": {"timestamp": iso(fix_time(k)), "horizontal_accuracy": 5},
                }
                for k in ks
            ]
        }
    )


async def post_overland(srv: Server, dev: DeviceCreds, body: bytes) -> httpx.Response:
    headers = {"Authorization": f"Bearer {dev.token}", "Content-Type": "application/json"}
    async with srv.client() as client:
        return await client.post("/ingest/overland", content=body, headers=headers)


async def send_overland(srv: Server, dev: DeviceCreds, k: int) -> httpx.Response:
    return await post_overland(srv, dev, overland_batch(range(k, k + 1)))


SENDERS: dict[str, Sender] = {
    "native": send_native,
    "osmand": send_osmand,
    "owntracks": send_owntracks,
    "overland": send_overland,
}


def accepted(protocol: str, r: httpx.Response) -> bool:
    return r.status_code == (202 if protocol == "native" else 200)


def assert_rate_limited(protocol: str, r: httpx.Response, window_s: int) -> None:
    assert r.status_code == 429, r.text
    assert 1 <= int(r.headers["retry-after"]) <= window_s
    body = r.json()
    if protocol == "overland":
        # Overland's error shape: anything but {"result": "ok"} keeps the batch on the phone.
        assert set(body) == {"error"} and "too many requests" in body["error"]
    else:
        assert body["error"] == "rate_limited" and "too many requests" in body["message"]


async def fix_times(db: asyncpg.Pool, dev: DeviceCreds) -> list[datetime]:
    return [row["fix_time"] for row in await stored_positions(db, dev.unique_id)]


# -- per device ---------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", list(SENDERS))
async def test_a_device_over_its_limit_gets_429_and_its_refused_pings_are_not_stored(
    server_factory: ServerFactory, db: asyncpg.Pool, protocol: str
) -> None:
    # A minute-long window: the test cannot straddle its end on a slow machine.
    srv = await server_factory(rate_limit_device="3/minute")
    send = SENDERS[protocol]
    dev, other = await add_device(srv), await add_device(srv)
    answers = [await send(srv, dev, k) for k in range(5)]
    assert [accepted(protocol, r) for r in answers[:3]] == [True] * 3, [r.text for r in answers]
    for r in answers[3:]:
        assert_rate_limited(protocol, r, 60)
    # The accepted pings are stored; the refused ones are not.
    assert await fix_times(db, dev) == [fix_time(k) for k in range(3)]
    # Another device has its own allowance.
    for k in range(3):
        r = await send(srv, other, k)
        assert accepted(protocol, r), r.text
    assert await fix_times(db, other) == [fix_time(k) for k in range(3)]


async def test_retry_after_counts_down_to_the_end_of_the_window(
    server_factory: ServerFactory, db: asyncpg.Pool
) -> None:
    srv = await server_factory(rate_limit_device="1/2seconds")
    dev = await add_device(srv)
    assert (await send_native(srv, dev, 0)).status_code == 202
    refused = await send_native(srv, dev, 1)
    assert_rate_limited("native", refused, 2)
    # After waiting as told, the phone's retry is accepted and stored.
    await asyncio.sleep(int(refused.headers["retry-after"]) + 0.1)
    r = await send_native(srv, dev, 1)
    assert r.status_code == 202, r.text
    assert await fix_times(db, dev) == [fix_time(0), fix_time(1)]


# -- per client address --------------------------------------------------------------------


async def test_an_address_over_its_limit_gets_429_on_everything_but_the_probes(
    server_factory: ServerFactory,
) -> None:
    srv = await server_factory(rate_limit_ip="6/minute")
    bad = {"Authorization": "Bearer guessed-token", "Content-Type": "application/json"}
    async with srv.client() as client:
        statuses = [
            (
                await client.post("/api/v1/positions", json={"lat": 1, "lon": 1}, headers=bad)
            ).status_code
            for _ in range(3)
        ]
        statuses += [(await client.get("/api/v1/devices", headers=bad)).status_code]
        statuses += [(await client.post("/ingest/overland", headers=bad)).status_code]
        statuses += [(await client.get("/")).status_code]
        # Token guessing counted like anything else: the limit is now reached.
        assert statuses == [401, 401, 401, 401, 401, 200]
        for path in ("/api/v1/positions", "/ingest/owntracks", "/ingest/osmand?id=x"):
            r = await client.post(path, headers=bad)
            assert r.status_code == 429, (path, r.text)
            assert 1 <= int(r.headers["retry-after"]) <= 60
            assert r.json()["error"] == "rate_limited"
        # Even the right token waits: the address is refused before authentication.
        admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        assert (await client.get("/api/v1/devices", headers=admin)).status_code == 429
        # Health probes are never limited.
        for _ in range(10):
            assert (await client.get("/healthz")).status_code == 200
            assert (await client.get("/readyz")).status_code == 200
    # A WebSocket handshake from the address is refused the same way.
    with pytest.raises(InvalidStatus) as refused:
        async with connect(f"{srv.ws_url}/ws/dispatch?token={ADMIN_TOKEN}"):
            pass
    assert refused.value.response.status_code == 429
    assert refused.value.response.headers["Retry-After"].isdigit()
    assert orjson.loads(refused.value.response.body)["error"] == "rate_limited"


async def test_the_osmand_listener_port_counts_against_the_same_address_limit(
    server_factory: ServerFactory,
) -> None:
    srv = await server_factory(rate_limit_ip="4/minute", osmand_port=free_port())
    listener = f"http://127.0.0.1:{srv.settings.osmand_port}/"
    async with httpx.AsyncClient(timeout=30.0) as client:
        # Unknown ids (id guessing) count too, on either port, against one allowance.
        query = {"id": "nobody", "lat": "48.1", "lon": "11.5"}
        for url in (listener, f"{srv.base_url}/ingest/osmand", listener, listener):
            r = await client.get(url, params=query)
            assert r.status_code == 400, r.text
        r = await client.get(listener, params=query)
    assert r.status_code == 429, r.text
    assert r.json()["error"] == "rate_limited" and int(r.headers["retry-after"]) >= 1


# -- WebSockets per credential --------------------------------------------------------------


async def open_socket(url: str, headers: dict[str, str] | None = None) -> ClientConnection:
    ws = await connect(url, additional_headers=headers)
    await asyncio.wait_for(ws.recv(), 5.0)  # the snapshot: the server holds the slot now
    return ws


async def refused_with(url: str, headers: dict[str, str] | None = None) -> tuple[int, Json]:
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url, additional_headers=headers):
            pass
    return refused.value.response.status_code, orjson.loads(refused.value.response.body)


async def opens_again(url: str) -> ClientConnection:
    """Connect once the server has noticed a closed socket and freed its slot."""
    for _ in range(100):
        try:
            return await open_socket(url)
        except InvalidStatus as exc:
            assert exc.response.status_code == 429
            await asyncio.sleep(0.05)
    raise AssertionError("the slot was never freed")


async def test_one_credential_holds_at_most_the_limit_of_dispatch_sockets(
    server_factory: ServerFactory, db: asyncpg.Pool
) -> None:
    srv = await server_factory(ws_max_per_token=2)
    url = f"{srv.ws_url}/ws/dispatch?token={ADMIN_TOKEN}"
    first, second = await open_socket(url), await open_socket(url)
    try:
        status, body = await refused_with(url)
        assert (status, body["error"]) == (429, "too_many_sockets")
        # The same token as a bearer header counts against the same allowance.
        status, _ = await refused_with(
            f"{srv.ws_url}/ws/dispatch", {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )
        assert status == 429
        # Another credential is not affected.
        key = await add_key(db, "limits-test", "dispatcher")
        other = await open_socket(f"{srv.ws_url}/ws/dispatch?token={key}")
        await other.close()
        await first.close()
        third = await opens_again(url)
        await third.close()
    finally:
        await first.close()
        await second.close()


async def test_a_tracking_link_holds_at_most_the_limit_of_sockets(
    server_factory: ServerFactory,
) -> None:
    srv = await server_factory(ws_max_per_token=1)
    dev = await add_device(srv)
    route = {
        "device": dev.unique_id,
        "planned_start": iso(datetime.now(UTC)),
        "stops": [
            {"lat": 48.137, "lon": 11.57, "name": "Limit Street 1"},
            {"lat": 48.137, "lon": 11.58, "name": "Limit Street 2"},
        ],
    }
    async with srv.admin() as client:
        r = await client.post("/api/v1/routes", json=route)
    assert r.status_code == 201, r.text
    token = r.json()["stops"][0]["tracking_url"].rsplit("/", 1)[1]
    url = f"{srv.ws_url}/ws/track/{token}"
    held = await open_socket(url)
    try:
        status, body = await refused_with(url)
        assert (status, body["error"]) == (429, "too_many_sockets")
        # The dispatcher's feed has its own allowance.
        dispatch = await open_socket(f"{srv.ws_url}/ws/dispatch?token={ADMIN_TOKEN}")
        await dispatch.close()
        await held.close()
        again = await opens_again(url)
        await again.close()
    finally:
        await held.close()


# -- body and batch sizes --------------------------------------------------------------------


async def test_every_ingest_endpoint_refuses_a_body_over_the_limit_with_413(
    server_factory: ServerFactory, db: asyncpg.Pool
) -> None:
    srv = await server_factory(max_body_bytes=1000)
    dev = await add_device(srv)
    big = overland_batch(range(20))
    assert len(big) > 1000
    padded = {"_type": "location", "lat": 48.1, "lon": 11.5, "tst": 1, "pad": "x" * 2000}
    async with srv.client() as client:
        answers = {
            "native": await client.post("/api/v1/positions", content=big, headers=dev.headers),
            "osmand": await client.post(
                f"/ingest/osmand?id={dev.unique_id}&lat=48.1&lon=11.5",
                content=b"x" * 2000,
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            ),
            "owntracks": await client.post(
                "/ingest/owntracks", content=orjson.dumps(padded), headers=owntracks_headers(dev)
            ),
        }
    answers["overland"] = await post_overland(srv, dev, big)
    for protocol, r in answers.items():
        assert r.status_code == 413, (protocol, r.text)
        body = r.json()
        if protocol == "overland":
            assert "body exceeds 1000 bytes" in body["error"]
        else:
            assert body["error"] == "body_too_large", (protocol, body)
    assert await fix_times(db, dev) == []


async def test_an_overland_batch_over_the_limit_is_413_and_kept_by_the_app(
    server_factory: ServerFactory, db: asyncpg.Pool
) -> None:
    srv = await server_factory(max_batch=5)
    dev = await add_device(srv)
    r = await post_overland(srv, dev, overland_batch(range(6)))
    assert r.status_code == 413
    assert r.json() == {"error": "at most 5 per batch"}
    assert await fix_times(db, dev) == []
    r = await post_overland(srv, dev, overland_batch(range(5)))
    assert (r.status_code, r.json()) == (200, {"result": "ok"})
    assert len(await fix_times(db, dev)) == 5
