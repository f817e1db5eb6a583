"""Webhooks against real servers, PostGIS and a real local HTTP receiver: subscriptions,
signed deliveries of route events, retries with backoff, exactly one acknowledged delivery,
a restart between attempts, the ETA threshold, several instances sharing the outbox.

These tests use a database of their own, so only the servers started here work its outbox.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
import pytest
import uvicorn

from tests.conftest import (
    Server,
    ServerFactory,
    free_port,
    own_database,
    sibling_database_url,
)
from tests.integration.test_tracking import ADMIN, Delivery, new_delivery

Json = dict[str, Any]
HOOK_DB = sibling_database_url("webhooks")
STOP_EVENTS = ["stop.arrived", "stop.completed", "stop.failed", "stop.skipped"]


@pytest.fixture(scope="module")
async def hook_db() -> AsyncIterator[asyncpg.Pool]:
    """A database only this module's servers use (their senders share its outbox)."""
    from tracker.store.db import create_pool

    async with own_database("webhooks") as url:
        pool = await create_pool(url, 2)
        yield pool
        await pool.close()


# -- the receiver -----------------------------------------------------------------------------


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    status: int
    at: float


@dataclass
class Receiver:
    """A real HTTP server that answers 500 to the first `failures` attempts of each delivery."""

    failures: int = 0
    delay_s: float = 0.0
    requests: list[Received] = field(default_factory=list)
    server: uvicorn.Server | None = None
    task: asyncio.Task[None] | None = None
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def by_delivery(self) -> dict[str, list[Received]]:
        out: dict[str, list[Received]] = {}
        for r in self.requests:
            out.setdefault(r.headers["tracker-delivery"], []).append(r)
        return out

    def acknowledged(self) -> list[Received]:
        return [r for r in self.requests if 200 <= r.status < 300]

    async def app(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        seen = sum(
            1 for r in self.requests if r.headers["tracker-delivery"] == headers["tracker-delivery"]
        )
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        status = 500 if seen < self.failures else 200
        self.requests.append(Received(headers, body, status, time.monotonic()))
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"ok" if status == 200 else b"no"})

    async def start(self) -> None:
        self.port = free_port()
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, log_level="warning", interface="asgi3"
        )
        self.server = uvicorn.Server(config)
        self.task = asyncio.create_task(self.server.serve())
        while not self.server.started:
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        assert self.server is not None and self.task is not None
        self.server.should_exit = True
        await self.task


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    yield r
    await r.stop()


def hook_settings(**extra: Any) -> dict[str, Any]:
    return {
        "database_url": HOOK_DB,
        # The receivers here listen on loopback, which webhooks may reach only when allowed.
        "webhook_allow_cidrs": "127.0.0.0/8",
        "webhook_poll_s": 0.05,
        "webhook_retry_base_s": 0.2,
        "webhook_retry_max_s": 1.0,
        **extra,
    }


async def subscribe(srv: Server, url: str, events: list[str], **extra: Any) -> Json:
    async with srv.client() as client:
        r = await client.post(
            "/api/v1/webhooks", json={"url": url, "events": events, **extra}, headers=ADMIN
        )
    assert r.status_code == 201, r.text
    hook: Json = r.json()
    return hook


async def deliveries(srv: Server, hook_id: int, **params: Any) -> list[Json]:
    async with srv.client() as client:
        r = await client.get(f"/api/v1/webhooks/{hook_id}/deliveries", params=params, headers=ADMIN)
    assert r.status_code == 200, r.text
    found: list[Json] = r.json()["deliveries"]
    return found


async def wait_for(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.05)


def signature_ok(secret: str, r: Received, now_s: float | None = None) -> bool:
    """The receiver's check, written from the documented scheme (not with our helper)."""
    fields = dict(part.split("=", 1) for part in r.headers["tracker-signature"].split(","))
    stamp = int(fields["t"])
    mac = hmac.new(secret.encode(), f"{stamp}.".encode() + r.body, hashlib.sha256).hexdigest()
    fresh = abs((now_s or time.time()) - stamp) < 300
    return fresh and hmac.compare_digest(mac, fields["v1"])


