"""What a tracking link must never do, tried for real over HTTP and WebSockets: read another
stop or route, show a position after the stop is done, tell an expired link from one that
never existed, be guessed, leak internal ids, stack traces or the dispatch feed."""

from __future__ import annotations

import asyncio
import base64
import itertools
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.conftest import Server, ServerFactory
from tests.integration.test_tracking import (
    ADMIN,
    Delivery,
    new_delivery,
    open_feed,
    quiet,
    receive,
    receive_until,
    route_body,
    vehicle_at,
)
from tracker.store import tracking as tracking_store

Json = dict[str, Any]
FRAME_KEYS = {"type", "v", "time", "tracking"}
STATE_KEYS = {
    "destination",
    "phase",
    "eta",
    "eta_earliest",
    "eta_latest",
    "approximate",
    "arrived_at",
    "done_at",
    "vehicle",
}


@pytest.fixture
async def srv(server_factory: ServerFactory) -> Server:
    return await server_factory(tick_ms=20.0)


def assert_no_leaks(text: str, d: Delivery, own: int) -> None:
    """Nothing of other stops, recipients, the device or internal ids in `text`."""
    for k in range(3):
        if k != own:
            assert f"{d.tag} Street {k + 1}" not in text
    assert f"{d.tag} Recipient" not in text
    assert d.device.unique_id not in text and f"Van {d.tag}" not in text
    for token in d.tokens:
        assert token not in text or token == d.tokens[own]


def walk_keys(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in walk_keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in walk_keys(v)}
    return set()


def numeric_paths(value: Any, at: str = "") -> set[str]:
    """Where numbers sit in a customer state: ids would be numbers, so only coordinates and
    the vehicle's heading may."""
    if isinstance(value, bool):
        return set()
    if isinstance(value, int | float):
        return {at}
    if isinstance(value, dict):
        return {p for k, v in value.items() for p in numeric_paths(v, f"{at}.{k}")}
    if isinstance(value, list):
        return {p for v in value for p in numeric_paths(v, f"{at}[]")}
    return set()


NUMERIC = {
    ".destination.lat",
    ".destination.lon",
    ".vehicle.lat",
    ".vehicle.lon",
    ".vehicle.course",
}


async def refused_status(url: str) -> tuple[int, bytes, dict[str, str]]:
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url, open_timeout=5):
            pass
    response = refused.value.response
    # Only the date and the request's own id may differ.
    varying = ("date", "x-request-id")
    headers = {k.lower(): v for k, v in response.headers.raw_items() if k.lower() not in varying}
    return response.status_code, bytes(response.body or b""), headers


# -- one stop, nothing else -------------------------------------------------------------------


async def test_a_link_reads_its_own_stop_only_over_http_and_websocket(srv: Server) -> None:
    d = await new_delivery(srv)
    other = await new_delivery(srv)
    t0 = datetime.now(UTC)
    async with srv.client() as client:
        page = await client.get(f"/t/{d.tokens[1]}")
        assert page.status_code == 200
        assert_no_leaks(page.text, d, own=1)
        assert other.tag not in page.text
        # The token is no credential anywhere else.
        for path in (
            f"/api/v1/routes/{d.route['id']}",
            "/api/v1/routes/current",
            f"/api/v1/routes/{d.route['id']}/stops/{d.stop_ids[1]}/tracking",
            "/api/v1/webhooks",
            "/api/v1/devices",
        ):
            bearer = {"Authorization": f"Bearer {d.tokens[1]}"}
            r = await (client.post if path.endswith("tracking") else client.get)(
                path, headers=bearer
            )
            assert r.status_code == 401, (path, r.status_code)
        # Paths that try to step to another stop are not pages (a client resolves a literal
        # "/../" itself, so only the encoded form reaches the server).
        for path in (
            f"/t/{d.tokens[1]}%2F..%2F{d.tokens[2]}",
            f"/t/{d.tokens[1]}?stop={d.stop_ids[2]}",
        ):
            r = await client.get(path)
            assert r.status_code == 404 or f"{d.tag} Street 3" not in r.text
    with pytest.raises(InvalidStatus):
        async with connect(f"{srv.ws_url}/ws/dispatch?token={d.tokens[1]}", open_timeout=5):
            pass

    async with (
        await open_feed(srv, f"{d.tokens[1]}?stop={d.stop_ids[2]}") as ws,
        await open_feed(srv, other.tokens[1]) as bystander,
    ):
        await receive(bystander)
        frames = [await receive(ws)]
        await d.ping(0.0, t0)
        frames.append(await receive_until(ws, vehicle_at(0.0)))
        await other.ping(0.0, t0)
        await d.set_status(0, "completed")
        await d.set_status(2, "skipped")
        await d.ping(60.0, t0 + timedelta(seconds=6))
        frames.append(await receive_until(ws, vehicle_at(60.0)))
        frames.extend(await quiet(ws, 0.5))
        for f in frames:
            assert set(f) == FRAME_KEYS and set(f["tracking"]) == STATE_KEYS
            text = orjson.dumps(f).decode()
            assert_no_leaks(text, d, own=1)
            assert other.tag not in text
            assert f["tracking"]["destination"]["name"] == f"{d.tag} Street 2"
            # No key anywhere names an id, a device, a route or another stop.
            assert not walk_keys(f) & {"id", "device", "route", "route_id", "stop_id", "stops"}
            assert numeric_paths(f["tracking"]) <= NUMERIC
        # The bystander's page heard nothing of this delivery.
        for f in await quiet(bystander, 0.3):
            assert d.tag not in orjson.dumps(f).decode()


