"""Customer tracking against real servers, PostGIS and WebSockets: links made with the route,
the page, the live feed (snapshot, then deltas with ETA and the vehicle under the
stops-away rule), the outcome after completion, re-issued links, two instances as one."""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.conftest import ADMIN_TOKEN, TEST_REDIS_URL, DeviceCreds, Server, ServerFactory
from tests.conftest import add_device as register_device

Json = dict[str, Any]

# A straight east-west street in Munich; stops along it, metres from its start.
LAT = 48.137
LON0 = 11.560
M_PER_DEG_LON = 111_320.0 * math.cos(math.radians(LAT))
STREET_M = 2500.0
STOP_AT_M = (600.0, 1300.0, 2000.0)
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
PUBLIC_URL = "https://track.example.test"
TOKEN_CHARS = re.compile(r"[A-Za-z0-9_-]{43}")


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def lon_at(m: float) -> float:
    return LON0 + m / M_PER_DEG_LON


def route_body(device: str, start: datetime, tag: str) -> Json:
    """A route with three stops; names and recipients carry `tag` so leaks are findable."""
    return {
        "device": device,
        "planned_start": iso(start),
        "stops": [
            {
                "lat": LAT,
                "lon": lon_at(m),
                "name": f"{tag} Street {k + 1}",
                "recipient": f"{tag} Recipient {k + 1}",
                "service_s": 60.0,
                "radius_m": 40.0,
            }
            for k, m in enumerate(STOP_AT_M)
        ],
        "path": {"type": "LineString", "coordinates": [[LON0, LAT], [lon_at(STREET_M), LAT]]},
    }


def token_of(url: str) -> str:
    return urlsplit(url).path.rsplit("/", 1)[1]


class Delivery:
    """A device with a fresh route, its tracking tokens, and ways to move it."""

    def __init__(self, srv: Server, device: DeviceCreds, route: Json, tag: str) -> None:
        self.srv = srv
        self.device = device
        self.route = route
        self.tag = tag
        self.tokens = [token_of(s["tracking_url"]) for s in route["stops"]]
        self.stop_ids = [s["id"] for s in route["stops"]]

    async def ping(self, metres: float, when: datetime | None = None, speed: float = 10.0) -> None:
        body = {
            "time": iso(when or datetime.now(UTC)),
            "lat": LAT,
            "lon": lon_at(metres),
            "speed": speed,
            "course": 90.0,
        }
        async with self.srv.client() as client:
            r = await client.post("/api/v1/positions", json=body, headers=self.device.headers)
        assert r.status_code == 202, r.text
        assert r.json()["stored"] == 1, r.text

    async def set_status(self, k: int, status: str, reason: str | None = None) -> Json:
        body: Json = {"status": status}
        if reason:
            body["reason"] = reason
        async with self.srv.client() as client:
            r = await client.patch(
                f"/api/v1/routes/{self.route['id']}/stops/{self.stop_ids[k]}",
                json=body,
                headers=ADMIN,
            )
        assert r.status_code == 200, r.text
        result: Json = r.json()
        return result


async def new_delivery(
    srv: Server, start: datetime | None = None, tag: str | None = None
) -> Delivery:
    tag = tag or f"T{datetime.now(UTC).strftime('%H%M%S%f')}"
    device = await register_device(srv, name=f"Van {tag}")
    start = start or datetime.now(UTC) - timedelta(minutes=5)
    async with srv.client() as client:
        r = await client.post(
            "/api/v1/routes", json=route_body(device.unique_id, start, tag), headers=ADMIN
        )
    assert r.status_code == 201, r.text
    return Delivery(srv, device, r.json(), tag)


async def open_feed(srv: Server, token: str) -> ClientConnection:
    return await connect(f"{srv.ws_url}/ws/track/{token}", open_timeout=5)


async def receive(ws: ClientConnection, timeout: float = 5.0) -> Json:
    text = await asyncio.wait_for(ws.recv(), timeout)
    assert isinstance(text, str)
    message: Json = orjson.loads(text)
    return message


async def receive_until(
    ws: ClientConnection, match: Callable[[Json], bool], timeout: float = 8.0
) -> Json:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        left = deadline - loop.time()
        if left <= 0:
            raise TimeoutError("no matching message")
        message = await receive(ws, left)
        if match(message):
            return message


async def quiet(ws: ClientConnection, seconds: float) -> list[Json]:
    """Every frame that arrives within `seconds`."""
    frames: list[Json] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while (left := deadline - loop.time()) > 0:
        try:
            frames.append(await receive(ws, left))
        except TimeoutError:
            break
    return frames


def vehicle_at(metres: float) -> Callable[[Json], bool]:
    def match(message: Json) -> bool:
        v = message.get("tracking", {}).get("vehicle")
        return v is not None and abs(v["lon"] - round(lon_at(metres), 5)) < 1e-9

    return match


