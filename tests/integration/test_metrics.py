"""GET /metrics against real servers: exact ping counts by protocol and reject reason,
group-commit histograms, live WebSocket clients, bus reconnects with a private Redis, the
endpoint's credentials, and `tracker serve --workers 2` summing both workers' counts.

In-process servers share this process's registry, so these tests compare before and after.
"""

from __future__ import annotations

import asyncio
import glob
import os
import signal
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from prometheus_client import REGISTRY
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect

from tests.conftest import ADMIN_TOKEN, DeviceCreds, Server, ServerFactory, add_device
from tests.faults.conftest import TrackerProcess
from tests.faults.test_redis_outage import RedisProcess
from tests.integration.test_ingest import proxy_to_postgres
from tests.integration.test_routes_api import create_route, patch_stop, route_body, stored_events
from tracker.live.bus import RedisBus
from tracker.store.devices import add_key

METRICS_TOKEN = "scrape-token-for-tests"
NOW = datetime.now(UTC).replace(microsecond=0)


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def value(text: str, name: str, **labels: str) -> float:
    """A sample of the exposition (0 when absent: a child not created yet)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


async def scrape(base_url: str, token: str = METRICS_TOKEN) -> str:
    async with httpx.AsyncClient(base_url=base_url, timeout=30.0) as client:
        r = await client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    return r.text


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    """Wait until `check()` holds (the server finishes a disconnect in its own time)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.05)


# -- the endpoint ----------------------------------------------------------------------------