# -- subscriptions ----------------------------------------------------------------------------


async def test_subscriptions_api(server_factory: ServerFactory, hook_db: asyncpg.Pool) -> None:
    srv = await server_factory(**hook_settings())
    async with srv.client() as client:
        body = {"url": "https://example.test/hook", "events": ["stop.arrived"]}
        assert (await client.post("/api/v1/webhooks", json=body)).status_code == 401
        for bad in (
            {"url": "ftp://example.test/x", "events": ["stop.arrived"]},
            {"url": "/relative", "events": ["stop.arrived"]},
            {"url": "https://example.test/x", "events": []},
            {"url": "https://example.test/x", "events": ["stop.exploded"]},
            {"url": "https://example.test/x", "events": ["stop.arrived"], "eta_threshold_s": -1},
        ):
            r = await client.post("/api/v1/webhooks", json=bad, headers=ADMIN)
            assert r.status_code == 400 and r.json()["error"] == "invalid_request", r.text
        r = await client.post(
            "/api/v1/webhooks",
            json={**body, "events": ["stop.eta_changed", "stop.arrived"], "description": "SMS"},
            headers=ADMIN,
        )
        assert r.status_code == 201
        hook = r.json()
        assert hook["secret"].startswith("whsec_") and len(hook["secret"]) > 40
        assert hook["events"] == ["stop.arrived", "stop.eta_changed"]
        assert (hook["eta_threshold_s"], hook["active"], hook["description"]) == (
            300.0,
            True,
            "SMS",
        )
        listed = (await client.get("/api/v1/webhooks", headers=ADMIN)).json()["webhooks"]
        mine = next(h for h in listed if h["id"] == hook["id"])
        assert "secret" not in mine and mine == {k: v for k, v in hook.items() if k != "secret"}
        one = await client.get(f"/api/v1/webhooks/{hook['id']}", headers=ADMIN)
        assert one.status_code == 200 and "secret" not in one.json()
        assert (
            await client.delete(f"/api/v1/webhooks/{hook['id']}", headers=ADMIN)
        ).status_code == 204
        assert (
            await client.delete(f"/api/v1/webhooks/{hook['id']}", headers=ADMIN)
        ).status_code == 404
        listed = (await client.get("/api/v1/webhooks", headers=ADMIN)).json()["webhooks"]
        assert all(h["id"] != hook["id"] for h in listed)
        gone = (await client.get(f"/api/v1/webhooks/{hook['id']}", headers=ADMIN)).json()
        assert gone["active"] is False
        assert (await client.get("/api/v1/webhooks/999999", headers=ADMIN)).status_code == 404
        r = await client.get(
            f"/api/v1/webhooks/{hook['id']}/deliveries", params={"status": "x"}, headers=ADMIN
        )
        assert r.status_code == 400


# -- deliveries -------------------------------------------------------------------------------


async def test_stop_events_are_delivered_once_each_and_signed(
    server_factory: ServerFactory, hook_db: asyncpg.Pool, receiver: Receiver
) -> None:
    srv = await server_factory(**hook_settings())
    hook = await subscribe(srv, receiver.url, STOP_EVENTS)
    d = await new_delivery(srv)
    await d.set_status(0, "arrived")
    await d.set_status(0, "completed")
    await d.set_status(1, "failed", reason="closed gate")
    await d.set_status(2, "skipped")  # completes the route: route.completed is not subscribed
    await wait_for(lambda: len(receiver.acknowledged()) >= 4)
    await asyncio.sleep(0.5)  # nothing else may follow
    got = receiver.requests
    assert len(got) == 4 and all(r.status == 200 for r in got)
    assert all(signature_ok(hook["secret"], r) for r in got)
    assert not signature_ok("whsec_wrong", got[0])
    payloads = sorted((orjson.loads(r.body) for r in got), key=lambda p: p["event_id"])
    assert [(p["type"], p["stop"]["seq"]) for p in payloads] == [
        ("stop.arrived", 1),
        ("stop.completed", 1),
        ("stop.failed", 2),
        ("stop.skipped", 3),
    ]
    for p, r in zip(
        payloads, sorted(got, key=lambda r: orjson.loads(r.body)["event_id"]), strict=True
    ):
        assert r.headers["tracker-delivery"] == p["id"]
        assert r.headers["tracker-event"] == p["type"]
        assert r.headers["content-type"] == "application/json"
        assert p["device"] == d.device.unique_id and p["route_id"] == d.route["id"]
        assert p["stop"]["name"].startswith(d.tag) and p["stop"]["recipient"].startswith(d.tag)
    assert payloads[2]["data"]["reason"] == "closed gate"
    assert payloads[2]["stop"]["status"] == "failed"
    # Exactly the stored events of those types were queued, each once.
    rows = await hook_db.fetch(
        "SELECT id, type FROM events WHERE route_id = $1 AND type = ANY($2::text[]) ORDER BY id",
        d.route["id"],
        STOP_EVENTS,
    )
    assert [r["id"] for r in rows] == [p["event_id"] for p in payloads]
    log = await deliveries(srv, hook["id"])
    assert len(log) == 4
    for entry in log:
        assert (entry["status"], entry["attempts"], entry["next_attempt_at"]) == (
            "delivered",
            1,
            None,
        )
        assert [a["status_code"] for a in entry["attempt_log"]] == [200]
        assert entry["payload"]["id"] == entry["id"]


