"""deploy/nginx.conf for real: nginx (the compose file's proxy) in front of two `tracker
serve` processes sharing the test database and Redis, clients talking only to nginx.

The rendered file differs from deploy/nginx.conf only in the upstream addresses, the
listen ports and where nginx keeps temporary files (see processes.render_nginx_conf).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
import yaml
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Origin

from tests.conftest import ADMIN_TOKEN, DeviceCreds, stored_positions
from tests.deploy.processes import ROOT, Process, start_nginx, start_tracker

MAX_BODY = 4 * 1024 * 1024  # TRACKER_MAX_BODY_BYTES's default
# One uvicorn process re-raises the SIGTERM it handled once it has shut down.
CLEAN_EXIT = (0, -signal.SIGTERM)
Message = dict[str, Any]


@dataclass
class Stack:
    """Two instances behind nginx."""

    instances: list[Process]
    nginx: Process
    settings: dict[str, str]
    osmand_port: int
    database_url: str
    channel: str
    workdir: Path

    @property
    def url(self) -> str:
        return self.nginx.base_url

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=30.0, **kwargs)

    def admin(self) -> httpx.AsyncClient:
        return self.client(headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})

    async def restart(self, index: int) -> None:
        """Start instance `index` again on its port (after it was stopped)."""
        old = self.instances[index]
        self.instances[index] = await start_tracker(
            self.database_url,
            self.channel,
            self.workdir / f"tracker-{index + 1}-again.log",
            port=old.port,
            settings=self.settings,
        )


@contextlib.asynccontextmanager
async def proxy_stack(database_url: str, workdir: Path, **settings: str) -> AsyncIterator[Stack]:
    channel = f"tracker:test:deploy:{uuid.uuid4().hex}"
    instances: list[Process] = []
    nginx: Process | None = None
    try:
        for n in (1, 2):
            log = workdir / f"tracker-{n}.log"
            instances.append(await start_tracker(database_url, channel, log, settings=settings))
        nginx, osmand_port = await start_nginx([p.port for p in instances], workdir)
        yield Stack(instances, nginx, settings, osmand_port, database_url, channel, workdir)
    finally:
        for process in [*instances, *([nginx] if nginx else [])]:
            with contextlib.suppress(AssertionError):
                await process.stop()
            process.kill()


@pytest.fixture(scope="module")
async def stack(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    async with proxy_stack(database_url, tmp_path_factory.mktemp("proxy")) as running:
        yield running


async def add_device(stack: Stack) -> DeviceCreds:
    uid = f"dev-{uuid.uuid4().hex[:10]}"
    async with stack.admin() as client:
        r = await client.post("/api/v1/devices", json={"name": f"Van {uid}", "unique_id": uid})
    assert r.status_code == 201, r.text
    return DeviceCreds(uid, r.json()["token"])


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def ping(t: datetime, lat: float, lon: float = 11.57) -> dict[str, Any]:
    return {"time": iso(t), "lat": lat, "lon": lon}


async def receive_until(
    ws: ClientConnection, match: Callable[[Message], bool], timeout: float = 10.0
) -> Message:
    """The first message matching `match` (others are skipped)."""
    async with asyncio.timeout(timeout):
        while True:
            message: Message = orjson.loads(await ws.recv())
            if match(message):
                return message


def has_fix(uid: str, lat: float) -> Callable[[Message], bool]:
    def match(message: Message) -> bool:
        return message["type"] in ("delta", "snapshot") and any(
            v["id"] == uid and abs(v["lat"] - lat) < 1e-9 for v in message["vehicles"]
        )

    return match


async def test_pings_posted_through_the_proxy_are_stored(stack: Stack, db: asyncpg.Pool) -> None:
    dev = await add_device(stack)
    t0 = datetime.now(UTC) - timedelta(minutes=5)
    async with stack.client(headers=dev.headers) as client:
        for i in range(10):  # one request each, spread over both instances
            r = await client.post("/api/v1/positions", json=ping(t0 + timedelta(seconds=i), 48.1))
            assert r.status_code == 202, r.text
            assert r.json()["stored"] == 1
    assert len(await stored_positions(db, dev.unique_id)) == 10
    # nginx's access log names the instance that answered each request: both did.
    answered = {
        line.rsplit(" id=", 1)[0].split()[-1]
        for line in stack.nginx.output().splitlines()
        if '"POST /api/v1/positions" 202' in line
    }
    assert answered == {f"127.0.0.1:{p.port}" for p in stack.instances}


async def test_request_ids_pass_through_the_proxy(stack: Stack) -> None:
    async with stack.client() as client:
        given = await client.get("/api/v1/devices", headers={"X-Request-ID": "phone-42.7"})
        fresh = await client.get("/api/v1/devices")
    # The instance answers with the id it logged: the client's, or the one nginx made
    # (32 hex digits; an instance's own are 16), which nginx's log shows too.
    assert given.headers["x-request-id"] == "phone-42.7"
    made = fresh.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", made), made
    assert f"id={made}" in stack.nginx.output()


async def test_dispatch_socket_through_the_proxy_gets_fixes_posted_through_it(
    stack: Stack,
) -> None:
    dev = await add_device(stack)
    ws_url = stack.url.replace("http://", "ws://") + f"/ws/dispatch?token={ADMIN_TOKEN}"
    t0 = datetime.now(UTC) - timedelta(minutes=1)
    async with connect(ws_url) as ws, stack.client(headers=dev.headers) as client:
        assert orjson.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "snapshot"
        # Successive requests go to alternate instances: whichever holds the socket, some
        # of these reach it from the other one over Redis.
        for i in range(4):
            lat = 48.1 + i / 10_000
            r = await client.post("/api/v1/positions", json=ping(t0 + timedelta(seconds=i), lat))
            assert r.status_code == 202, r.text
            await receive_until(ws, has_fix(dev.unique_id, lat))


async def test_the_map_pages_session_cookie_opens_the_socket_through_the_proxy(
    stack: Stack,
) -> None:
    # The socket compares the browser's Origin with Host: the proxy must pass Host on.
    async with stack.client() as client:
        r = await client.post("/api/v1/session", json={"token": ADMIN_TOKEN})
        assert r.status_code == 200, r.text
        cookie = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
    ws_url = stack.url.replace("http://", "ws://") + "/ws/dispatch"
    headers = {"Cookie": cookie}
    async with connect(ws_url, origin=Origin(stack.url), additional_headers=headers) as ws:
        assert orjson.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "snapshot"


async def test_traccar_clients_port_5055_is_the_osmand_endpoint(
    stack: Stack, db: asyncpg.Pool
) -> None:
    dev = await add_device(stack)
    when = int((datetime.now(UTC) - timedelta(minutes=2)).timestamp())
    query = {"id": dev.unique_id, "lat": "48.137", "lon": "11.575", "timestamp": str(when)}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{stack.osmand_port}") as client:
        assert (await client.post("/", params=query)).status_code == 200
        other = await client.get("/api/v1/devices")
    assert other.status_code == 404
    assert other.json()["error"] == "not_found"
    [row] = await stored_positions(db, dev.unique_id)
    assert abs(row["lat"] - 48.137) < 1e-9


async def test_the_body_limit_matches_the_servers_and_answers_in_json(stack: Stack) -> None:
    dev = await add_device(stack)
    body = orjson.dumps(ping(datetime.now(UTC) - timedelta(minutes=3), 48.2))
    exactly = body + b" " * (MAX_BODY - len(body))
    async with stack.client(headers=dev.headers) as client:
        r = await client.post("/api/v1/positions", content=exactly)
        assert r.status_code == 202, r.text
        r = await client.post("/api/v1/positions", content=exactly + b" ")
    assert r.status_code == 413
    assert r.headers["content-type"].startswith("application/json")
    assert r.json()["error"] == "body_too_large"


async def test_failover_both_ways_then_json_503_when_none_is_up(
    database_url: str, db: asyncpg.Pool, tmp_path: Path
) -> None:
    async with proxy_stack(database_url, tmp_path) as stack:
        dev = await add_device(stack)
        t0 = datetime.now(UTC) - timedelta(minutes=10)
        sent = 0

        async def post_all_accepted(count: int) -> None:
            nonlocal sent
            async with stack.client(headers=dev.headers) as client:
                for _ in range(count):
                    fix = ping(t0 + timedelta(seconds=sent), 48.3)
                    r = await client.post("/api/v1/positions", json=fix)
                    assert r.status_code == 202, r.text
                    sent += 1

        # Instance 1 stops: its share goes to instance 2 without a failed request.
        assert await stack.instances[0].stop() in CLEAN_EXIT
        await post_all_accepted(10)

        # Back, and instance 2 stops. nginx skips instance 1 for fail_timeout after its
        # failure above, so the proxy may answer 503 until then; after that, all go to 1.
        await stack.restart(0)
        assert await stack.instances[1].stop() in CLEAN_EXIT
        async with stack.client(headers=dev.headers) as client:
            async with asyncio.timeout(60):
                while True:
                    fix = ping(t0 + timedelta(seconds=sent), 48.3)
                    r = await client.post("/api/v1/positions", json=fix)
                    if r.status_code == 202:
                        sent += 1
                        break
                    assert r.status_code == 503, r.text
                    await asyncio.sleep(0.5)
        await post_all_accepted(10)

        # None up: the proxy's own answer has the API's shape and asks to retry.
        assert await stack.instances[0].stop() in CLEAN_EXIT
        async with stack.client(headers=dev.headers) as client:
            r = await client.post("/api/v1/positions", json=ping(t0 - timedelta(hours=1), 48.3))
        assert r.status_code == 503
        assert r.headers["retry-after"] == "5"
        assert r.json()["error"] == "unavailable"

    assert len(await stored_positions(db, dev.unique_id)) == sent == 21


async def test_the_server_sees_the_clients_address_not_the_proxys(
    database_url: str, tmp_path: Path
) -> None:
    # Loopback answers from any 127/8 address: two "phones" at 127.0.0.2 and 127.0.0.3,
    # the proxy connecting from 127.0.0.1. The per-address limit (per instance, so a client
    # gets at most twice 3 through the two) tells whose address the server counted.
    # Trusting the proxy as compose.yaml does, so the test sees what compose would.
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    trusted = compose["services"]["tracker-1"]["environment"]["FORWARDED_ALLOW_IPS"]
    settings = {"TRACKER_RATE_LIMIT_IP": "3/hour", "FORWARDED_ALLOW_IPS": trusted}

    def phone(stack: Stack, address: str) -> httpx.AsyncClient:
        transport = httpx.AsyncHTTPTransport(local_address=address)
        return stack.client(transport=transport)

    async with proxy_stack(database_url, tmp_path, **settings) as stack:
        async with phone(stack, "127.0.0.2") as first:
            codes = [(await first.get("/api/v1/devices")).status_code for _ in range(10)]
            assert codes.count(401) == 6 and codes.count(429) == 4, codes
            # A forged X-Forwarded-For is replaced by the proxy, not believed.
            forged = await first.get("/api/v1/devices", headers={"X-Forwarded-For": "10.9.8.7"})
            assert forged.status_code == 429
            assert forged.json()["error"] == "rate_limited"
        async with phone(stack, "127.0.0.3") as second:
            assert (await second.get("/api/v1/devices")).status_code == 401