async def test_metrics_need_the_metrics_token_or_the_admin(
    server_factory: ServerFactory, db: asyncpg.Pool
) -> None:
    srv = await server_factory(metrics_token=METRICS_TOKEN)
    dispatcher = await add_key(db, "metrics-test-dispatcher", "dispatcher")
    async with srv.client() as client:
        anonymous = await client.get("/metrics")
        wrong = await client.get("/metrics", headers={"Authorization": "Bearer not-it"})
        as_dispatcher = await client.get(
            "/metrics", headers={"Authorization": f"Bearer {dispatcher}"}
        )
        as_admin = await client.get("/metrics", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        scraper = await client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert anonymous.status_code == 401
    assert anonymous.json()["error"] == "unauthorized"
    assert wrong.status_code == 401
    assert as_dispatcher.status_code == 403
    assert as_admin.status_code == 200
    assert scraper.status_code == 200
    assert scraper.headers["content-type"].startswith("text/plain")
    names = {f.name for f in text_string_to_metric_families(scraper.text)}
    assert {
        "tracker_pings_received",
        "tracker_pings_stored",
        "tracker_pings_rejected",
        "tracker_commit_seconds",
        "tracker_ws_clients",
    } <= names


async def test_without_a_metrics_token_only_the_admin_may_scrape(server: Server) -> None:
    async with server.client() as client:
        r = await client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert r.status_code == 401
    assert r.json()["error"] == "unauthorized"
    assert await scrape(server.base_url, ADMIN_TOKEN)


# -- ingest counters -------------------------------------------------------------------------


def ping(t: datetime, lat: float = 48.137, lon: float = 11.575) -> dict[str, Any]:
    return {"time": iso(t), "lat": lat, "lon": lon}


async def test_ping_counts_by_outcome_and_reason_are_exact(server_factory: ServerFactory) -> None:
    srv = await server_factory(metrics_token=METRICS_TOKEN)
    dev = await add_device(srv)
    before = await scrape(srv.base_url)
    batch = [
        ping(NOW - timedelta(seconds=30)),
        ping(NOW - timedelta(seconds=20), 48.1372),
        ping(NOW - timedelta(seconds=10), 48.1374),
        {"time": iso(NOW), "lon": 11.575},  # no lat: malformed
        ping(NOW - timedelta(seconds=5), 95.0),  # out of range
        ping(NOW + timedelta(days=1)),  # future
        ping(NOW - timedelta(seconds=1), 52.52, 13.405),  # Munich to Berlin in 9 s
    ]
    async with srv.client() as client:
        first = await client.post(
            "/api/v1/positions", json={"positions": batch}, headers=dev.headers
        )
        again = await client.post("/api/v1/positions", json=batch[0], headers=dev.headers)
        osmand = await client.get(
            "/ingest/osmand",
            params={"id": dev.unique_id, "lat": "0", "lon": "0", "timestamp": str(NOW.timestamp())},
        )
        anonymous = await client.post("/api/v1/positions", json=batch[0])
        text = await client.post(
            "/api/v1/positions",
            content=b"{}",
            headers={"Authorization": f"Bearer {dev.token}", "Content-Type": "text/plain"},
        )
        broken = await client.post(
            "/api/v1/positions",
            content=b"{not json",
            headers={"Authorization": f"Bearer {dev.token}", "Content-Type": "application/json"},
        )
    assert first.status_code == 202, first.text
    assert first.json()["stored"] == 3 and first.json()["rejected"] == 4
    assert again.json() == {"stored": 0, "duplicates": 1, "rejected": 0, "rejects": []}
    assert osmand.status_code == 200
    assert (anonymous.status_code, text.status_code, broken.status_code) == (401, 415, 400)
    after = await scrape(srv.base_url)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("tracker_pings_received_total", protocol="native") == 8
    assert delta("tracker_pings_stored_total", protocol="native") == 3
    assert delta("tracker_pings_duplicate_total", protocol="native") == 1
    assert delta("tracker_pings_received_total", protocol="osmand") == 1
    assert delta("tracker_pings_stored_total", protocol="osmand") == 0
    expected = {
        "malformed": 1,
        "out_of_range": 1,
        "future": 1,
        "implausible_jump": 1,
        "no_fix": 1,
        "invalid": 0,
        "encrypted": 0,
    }
    assert {r: delta("tracker_pings_rejected_total", reason=r) for r in expected} == expected
    for code in ("unauthorized", "unsupported_media_type", "invalid_request"):
        assert delta("tracker_ingest_refused_total", protocol="native", code=code) == 1, code
    # One request, one group commit of its three new rows (plus the duplicate's own commit).
    assert delta("tracker_commit_rows_sum") == 4
    assert delta("tracker_commit_rows_count") == 2
    assert delta("tracker_commit_seconds_count") == 2
    assert delta("tracker_commit_seconds_sum") > 0


async def test_refusals_of_the_phone_app_endpoints_are_counted(
    server_factory: ServerFactory,
) -> None:
    srv = await server_factory(metrics_token=METRICS_TOKEN)
    before = await scrape(srv.base_url)
    async with srv.client() as client:
        unknown = await client.get("/ingest/osmand", params={"id": "nobody", "lat": 1, "lon": 1})
        anonymous = await client.post("/ingest/owntracks", json={"_type": "location"})
        overland = await client.post("/ingest/overland", json={"locations": []})
    assert (unknown.status_code, anonymous.status_code, overland.status_code) == (400, 401, 401)
    after = await scrape(srv.base_url)
    for protocol, code in (
        ("osmand", "unknown_device"),
        ("owntracks", "unauthorized"),
        ("overland", "unauthorized"),
    ):
        labels = {"protocol": protocol, "code": code}
        grown = value(after, "tracker_ingest_refused_total", **labels) - value(
            before, "tracker_ingest_refused_total", **labels
        )
        assert grown == 1, labels


async def test_a_failed_commit_is_counted_and_metrics_need_no_database(
    server_factory: ServerFactory, database_url: str
) -> None:
    async with proxy_to_postgres() as proxy:
        url = database_url.replace(":5432/", f":{proxy.port}/")
        srv = await server_factory(
            database_url=url, auth_cache_s=3600.0, metrics_token=METRICS_TOKEN
        )
        dev = await add_device(srv)
        async with srv.client() as client:
            warm = await client.post("/api/v1/positions", json=ping(NOW), headers=dev.headers)
            assert warm.status_code == 202  # the device's token is cached from now on
            before = await scrape(srv.base_url)
            await proxy.cut()
            down = await client.post(
                "/api/v1/positions", json=ping(NOW - timedelta(seconds=1)), headers=dev.headers
            )
            assert down.status_code == 503
            after = await scrape(srv.base_url)  # the metrics token needs no database

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("tracker_commits_failed_total", reason="unavailable") == 1
    assert delta("tracker_ingest_refused_total", protocol="native", code="unavailable") == 1
    assert delta("tracker_pings_received_total", protocol="native") == 1
    assert delta("tracker_pings_stored_total", protocol="native") == 0
    assert delta("tracker_commit_rows_count") == 0


async def test_the_address_limit_refusals_are_counted(server_factory: ServerFactory) -> None:
    srv = await server_factory(metrics_token=METRICS_TOKEN, rate_limit_ip="1/hour")
    before = await scrape(srv.base_url)  # /metrics is exempt from the limit
    async with srv.client() as client:
        statuses = [(await client.get("/api/v1/session")).status_code for _ in range(4)]
    assert statuses[0] == 401 and statuses.count(429) == 3
    after = await scrape(srv.base_url)
    grown = value(after, "tracker_address_limited_total") - value(
        before, "tracker_address_limited_total"
    )
    assert grown == 3


# -- live clients ----------------------------------------------------------------------------


async def test_websocket_clients_gauge_follows_an_open_dispatch_socket(
    server_factory: ServerFactory,
) -> None:
    srv = await server_factory(metrics_token=METRICS_TOKEN)

    async def clients() -> float:
        return value(await scrape(srv.base_url), "tracker_ws_clients", channel="dispatch")

    async def frames() -> float:
        return value(await scrape(srv.base_url), "tracker_ws_frames_sent_total", channel="dispatch")

    base, sent = await clients(), await frames()
    async with connect(f"{srv.ws_url}/ws/dispatch?token={ADMIN_TOKEN}") as ws:
        await asyncio.wait_for(ws.recv(), 5)  # the snapshot
        assert await clients() == base + 1
        assert await frames() >= sent + 1
    await eventually(lambda: _equals(clients, base))


async def _equals(read: Callable[[], Awaitable[float]], expected: float) -> bool:
    return await read() == expected


# -- route events ----------------------------------------------------------------------------


async def test_route_events_are_counted_by_type(
    server_factory: ServerFactory, db: asyncpg.Pool
) -> None:
    srv = await server_factory(metrics_token=METRICS_TOKEN)
    dev = await add_device(srv)
    route = await create_route(srv, route_body(dev, datetime(2024, 5, 1, 8, tzinfo=UTC)))
    before = await scrape(srv.base_url)
    s1, s2, s3 = (s["id"] for s in route["stops"])
    for stop, change in (
        (s1, {"status": "arrived"}),
        (s1, {"status": "completed"}),
        (s2, {"status": "failed", "reason": "closed"}),
        (s3, {"status": "skipped"}),
    ):
        assert (await patch_stop(srv, route["id"], stop, change)).status_code == 200
    after = await scrape(srv.base_url)
    stored: dict[str, int] = {}
    for event in await stored_events(db, route["id"]):
        stored[event["type"]] = stored.get(event["type"], 0) + 1
    assert stored.keys() >= {"stop.arrived", "stop.completed", "stop.failed", "route.completed"}
    counted = {
        kind: value(after, "tracker_route_events_total", type=kind)
        - value(before, "tracker_route_events_total", type=kind)
        for kind in stored
    }
    assert counted == stored


# -- bus -------------------------------------------------------------------------------------


async def test_bus_reconnect_is_counted_when_its_redis_comes_back() -> None:
    redis = RedisProcess()
    await redis.start()
    bus = RedisBus(redis.url, channel="tracker:metrics-test")
    reconnects = bus_count("tracker_bus_reconnects_total")
    published = bus_count("tracker_bus_published_total")
    try:
        await bus.start()
        await asyncio.wait_for(bus.connected.wait(), 10)
        await bus.publish("positions", {"type": "test"})
        await eventually(lambda: _at_least("tracker_bus_published_total", published + 1))
        redis.kill()
        await eventually(lambda: _cleared(bus.connected))
        await redis.start()
        await asyncio.wait_for(bus.connected.wait(), 15)
        assert bus_count("tracker_bus_reconnects_total") == reconnects + 1
    finally:
        await bus.close()
        redis.kill()


def bus_count(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


async def _at_least(name: str, expected: float) -> bool:
    return bus_count(name) >= expected


async def _cleared(event: asyncio.Event) -> bool:
    return not event.is_set()


# -- several workers -------------------------------------------------------------------------


def _stored_per_worker(metrics_dir: str) -> dict[str, float]:
    """Each worker's own stored count, from its file (name: counter_<pid>.db)."""
    counts: dict[str, float] = {}
    for path in glob.glob(os.path.join(metrics_dir, "counter_*.db")):
        total = 0.0
        for family in MultiProcessCollector.merge([path], accumulate=True):  # type: ignore[no-untyped-call]
            for sample in family.samples:
                if sample.name == "tracker_pings_stored_total":
                    total += sample.value
        counts[Path(path).stem] = total
    return counts


async def test_two_workers_are_summed(database_url: str, tmp_path: Path) -> None:
    proc = TrackerProcess(
        database_url, workers=2, TRACKER_METRICS_TOKEN=METRICS_TOKEN, TMPDIR=str(tmp_path)
    )
    try:
        await proc.start()
        await _two_workers(proc, tmp_path)
    finally:
        proc.stop()


async def _two_workers(proc: TrackerProcess, tmp_path: Path) -> None:
    [metrics_dir] = glob.glob(str(tmp_path / "tracker-metrics-*"))
    async with httpx.AsyncClient(
        base_url=proc.base_url,
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=30.0,
    ) as admin:
        r = await admin.post("/api/v1/devices", json={"name": "Two workers", "unique_id": "mw-1"})
    assert r.status_code == 201, r.text
    dev = DeviceCreds(r.json()["id"], r.json()["token"])
    before = value(await scrape(proc.base_url), "tracker_pings_stored_total", protocol="native")
    # A new connection per ping, so the kernel hands them to both workers; keep going until
    # each of them has stored some (their files say so).
    posted = 0
    while posted < 40 or sum(1 for v in _stored_per_worker(metrics_dir).values() if v) < 2:
        assert posted < 1000, f"one worker took every connection: {_stored_per_worker(metrics_dir)}"
        t = NOW - timedelta(hours=1) + timedelta(seconds=posted)
        async with httpx.AsyncClient(base_url=proc.base_url, timeout=30.0) as client:
            answer = await client.post(
                "/api/v1/positions",
                json=ping(t, 48.137 + posted * 1e-5),
                headers=dev.headers,
            )
        assert answer.status_code == 202, answer.text
        posted += 1
    # A worker hands its ping counts to the shared files once a second (and the one that
    # answers the scrape just before it): wait for the other one.
    for _ in range(50):
        after = value(await scrape(proc.base_url), "tracker_pings_stored_total", protocol="native")
        if after - before >= posted:
            break
        await asyncio.sleep(0.1)
    assert after - before == posted
    assert sum(_stored_per_worker(metrics_dir).values()) == after
    proc.signal(signal.SIGTERM)
    assert await proc.wait() == 0
    assert not os.path.exists(metrics_dir)