async def test_customer_feed_never_carries_dispatch_frames(srv: Server) -> None:
    d = await new_delivery(srv)
    t0 = datetime.now(UTC)
    async with await open_feed(srv, d.tokens[0]) as ws:
        frames = [await receive(ws)]
        for k in range(4):
            await d.ping(20.0 * k, t0 + timedelta(seconds=2 * k))
        await d.set_status(0, "arrived")
        frames.extend(await quiet(ws, 1.0))
        await ws.send('{"type": "resync"}')
        frames.append(await receive(ws))
    assert len(frames) >= 3
    for f in frames:
        assert f["type"] in ("snapshot", "delta")
        assert "vehicles" not in f and "events" not in f
        assert set(f) == FRAME_KEYS


# -- after the stop is done -------------------------------------------------------------------


async def test_after_completion_no_position_is_sent(srv: Server) -> None:
    d = await new_delivery(srv)
    t0 = datetime.now(UTC)
    async with await open_feed(srv, d.tokens[1]) as ws:
        await receive(ws)
        await d.ping(0.0, t0)
        await receive_until(ws, vehicle_at(0.0))
        await d.set_status(1, "failed", reason="gate closed, code 4411")
        done = await receive_until(ws, lambda m: m["tracking"]["phase"] == "failed")
        assert done["tracking"]["vehicle"] is None
        assert "4411" not in orjson.dumps(done).decode()  # the driver's note stays internal
        for k in range(1, 6):
            await d.ping(30.0 * k, t0 + timedelta(seconds=3 * k))
        await d.set_status(0, "completed")
        later = await quiet(ws, 1.0)
        assert all(f["tracking"]["vehicle"] is None for f in later)
        assert later == [], "a finished delivery gets no more frames"
    # Nor on a new connection, nor on the page.
    async with await open_feed(srv, d.tokens[1]) as ws:
        snap = await receive(ws)
        assert snap["tracking"]["vehicle"] is None and snap["tracking"]["phase"] == "failed"
    async with srv.client() as client:
        page = await client.get(f"/t/{d.tokens[1]}")
    assert page.status_code == 200 and "&quot;vehicle&quot;:null" in page.text


async def test_vehicle_on_a_newer_route_is_not_shown_to_the_old_routes_customers(
    srv: Server,
) -> None:
    d = await new_delivery(srv)
    t0 = datetime.now(UTC)
    async with await open_feed(srv, d.tokens[0]) as ws:
        await receive(ws)
        await d.ping(0.0, t0)
        await receive_until(ws, vehicle_at(0.0))
        # The dispatcher gives the van a new route; the old one is left open.
        body = route_body(d.device.unique_id, t0 - timedelta(minutes=1), "Newer")
        async with srv.client() as client:
            r = await client.post("/api/v1/routes", json=body, headers=ADMIN)
        assert r.status_code == 201
        hidden = await receive_until(ws, lambda m: m["tracking"]["vehicle"] is None)
        assert hidden["tracking"]["phase"] in ("next_stop", "arriving")
        await d.ping(20.0, t0 + timedelta(seconds=2))
        assert all(f["tracking"]["vehicle"] is None for f in await quiet(ws, 0.7))
    async with srv.client() as client:
        page = await client.get(f"/t/{d.tokens[0]}")
    assert "&quot;vehicle&quot;:null" in page.text
    async with await open_feed(srv, d.tokens[0]) as ws:
        assert (await receive(ws))["tracking"]["vehicle"] is None


# -- unknown, expired, malformed: one answer ----------------------------------------------------


