"""A revoked credential ends everywhere at once (issue 15, findings 3 and 8).

Two real servers share PostgreSQL and a real Redis, with token caches on (as in
production: kept until a change arrives on the bus). Revoking a dispatcher key, disabling a
device and signing out close the affected /ws/dispatch sockets on both instances with code
1008 within a second, and the other instance refuses the credential over HTTP at once.
The dispatcher-key cache stays bounded under 30,000 random tokens.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import ADMIN_TOKEN, TEST_REDIS_URL, Server, ServerFactory, add_device
from tracker.core import tokens
from tracker.services.auth import NEGATIVE_SIZE
from tracker.store.devices import add_key

CACHED = 3600.0


async def pair(server_factory: ServerFactory) -> tuple[Server, Server]:
    """Two instances on one Redis channel of their own, caching token lookups."""
    channel = f"test-revocation-{uuid.uuid4().hex}"
    settings: dict[str, Any] = {
        "redis_url": TEST_REDIS_URL,
        "bus_channel": channel,
        "auth_cache_s": CACHED,
    }
    a = await server_factory(**settings)
    b = await server_factory(**settings)
    for srv in (a, b):
        bus: Any = srv.runtime.bus
        await asyncio.wait_for(bus.connected.wait(), 5.0)
    return a, b


async def open_feed(srv: Server, token: str | None = None, cookie: str | None = None) -> Any:
    url = f"{srv.ws_url}/ws/dispatch" + (f"?token={token}" if token else "")
    headers = {"Cookie": f"tracker_session={cookie}"} if cookie else {}
    ws = await connect(url, additional_headers=headers)
    first = orjson.loads(await asyncio.wait_for(ws.recv(), 5.0))
    assert first["type"] == "snapshot"
    return ws


async def closed_within(ws: ClientConnection, started: float, limit_s: float) -> float:
    """Seconds from `started` until the server closed `ws` with 1008 (fails past `limit_s`)."""
    try:
        async with asyncio.timeout(limit_s):
            while True:
                await ws.recv()
    except ConnectionClosed as closed:
        assert closed.rcvd is not None and closed.rcvd.code == 1008, closed
        return time.monotonic() - started
    except TimeoutError:
        raise AssertionError(f"socket still open {limit_s} s after the revocation") from None
    raise AssertionError("unreachable")


async def key_id_of(db: asyncpg.Pool, key: str) -> int:
    digest = tokens.digest(key)
    found: int = await db.fetchval("SELECT id FROM api_keys WHERE key_hash = $1", digest)
    return found


async def test_revoked_key_closes_its_sockets_on_every_instance(
    server_factory: ServerFactory, db: asyncpg.Pool
) -> None:
    a, b = await pair(server_factory)
    key = await add_key(db, "revoked soon", "dispatcher")
    other = await add_key(db, "stays", "dispatcher")
    bearer = {"Authorization": f"Bearer {key}"}
    async with b.client(headers=bearer) as client:
        assert (await client.get("/api/v1/devices")).status_code == 200  # now cached on b
    on_a, on_b = await open_feed(a, key), await open_feed(b, key)
    bystander = await open_feed(b, other)

    started = time.monotonic()
    assert await a.runtime.auth.revoke_key(await key_id_of(db, key))
    took = await asyncio.gather(
        closed_within(on_a, started, 1.0), closed_within(on_b, started, 1.0)
    )
    async with b.client(headers=bearer) as client:
        refused = await client.get("/api/v1/devices")
    print(f"key revoked: sockets closed after {max(took) * 1000:.0f} ms; b answers {refused}")
    assert refused.status_code == 401
    # Another key's socket is untouched.
    await bystander.send(orjson.dumps({"type": "resync"}).decode())
    again = orjson.loads(await asyncio.wait_for(bystander.recv(), 5.0))
    assert again["type"] == "snapshot"
    await bystander.close()


async def test_disabled_device_is_refused_at_once_by_the_other_instance(
    server_factory: ServerFactory,
) -> None:
    a, b = await pair(server_factory)
    dev = await add_device(a)
    ping = {"time": datetime.now(UTC).isoformat(), "lat": 48.1, "lon": 11.5}
    async with b.client() as client:
        r = await client.post("/api/v1/positions", json=ping, headers=dev.headers)
        assert r.status_code == 202  # b has the device cached now
    async with a.admin() as client:
        r = await client.patch(f"/api/v1/devices/{dev.unique_id}", json={"enabled": False})
        assert r.status_code == 200
    started = time.monotonic()
    async with b.client() as client:
        while True:
            r = await client.post("/api/v1/positions", json=ping, headers=dev.headers)
            if r.status_code == 403 or time.monotonic() - started > 5.0:
                break
            await asyncio.sleep(0.01)
    print(f"device disabled: b refuses after {(time.monotonic() - started) * 1000:.0f} ms")
    assert r.status_code == 403 and r.json()["error"] == "device_disabled"
    assert time.monotonic() - started < 1.0


async def test_sign_out_closes_the_sessions_sockets_everywhere(
    server_factory: ServerFactory,
) -> None:
    a, b = await pair(server_factory)
    async with a.client() as client:
        r = await client.post("/api/v1/session", json={"token": ADMIN_TOKEN})
        assert r.status_code == 200
        cookie = client.cookies["tracker_session"]
        on_a, on_b = await open_feed(a, cookie=cookie), await open_feed(b, cookie=cookie)
        admin_socket = await open_feed(b, ADMIN_TOKEN)  # the token itself: not this session
        started = time.monotonic()
        assert (await client.delete("/api/v1/session")).status_code == 204
        took = await asyncio.gather(
            closed_within(on_a, started, 1.0), closed_within(on_b, started, 1.0)
        )
    print(f"signed out: sockets closed after {max(took) * 1000:.0f} ms")
    async with b.client() as client:
        r = await client.get("/api/v1/session", headers={"Cookie": f"tracker_session={cookie}"})
        assert r.status_code == 401
    await admin_socket.send(orjson.dumps({"type": "ping"}).decode())
    assert orjson.loads(await asyncio.wait_for(admin_socket.recv(), 5.0))["type"] == "pong"
    await admin_socket.close()


async def test_ending_a_session_from_the_list_closes_its_socket_elsewhere(
    server_factory: ServerFactory, db: asyncpg.Pool
) -> None:
    a, b = await pair(server_factory)
    key = await add_key(db, "listed sessions", "dispatcher")
    async with a.client() as laptop, a.client() as phone:
        for client in (laptop, phone):
            r = await client.post("/api/v1/session", json={"token": key})
            assert r.status_code == 200
        listed = (await laptop.get("/api/v1/sessions")).json()["sessions"]
        assert len(listed) == 2 and sum(s["current"] for s in listed) == 1
        theirs = next(s for s in listed if not s["current"])
        assert theirs["key"] == "listed sessions" and theirs["role"] == "dispatcher"
        on_b = await open_feed(b, cookie=phone.cookies["tracker_session"])
        started = time.monotonic()
        r = await laptop.delete(f"/api/v1/sessions/{theirs['id']}")
        assert r.status_code == 204
        await closed_within(on_b, started, 1.0)
        assert (await phone.get("/api/v1/session")).status_code == 401
        assert (await laptop.get("/api/v1/session")).status_code == 200
        # Gone means gone: a second end is 404, as is another key's session.
        assert (await laptop.delete(f"/api/v1/sessions/{theirs['id']}")).status_code == 404


async def test_the_key_cache_stays_bounded_under_random_tokens(
    server_factory: ServerFactory,
) -> None:
    srv = await server_factory(auth_cache_s=CACHED)
    auth = srv.runtime.auth
    real = await add_key(srv.runtime.pool, "cached key", "dispatcher")
    assert await auth.principal(real) is not None
    # Through the server: a few thousand requests with made-up dispatcher keys...
    sem = asyncio.Semaphore(32)
    async with srv.client() as client:

        async def guess() -> int:
            async with sem:
                r = await client.get(
                    "/api/v1/devices", headers={"Authorization": f"Bearer {tokens.new_token()}"}
                )
                return r.status_code

        statuses = await asyncio.gather(*(guess() for _ in range(2_000)))
    assert set(statuses) == {401}
    # ...and the rest of 30,000 straight at the instance's authenticator.
    for _ in range(28):
        await asyncio.gather(*(auth.principal(tokens.new_token()) for _ in range(1_000)))
    cached = auth.cached()
    print(f"after 30,000 random keys: {cached}")
    assert cached["keys_missing"] <= NEGATIVE_SIZE
    assert cached["keys"] <= NEGATIVE_SIZE + 10
    # The real key is still served from the cache: random tokens evicted nothing real.
    assert await auth.principal(real) is not None
    async with srv.client(headers={"Authorization": f"Bearer {real}"}) as client:
        assert (await client.get("/api/v1/devices")).status_code == 200


@pytest.mark.parametrize("cache_s", [CACHED])
async def test_bus_gap_rechecks_open_sockets(server_factory: ServerFactory, cache_s: float) -> None:
    """A change the bus never delivered (made while it was away) is caught when it resumes."""
    a, b = await pair(server_factory)
    key = await add_key(a.runtime.pool, "changed behind the bus", "dispatcher")
    on_b = await open_feed(b, key)
    await a.runtime.pool.execute(
        "UPDATE api_keys SET enabled = false WHERE key_hash = $1", tokens.digest(key)
    )
    started = time.monotonic()
    b.runtime.auth.on_bus_resumed()  # what the bus calls after its subscription is back
    await closed_within(on_b, started, 2.0)


async def test_keys_forgotten_without_naming_one_still_close_the_revoked_ones(
    server_factory: ServerFactory, db: asyncpg.Pool
) -> None:
    """`forget_keys()` (a key changed, which one unsaid): every instance asks its sockets."""
    a, b = await pair(server_factory)
    key = await add_key(db, "revoked unnamed", "dispatcher")
    kept = await add_key(db, "kept unnamed", "dispatcher")
    on_b, stays = await open_feed(b, key), await open_feed(b, kept)
    await db.execute("UPDATE api_keys SET enabled = false WHERE key_hash = $1", tokens.digest(key))
    started = time.monotonic()
    a.runtime.auth.forget_keys()
    await closed_within(on_b, started, 1.0)
    await stays.send(orjson.dumps({"type": "ping"}).decode())
    assert orjson.loads(await asyncio.wait_for(stays.recv(), 5.0))["type"] == "pong"
    await stays.close()