async def test_receiver_failing_twice_gets_the_event_once_acknowledged(
    server_factory: ServerFactory, hook_db: asyncpg.Pool, receiver: Receiver
) -> None:
    receiver.failures = 2
    srv = await server_factory(**hook_settings())
    hook = await subscribe(srv, receiver.url, ["stop.arrived"])
    d = await new_delivery(srv)
    await d.set_status(0, "arrived")
    await wait_for(lambda: len(receiver.acknowledged()) == 1)
    await asyncio.sleep(1.5)  # well past the largest retry delay: no further attempt
    attempts = receiver.by_delivery()
    assert len(attempts) == 1
    ((delivery_id, tries),) = attempts.items()
    assert [t.status for t in tries] == [500, 500, 200]
    assert len({t.body for t in tries}) == 1  # the same body every time
    gaps = [b.at - a.at for a, b in itertools.pairwise(tries)]
    assert all(g >= 0.09 for g in gaps), gaps  # backed off (base 0.2 s, equal jitter)
    (entry,) = await deliveries(srv, hook["id"])
    assert entry["id"] == delivery_id and entry["status"] == "delivered"
    assert [a["attempt"] for a in entry["attempt_log"]] == [1, 2, 3]
    assert [a["status_code"] for a in entry["attempt_log"]] == [500, 500, 200]


async def test_restart_between_attempts_still_delivers(
    server_factory: ServerFactory, hook_db: asyncpg.Pool, receiver: Receiver
) -> None:
    receiver.failures = 1
    first = await server_factory(**hook_settings(webhook_retry_base_s=3.0, webhook_retry_max_s=3.0))
    hook = await subscribe(first, receiver.url, ["stop.completed"])
    d = await new_delivery(first)
    await d.set_status(0, "completed")
    await wait_for(lambda: len(receiver.requests) == 1)
    (entry,) = await deliveries(first, hook["id"])
    assert entry["status"] == "pending" and entry["last_error"] == "HTTP 500"
    await first.stop()

    second = await server_factory(
        **hook_settings(webhook_retry_base_s=3.0, webhook_retry_max_s=3.0)
    )
    await wait_for(lambda: len(receiver.acknowledged()) == 1, timeout=15.0)
    # The sender counts the delivery once the receiver's 200 has travelled back to it.
    await wait_for(lambda: second.runtime.webhooks.sent >= 1, timeout=5.0)
    assert second.runtime.webhooks.sent == 1
    (entry,) = await deliveries(second, hook["id"])
    assert entry["status"] == "delivered"
    assert [a["status_code"] for a in entry["attempt_log"]] == [500, 200]
    assert len(receiver.by_delivery()[entry["id"]]) == 2