async def test_unknown_and_expired_links_get_the_same_404(
    server_factory: ServerFactory,
) -> None:
    srv = await server_factory(tracking_ttl_s=1.0, tick_ms=20.0)
    d = await new_delivery(srv)
    async with await open_feed(srv, d.tokens[0]) as ws:
        await receive(ws)
        await d.set_status(0, "completed")
        await receive_until(ws, lambda m: m["tracking"]["phase"] == "delivered")
        # Still readable within the TTL ...
        async with srv.client() as client:
            assert (await client.get(f"/t/{d.tokens[0]}")).status_code == 200
        # ... and the open socket is closed once it runs out.
        await asyncio.wait_for(ws.wait_closed(), 5.0)
        assert ws.close_code == 1000
    await asyncio.sleep(0.2)
    unknown = base64.urlsafe_b64encode(bytes(32)).decode().rstrip("=")
    never = d.tokens[0][:-4] + ("AAAA" if not d.tokens[0].endswith("AAAA") else "BBBB")
    answers = []
    async with srv.client() as client:
        for token in (d.tokens[0], unknown, never, "short", "x" * 5000, "%00", "' OR 1=1 --"):
            r = await client.get(f"/t/{token}")
            # Only the date and the request's own id may differ.
            headers = {k: v for k, v in r.headers.items() if k not in ("date", "x-request-id")}
            answers.append((r.status_code, r.content, headers))
    assert answers[0][0] == 404
    assert all(a == answers[0] for a in answers), "expired, unknown and malformed must match"
    assert b"Traceback" not in answers[0][1]
    assert answers[0][2]["cache-control"] == "no-store"
    assert answers[0][2]["referrer-policy"] == "no-referrer"
    # The other stops of the route are still open.
    async with srv.client() as client:
        assert (await client.get(f"/t/{d.tokens[1]}")).status_code == 200
    ws_expired = await refused_status(f"{srv.ws_url}/ws/track/{d.tokens[0]}")
    ws_unknown = await refused_status(f"{srv.ws_url}/ws/track/{unknown}")
    assert ws_expired == ws_unknown and ws_expired[0] == 404
    assert ws_expired[1] == answers[0][1]


# -- tokens -----------------------------------------------------------------------------------


async def test_tokens_are_random_and_unrelated(srv: Server) -> None:
    runs = [await new_delivery(srv) for _ in range(6)]
    tokens = [t for d in runs for t in d.tokens]
    assert len(set(tokens)) == len(tokens) == 18
    raw = [base64.urlsafe_b64decode(t + "=") for t in tokens]
    assert all(len(b) == 32 for b in raw)  # 256 bits each
    # Consecutive stops' tokens share nothing: no counter, no common prefix.
    for a, b in itertools.pairwise(raw):
        assert a[:4] != b[:4]
    bits = "".join(f"{byte:08b}" for b in raw for byte in b)
    ones = bits.count("1") / len(bits)
    assert 0.45 < ones < 0.55  # 4608 bits: a fair coin lands here with p > 0.999999


async def test_lookup_compares_digests_in_constant_time(
    srv: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = await new_delivery(srv)
    calls: list[tuple[bytes, bytes]] = []
    real = tracking_store.hmac.compare_digest  # type: ignore[attr-defined]

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return bool(real(a, b))

    monkeypatch.setattr(tracking_store.hmac, "compare_digest", spy)  # type: ignore[attr-defined]
    async with srv.client() as client:
        assert (await client.get(f"/t/{d.tokens[0]}")).status_code == 200
    assert calls and all(len(a) == len(b) == 32 for a, b in calls)


# -- no internals in any answer -----------------------------------------------------------------


async def test_answers_carry_no_stack_traces_or_internal_ids(srv: Server) -> None:
    d = await new_delivery(srv)
    texts: list[str] = []
    async with srv.client() as client:
        for path in (
            f"/t/{d.tokens[0]}",
            f"/t/{d.tokens[0]}x",
            "/t/",
            "/t/%ff%fe",
            f"/t/{'A' * 100_00}",
        ):
            r = await client.get(path)
            assert r.status_code in (200, 404), (path, r.status_code)
            texts.append(r.text)
        head = await client.head(f"/t/{d.tokens[0]}")
        assert head.status_code == 200 and head.headers["cache-control"] == "no-store"
    for text in texts:
        assert "Traceback" not in text and "asyncpg" not in text and 'File "' not in text
    page = texts[0]
    # Only the page's own first state is embedded: no ids at all.
    state = re.search(r'data-state="([^"]*)"', page)
    assert state is not None
    import html

    embedded = orjson.loads(html.unescape(state.group(1)))
    assert not walk_keys(embedded) & {"id", "device", "route_id", "stop_id", "stops"}
    assert numeric_paths(embedded) <= NUMERIC
    # A driver's note never reaches customers; a route id in the dispatcher API is fine.
    async with srv.client() as client:
        r = await client.get(f"/api/v1/routes/{d.route['id']}", headers=ADMIN)
    assert r.status_code == 200
