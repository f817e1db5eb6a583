"""Sign-in sessions are opaque and server-side, and the cookie works only from our own pages
(issue 15, finding 6), against a real server and PostgreSQL.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.conftest import ADMIN_TOKEN, Server, ServerFactory, add_device
from tracker.core import tokens
from tracker.store.devices import add_key

EVIL = "http://evil.example"


@contextlib.asynccontextmanager
async def signed_in(srv: Server, token: str = ADMIN_TOKEN) -> AsyncIterator[httpx.AsyncClient]:
    """A client holding the session cookie of `token`."""
    async with srv.client() as client:
        r = await client.post("/api/v1/session", json={"token": token})
        assert r.status_code == 200, r.text
        yield client


async def test_the_cookie_holds_a_random_id_and_the_database_only_its_digest(
    server: Server, db: asyncpg.Pool
) -> None:
    async with signed_in(server) as client:
        cookie = client.cookies["tracker_session"]
        assert cookie != ADMIN_TOKEN and ADMIN_TOKEN not in cookie
        row = await db.fetchrow(
            "SELECT role, key_id, token_hash FROM sessions WHERE token_hash = $1",
            tokens.digest(cookie),
        )
        assert row is not None and row["role"] == "admin" and row["key_id"] is None
        # Nothing in the table is the token or the cookie as they are.
        dumped = str([dict(r) for r in await db.fetch("SELECT * FROM sessions")])
        assert cookie not in dumped and ADMIN_TOKEN not in dumped
        assert (await client.get("/api/v1/session")).json() == {"role": "admin"}
    # The credential itself in the cookie opens nothing any more.
    async with server.client() as raw:
        r = await raw.get("/api/v1/session", headers={"Cookie": f"tracker_session={ADMIN_TOKEN}"})
        assert r.status_code == 401


def route_body(device: str) -> dict[str, Any]:
    return {
        "device": device,
        "planned_start": datetime.now(UTC).isoformat(),
        "stops": [
            {"lat": 48.137, "lon": 11.575, "name": "One"},
            {"lat": 48.139, "lon": 11.580, "name": "Two"},
        ],
        "path": None,
    }


async def test_cookie_state_changes_from_another_origin_are_refused(
    server: Server, db: asyncpg.Pool
) -> None:
    dev = await add_device(server)
    hooks_before = await db.fetchval("SELECT count(*) FROM webhooks")
    devices_before = await db.fetchval("SELECT count(*) FROM devices")
    routes_before = await db.fetchval("SELECT count(*) FROM routes")
    calls = [
        ("POST", "/api/v1/routes", route_body(dev.unique_id)),
        ("POST", "/api/v1/devices", {"name": "Evil van"}),
        ("POST", "/api/v1/webhooks", {"url": "https://evil.example/h", "events": ["stop.arrived"]}),
        ("PATCH", f"/api/v1/devices/{dev.unique_id}", {"enabled": False}),
        ("DELETE", "/api/v1/session", None),
    ]
    async with signed_in(server) as client:
        for method, path, body in calls:
            r = await client.request(method, path, json=body, headers={"Origin": EVIL})
            assert r.status_code == 403, (method, path, r.text)
            assert r.json()["error"] == "cross_origin"
        # Same scheme and host only: another scheme on the same host is another origin.
        https_self = server.base_url.replace("http://", "https://")
        r = await client.post(
            "/api/v1/devices", json={"name": "Almost"}, headers={"Origin": https_self}
        )
        assert r.status_code == 403
        r = await client.post(
            "/api/v1/devices", json={"name": "Cross"}, headers={"Sec-Fetch-Site": "cross-site"}
        )
        assert r.status_code == 403
        assert await db.fetchval("SELECT count(*) FROM webhooks") == hooks_before
        assert await db.fetchval("SELECT count(*) FROM devices") == devices_before
        assert await db.fetchval("SELECT count(*) FROM routes") == routes_before
        # Our own page may; reads need no Origin; the session survived the forged sign-out.
        own = {"Origin": server.base_url}
        r = await client.post("/api/v1/routes", json=route_body(dev.unique_id), headers=own)
        assert r.status_code == 201, r.text
        assert (await client.get("/api/v1/devices", headers={"Origin": EVIL})).status_code == 200
        # A bearer token is not ambient authority: no Origin rule applies to it.
        r = await client.post(
            "/api/v1/devices",
            json={"name": "Scripted"},
            headers={"Origin": EVIL, "Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
        assert r.status_code == 201
    # Another site's page cannot sign a browser in either.
    async with server.client() as other:
        r = await other.post(
            "/api/v1/session", json={"token": ADMIN_TOKEN}, headers={"Origin": EVIL}
        )
        assert r.status_code == 403 and "set-cookie" not in r.headers


async def test_websocket_origin_compares_scheme_and_host(server: Server) -> None:
    async with signed_in(server) as client:
        cookie = {"Cookie": f"tracker_session={client.cookies['tracker_session']}"}
    url = f"{server.ws_url}/ws/dispatch"
    for origin in (server.base_url.replace("http://", "https://"), EVIL):
        with pytest.raises(InvalidStatus) as refused:
            async with connect(url, additional_headers={**cookie, "Origin": origin}):
                pass
        assert refused.value.response.status_code == 403, origin
    async with connect(url, additional_headers={**cookie, "Origin": server.base_url}) as ws:
        assert b"snapshot" in (await ws.recv(decode=False))


async def test_sessions_are_listed_per_key_and_the_admin_sees_all(
    server_factory: ServerFactory, db: asyncpg.Pool
) -> None:
    srv = await server_factory()
    mine = await add_key(db, "mine", "dispatcher")
    theirs = await add_key(db, "theirs", "dispatcher")
    async with signed_in(srv, mine) as me, signed_in(srv, theirs) as them, signed_in(srv) as admin:
        listed = (await me.get("/api/v1/sessions")).json()["sessions"]
        assert [s["key"] for s in listed] == ["mine"] and listed[0]["current"] is True
        assert set(listed[0]) == {
            "id",
            "role",
            "key",
            "created_at",
            "last_seen_at",
            "expires_at",
            "user_agent",
            "client",
            "current",
        }
        their_id = (await them.get("/api/v1/sessions")).json()["sessions"][0]["id"]
        # Not mine to end: 404, and it still works.
        assert (await me.delete(f"/api/v1/sessions/{their_id}")).status_code == 404
        assert (await them.get("/api/v1/session")).status_code == 200
        everyone = (await admin.get("/api/v1/sessions")).json()["sessions"]
        assert {"mine", "theirs", None} <= {s["key"] for s in everyone}
        assert (await admin.delete(f"/api/v1/sessions/{their_id}")).status_code == 204
        assert (await them.get("/api/v1/session")).status_code == 401
        # A disabled key's sessions end with it.
        await db.execute("UPDATE api_keys SET enabled = false WHERE name = 'mine'")
        assert (await me.get("/api/v1/session")).status_code == 401


async def test_an_admin_session_ends_with_its_admin_token(
    server_factory: ServerFactory, database_url: str
) -> None:
    first = await server_factory()
    async with signed_in(first) as client:
        cookie = {"Cookie": f"tracker_session={client.cookies['tracker_session']}"}
    rotated = await server_factory(admin_token="a-new-admin-token")
    async with rotated.client() as other:
        assert (await other.get("/api/v1/session", headers=cookie)).status_code == 401