async def test_deleting_a_subscription_cancels_what_waits(
    server_factory: ServerFactory, hook_db: asyncpg.Pool, receiver: Receiver
) -> None:
    receiver.failures = 1000
    srv = await server_factory(**hook_settings(webhook_retry_base_s=60.0, webhook_retry_max_s=60.0))
    hook = await subscribe(srv, receiver.url, ["stop.arrived"])
    d = await new_delivery(srv)
    await d.set_status(0, "arrived")
    await wait_for(lambda: len(receiver.requests) == 1)
    async with srv.client() as client:
        r = await client.delete(f"/api/v1/webhooks/{hook['id']}", headers=ADMIN)
    assert r.status_code == 204
    (entry,) = await deliveries(srv, hook["id"])
    assert entry["status"] == "cancelled" and entry["attempts"] == 1
    await d.set_status(1, "arrived")
    await asyncio.sleep(0.5)
    assert len(receiver.requests) == 1


async def test_gives_up_after_the_last_attempt(
    server_factory: ServerFactory, hook_db: asyncpg.Pool, receiver: Receiver
) -> None:
    receiver.failures = 1000
    srv = await server_factory(
        **hook_settings(webhook_retry_base_s=0.05, webhook_retry_max_s=0.1, webhook_max_attempts=3)
    )
    hook = await subscribe(srv, receiver.url, ["stop.skipped"])
    d = await new_delivery(srv)
    await d.set_status(2, "skipped")
    await wait_for(lambda: len(receiver.requests) == 3)
    await asyncio.sleep(0.5)
    assert len(receiver.requests) == 3
    (entry,) = await deliveries(srv, hook["id"], status="failed")
    assert entry["attempts"] == 3 and entry["last_error"] == "HTTP 500"


async def test_unreachable_receiver_is_logged_and_retried(
    server_factory: ServerFactory, hook_db: asyncpg.Pool
) -> None:
    srv = await server_factory(**hook_settings())
    hook = await subscribe(srv, f"http://127.0.0.1:{free_port()}/nobody", ["stop.arrived"])
    d = await new_delivery(srv)
    await d.set_status(0, "arrived")

    async def two_attempts() -> list[Json]:
        while True:
            found = await deliveries(srv, hook["id"])
            if found and len(found[0]["attempt_log"]) >= 2:
                return found
            await asyncio.sleep(0.05)

    (entry,) = await asyncio.wait_for(two_attempts(), 10.0)
    assert entry["status"] == "pending"
    # A short reason, never the client library's error text.
    assert all(
        a["status_code"] is None and a["error"] == "connect failed" for a in entry["attempt_log"]
    )


async def test_two_instances_share_the_outbox_without_sending_twice(
    server_factory: ServerFactory, hook_db: asyncpg.Pool, receiver: Receiver
) -> None:
    receiver.delay_s = 0.02
    a = await server_factory(**hook_settings(webhook_concurrency=4))
    b = await server_factory(**hook_settings(webhook_concurrency=4))
    await subscribe(a, receiver.url, STOP_EVENTS)
    runs = [await new_delivery(a) for _ in range(4)]
    for k, run in enumerate(runs):
        run.srv = a if k % 2 else b
        for stop in range(3):
            await run.set_status(stop, "arrived")
            await run.set_status(stop, "completed")
    await wait_for(lambda: len(receiver.acknowledged()) >= 24, timeout=20.0)
    await asyncio.sleep(0.5)
    per_delivery = Counter(r.headers["tracker-delivery"] for r in receiver.requests)
    assert len(per_delivery) == 24 and set(per_delivery.values()) == {1}
    sent = a.runtime.webhooks.sent + b.runtime.webhooks.sent
    assert sent == 24


# -- ETA changes, arriving, off route -------------------------------------------------------


async def drive(d: Delivery, t0: datetime, legs: list[tuple[float, float]], every_s: float) -> None:
    """Ping along the street: `legs` of (metres, speed m/s), one fix every `every_s`."""
    m, t = 0.0, t0
    for until, speed in legs:
        while m < until:
            await d.ping(m, t, speed=speed)
            m += speed * every_s
            t += timedelta(seconds=every_s)