@pytest.fixture
async def srv(server_factory: ServerFactory) -> Server:
    return await server_factory(public_url=PUBLIC_URL, tick_ms=20.0)


# -- links ------------------------------------------------------------------------------------


async def test_each_stop_gets_a_random_link_stored_only_as_a_digest(
    srv: Server, db: asyncpg.Pool
) -> None:
    d = await new_delivery(srv)
    urls = [s["tracking_url"] for s in d.route["stops"]]
    assert all(u.startswith(f"{PUBLIC_URL}/t/") for u in urls)
    assert all(TOKEN_CHARS.fullmatch(t) for t in d.tokens)  # 43 base64url chars: 256 bits
    assert len(set(d.tokens)) == 3
    rows = await db.fetch(
        "SELECT s.*::text AS whole, tracking_hash FROM stops s WHERE route_id = $1 ORDER BY seq",
        d.route["id"],
    )
    for row, token in zip(rows, d.tokens, strict=True):
        assert bytes(row["tracking_hash"]) == hashlib.sha256(token.encode()).digest()
        assert token not in row["whole"]
    # Shown once: reading the route again, or watching the bus, never shows a link.
    async with srv.client() as client:
        again = (await client.get(f"/api/v1/routes/{d.route['id']}", headers=ADMIN)).json()
    assert [s["tracking_url"] for s in again["stops"]] == [None, None, None]
    summary = srv.runtime.hub.fleet
    assert all(t not in orjson.dumps(summary._routes).decode() for t in d.tokens)


async def test_reissued_link_replaces_the_old_one(srv: Server) -> None:
    d = await new_delivery(srv)
    path = f"/api/v1/routes/{d.route['id']}/stops/{d.stop_ids[1]}/tracking"
    async with srv.client() as client:
        assert (await client.post(path)).status_code == 401
        r = await client.post(path, headers=ADMIN)
        assert r.status_code == 200, r.text
        fresh = token_of(r.json()["tracking_url"])
        assert fresh != d.tokens[1] and TOKEN_CHARS.fullmatch(fresh)
        assert (await client.get(f"/t/{d.tokens[1]}")).status_code == 404
        page = await client.get(f"/t/{fresh}")
        assert page.status_code == 200 and f"{d.tag} Street 2" in page.text
        missing = f"/api/v1/routes/{d.route['id']}/stops/{d.stop_ids[1] + 10_000}/tracking"
        assert (await client.post(missing, headers=ADMIN)).status_code == 404


# -- the page ---------------------------------------------------------------------------------


async def test_page_shows_this_stop_only_and_is_never_cached(srv: Server) -> None:
    d = await new_delivery(srv)
    async with srv.client() as client:
        r = await client.get(f"/t/{d.tokens[1]}")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["referrer-policy"] == "no-referrer"
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert f"{d.tag} Street 2" in r.text
    for leak in (
        f"{d.tag} Street 1",
        f"{d.tag} Street 3",
        f"{d.tag} Recipient",
        d.device.unique_id,
        f"Van {d.tag}",
    ):
        assert leak not in r.text
    # The first state is embedded for an immediate render (HTML-escaped JSON).
    state = re.search(r'data-state="([^"]*)"', r.text)
    assert state is not None
    import html

    embedded = orjson.loads(html.unescape(state.group(1)))
    assert embedded["destination"]["name"] == f"{d.tag} Street 2"
    assert embedded["phase"] == "out_for_delivery" and embedded["vehicle"] is None


async def test_names_are_escaped_on_the_page(srv: Server) -> None:
    d = await new_delivery(srv, tag='<script>alert("x")</script>')
    async with srv.client() as client:
        r = await client.get(f"/t/{d.tokens[0]}")
    assert r.status_code == 200
    assert "<script>alert" not in r.text
    assert "&lt;script&gt;alert" in r.text


# -- the feed ---------------------------------------------------------------------------------