async def test_eta_changes_past_the_threshold_and_arriving_once(
    server_factory: ServerFactory, hook_db: asyncpg.Pool, receiver: Receiver
) -> None:
    srv = await server_factory(**hook_settings())
    # Above the core's own rule (a move of at least a minute), so some events stay under it.
    threshold = 120.0
    hook = await subscribe(
        srv, receiver.url, ["stop.eta_changed", "stop.arriving"], eta_threshold_s=threshold
    )
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=20)
    d = await new_delivery(srv, start=t0)
    # Brisk, then stuck in traffic, then brisk again: ETAs move a lot, and a little.
    await drive(d, t0, [(400.0, 12.0), (560.0, 2.0), (1000.0, 12.0)], every_s=4.0)
    await srv.settled()  # the route work runs after the acks: every event stored before counting

    events = await hook_db.fetch(
        "SELECT id, type, stop_id, data FROM events WHERE route_id = $1 "
        "AND type = ANY($2::text[]) ORDER BY id",
        d.route["id"],
        ["stop.eta_changed", "stop.arriving"],
    )
    eta_events = [e for e in events if e["type"] == "stop.eta_changed"]
    arriving_events = [e for e in events if e["type"] == "stop.arriving"]
    assert arriving_events, "the drive passes stop 1: an arriving event is expected"
    expected_eta = 0
    told: dict[int, datetime] = {}
    for e in eta_events:
        eta = datetime.fromisoformat(e["data"]["eta"])
        last = told.get(e["stop_id"])
        if last is None or abs((eta - last).total_seconds()) >= threshold:
            told[e["stop_id"]] = eta
            expected_eta += 1
    assert expected_eta < len(eta_events), "some ETA changes should stay under the threshold"

    want = expected_eta + len(arriving_events)
    await wait_for(lambda: len(receiver.acknowledged()) >= want)
    await asyncio.sleep(0.3)
    payloads = sorted((orjson.loads(r.body) for r in receiver.requests), key=lambda p: p["id"])
    assert len(payloads) == want
    arriving = [p for p in payloads if p["type"] == "stop.arriving"]
    assert Counter(p["stop"]["id"] for p in arriving) == Counter(
        e["stop_id"] for e in arriving_events
    )
    assert max(Counter(p["stop"]["id"] for p in arriving).values()) == 1
    # Per stop, each delivered ETA moved at least the threshold from the one before, and says so.
    by_stop: dict[int, list[Json]] = {}
    for p in sorted(
        (p for p in payloads if p["type"] == "stop.eta_changed"), key=lambda p: p["event_id"]
    ):
        by_stop.setdefault(p["stop"]["id"], []).append(p)
    for sent in by_stop.values():
        assert sent[0]["data"]["previous"] is None
        for before, after in itertools.pairwise(sent):
            assert after["data"]["previous"] == before["data"]["eta"]
            moved = datetime.fromisoformat(after["data"]["eta"]) - datetime.fromisoformat(
                before["data"]["eta"]
            )
            assert abs(moved.total_seconds()) >= threshold
    assert len(await deliveries(srv, hook["id"], limit=500)) == want


async def test_off_route_is_delivered(
    server_factory: ServerFactory, hook_db: asyncpg.Pool, receiver: Receiver
) -> None:
    srv = await server_factory(**hook_settings())
    await subscribe(srv, receiver.url, ["route.off_route"])
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    d = await new_delivery(srv, start=t0)
    await drive(d, t0, [(200.0, 10.0)], every_s=5.0)
    # Then a side street: 150 m north of the path, four fixes in a row.
    from tests.integration.test_tracking import LAT, lon_at

    for k in range(4):
        when = t0 + timedelta(seconds=20 + 5 * k)
        body = {"time": when.isoformat(), "lat": LAT + 0.00135 + k * 0.0002, "lon": lon_at(200)}
        async with srv.client() as client:
            r = await client.post("/api/v1/positions", json=body, headers=d.device.headers)
        assert r.status_code == 202, r.text
    await wait_for(lambda: len(receiver.acknowledged()) == 1)
    payload = orjson.loads(receiver.requests[0].body)
    assert payload["type"] == "route.off_route" and payload["stop"] is None
    assert payload["data"]["distance_m"] > 100