async def test_feed_follows_the_drive_then_shows_the_outcome_without_the_vehicle(
    srv: Server,
) -> None:
    d = await new_delivery(srv)
    async with await open_feed(srv, d.tokens[0]) as ws:
        snap = await receive(ws)
        assert snap["type"] == "snapshot" and snap["v"] == 1
        first = snap["tracking"]
        assert first["destination"]["name"] == f"{d.tag} Street 1"
        # 600 m ahead at the planned speed: next, and maybe already within TRACKER_ARRIVING_S.
        assert first["phase"] in ("next_stop", "arriving")
        assert first["vehicle"] is None
        initial_eta = datetime.fromisoformat(first["eta"])

        t0 = datetime.now(UTC)
        await d.ping(0.0, t0)
        moved = await receive_until(ws, vehicle_at(0.0))
        assert moved["type"] == "delta"
        await d.ping(50.0, t0 + timedelta(seconds=5))
        later = await receive_until(ws, vehicle_at(50.0))
        assert later["tracking"]["vehicle"]["time"] == (t0 + timedelta(seconds=5)).isoformat()
        # The ETA comes from the drive, not the plan.
        assert later["tracking"]["eta"] is not None
        assert datetime.fromisoformat(later["tracking"]["eta"]) != initial_eta

        await d.set_status(0, "arrived")
        arrived = await receive_until(ws, lambda m: m["tracking"]["phase"] == "arrived")
        assert arrived["tracking"]["eta"] is None and arrived["tracking"]["arrived_at"]
        await d.set_status(0, "completed")
        done = await receive_until(ws, lambda m: m["tracking"]["phase"] == "delivered")
        assert done["tracking"]["vehicle"] is None and done["tracking"]["done_at"]

        # The vehicle drives on: nothing more reaches this customer.
        for k, m in enumerate((100.0, 150.0, 200.0)):
            await d.ping(m, t0 + timedelta(seconds=10 + 5 * k))
        assert await quiet(ws, 1.0) == []
        await ws.send('{"type": "resync"}')
        resent = await receive(ws)
        assert resent["type"] == "snapshot" and resent["tracking"] == done["tracking"]

    # A new page load after completion: the outcome, no vehicle.
    async with await open_feed(srv, d.tokens[0]) as ws:
        snap = await receive(ws)
        assert snap["tracking"]["phase"] == "delivered" and snap["tracking"]["vehicle"] is None


async def test_vehicle_shows_only_within_the_stops_away_limit(srv: Server) -> None:
    # TRACKER_CUSTOMER_MAX_STOPS_AWAY is 1 here: stop 3 sees the vehicle once stop 1 is done.
    assert srv.settings.customer_max_stops_away == 1
    d = await new_delivery(srv)
    t0 = datetime.now(UTC)
    async with await open_feed(srv, d.tokens[2]) as far, await open_feed(srv, d.tokens[1]) as near:
        assert (await receive(far))["tracking"]["phase"] == "out_for_delivery"
        assert (await receive(near))["tracking"]["phase"] == "out_for_delivery"
        await d.ping(0.0, t0)
        await receive_until(near, vehicle_at(0.0))
        await d.ping(40.0, t0 + timedelta(seconds=4))
        await receive_until(near, vehicle_at(40.0))
        assert all(f["tracking"]["vehicle"] is None for f in await quiet(far, 0.5))

        await d.set_status(0, "skipped")
        await d.ping(80.0, t0 + timedelta(seconds=8))
        seen = await receive_until(far, vehicle_at(80.0))
        assert seen["tracking"]["phase"] == "out_for_delivery"
        nxt = await receive_until(near, vehicle_at(80.0))
        assert nxt["tracking"]["phase"] in ("next_stop", "arriving")


async def test_ping_and_pong(srv: Server) -> None:
    d = await new_delivery(srv)
    async with await open_feed(srv, d.tokens[0]) as ws:
        await receive(ws)
        await ws.send('{"type": "ping"}')
        pong = await receive(ws)
        assert pong["type"] == "pong" and set(pong) == {"type", "v", "time"}
        await ws.send("not json")
        await ws.send('{"type": "ping"}')
        assert (await receive(ws))["type"] == "pong"


async def test_two_instances_act_as_one(server_factory: ServerFactory) -> None:
    a = await server_factory(redis_url=TEST_REDIS_URL, public_url=PUBLIC_URL, tick_ms=20.0)
    b = await server_factory(redis_url=TEST_REDIS_URL, public_url=PUBLIC_URL, tick_ms=20.0)
    d = await new_delivery(a)
    async with await open_feed(b, d.tokens[0]) as ws:
        assert (await receive(ws))["tracking"]["phase"] in ("next_stop", "arriving")
        t0 = datetime.now(UTC)
        await d.ping(0.0, t0)  # posted to A
        await receive_until(ws, vehicle_at(0.0))
        d.srv = b
        await d.set_status(0, "failed", reason="nobody home")  # changed on B
        failed = await receive_until(ws, lambda m: m["tracking"]["phase"] == "failed")
        assert failed["tracking"]["vehicle"] is None
        assert "nobody home" not in orjson.dumps(failed).decode()


async def test_feed_answers_through_http_client_errors_too(srv: Server) -> None:
    # A plain GET on the socket path is not a page.
    d = await new_delivery(srv)
    async with httpx.AsyncClient(base_url=srv.base_url) as client:
        r = await client.get(f"/ws/track/{d.tokens[0]}")
    assert r.status_code in (400, 404, 426)
    assert "Traceback" not in r.text
