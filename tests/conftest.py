"""Shared fixtures: a fresh PostGIS database, real in-process servers, devices.

Integration tests talk to the real PostgreSQL/PostGIS at TEST_DATABASE_URL (default: the
local server, database `tracker_test`, recreated per session) and, where they need it, the
real Redis at TEST_REDIS_URL. Servers are real uvicorn instances on free ports, so HTTP and
WebSocket traffic goes over real sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest
import uvicorn

from tracker.api.app import create_app
from tracker.api.runtime import Runtime
from tracker.config import Settings
from tracker.store.migrations import migrate

# One database per test session (by pid), so concurrent runs never drop each other's.
TEST_DATABASE_URL = os.environ.get(
    "TEST_DATABASE_URL", f"postgresql://postgres@127.0.0.1:5432/tracker_test_{os.getpid()}"
)
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
ADMIN_TOKEN = "test-admin-token"
DATA = Path(__file__).parent / "data"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def recreate_database(url: str, create: bool = True) -> None:
    """Drop the database of `url` (ending its sessions) and, unless told not to, create it."""
    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin = await asyncpg.connect(urlunsplit(parts._replace(path="/postgres")))
    try:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
        )
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        if create:
            await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()


def sibling_database_url(suffix: str) -> str:
    """TEST_DATABASE_URL with `_<suffix>` appended to the database name."""
    parts = urlsplit(TEST_DATABASE_URL)
    return urlunsplit(parts._replace(path=f"{parts.path}_{suffix}"))


@contextlib.asynccontextmanager
async def own_database(suffix: str, migrated: bool = True) -> AsyncIterator[str]:
    """A fresh database beside the session's (`sibling_database_url`), dropped afterwards:
    for tests whose data or pruning must not meet the shared database's."""
    url = sibling_database_url(suffix)
    await recreate_database(url)
    try:
        if migrated:
            await migrate(url)
        yield url
    finally:
        with contextlib.suppress(Exception):
            await recreate_database(url, create=False)


@pytest.fixture(scope="session")
async def database_url() -> AsyncIterator[str]:
    """A freshly created and migrated database for this test session, dropped after it."""
    await recreate_database(TEST_DATABASE_URL)
    await migrate(TEST_DATABASE_URL)
    yield TEST_DATABASE_URL
    if "TEST_DATABASE_URL" not in os.environ:
        with contextlib.suppress(Exception):
            await recreate_database(TEST_DATABASE_URL, create=False)


@pytest.fixture(scope="session")
async def db(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A plain pool on the test database, for assertions on what was stored."""
    from tracker.store.db import create_pool

    pool = await create_pool(database_url, 4)
    yield pool
    await pool.close()


@dataclass
class Server:
    """A running in-process server."""

    base_url: str
    port: int
    settings: Settings
    uvicorn: uvicorn.Server
    task: asyncio.Task[None]

    @property
    def runtime(self) -> Runtime:
        rt: Runtime = self.uvicorn.config.loaded_app.app.state.runtime
        return rt

    async def settled(self) -> None:
        """Wait until this instance has applied every acknowledged ping to its route (the
        route work runs after the ack)."""
        await self.runtime.routing.work.drain()

    @property
    def ws_url(self) -> str:
        return self.base_url.replace("http://", "ws://")

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base_url, timeout=30.0, **kwargs)

    def admin(self) -> httpx.AsyncClient:
        return self.client(headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})

    async def stop(self) -> None:
        self.uvicorn.should_exit = True
        await self.task


async def start_server(database_url: str, **overrides: Any) -> Server:
    """Start a real uvicorn server on a free port with test settings plus `overrides`."""
    # Tests post far faster than a phone from one address: the rate limits have their own
    # tests and are off elsewhere.
    settings = dataclasses.replace(
        Settings(
            database_url=database_url,
            admin_token=ADMIN_TOKEN,
            auth_cache_s=0.0,
            rate_limit_device="",
            rate_limit_ip="",
            # Learning runs when a test asks (learn_once): a pass starting in the middle of
            # another test would change the history its routes are planned with.
            learn_interval_s=0.0,
        ),
        **overrides,
    )
    port = free_port()
    config = uvicorn.Config(
        create_app(settings),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="on",
        ws_ping_interval=5.0,
        ws_ping_timeout=5.0,
        # The server shares its event loop with the test: on a loaded machine a stall longer
        # than uvicorn's 5 s keep-alive closes a pooled connection just as the client reuses
        # it, and httpx does not retry that (ReadError on a request the server never read).
        timeout_keep_alive=120,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    for _ in range(200):
        if server.started:
            break
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    else:
        raise RuntimeError("server did not start")
    return Server(f"http://127.0.0.1:{port}", port, settings, server, task)


ServerFactory = Callable[..., Awaitable[Server]]


@pytest.fixture
async def server_factory(database_url: str) -> AsyncIterator[ServerFactory]:
    """Start servers with custom settings; all are stopped after the test."""
    started: list[Server] = []

    async def factory(**overrides: Any) -> Server:
        srv = await start_server(overrides.pop("database_url", database_url), **overrides)
        started.append(srv)
        return srv

    yield factory
    for srv in started:
        with contextlib.suppress(Exception):
            await srv.stop()


@pytest.fixture(scope="session")
async def server(database_url: str) -> AsyncIterator[Server]:
    """One shared server with default test settings (local bus)."""
    srv = await start_server(database_url)
    yield srv
    await srv.stop()


@dataclass(frozen=True)
class DeviceCreds:
    """A registered device: its public id and its token."""

    unique_id: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}


async def add_device(
    srv: Server, name: str = "Test van", unique_id: str | None = None
) -> DeviceCreds:
    """Register a device through the admin API."""
    uid = unique_id or f"dev-{uuid.uuid4().hex[:10]}"
    async with srv.admin() as client:
        r = await client.post("/api/v1/devices", json={"name": name, "unique_id": uid})
    assert r.status_code == 201, r.text
    body = r.json()
    return DeviceCreds(body["id"], body["token"])


@pytest.fixture
async def device(server: Server) -> DeviceCreds:
    """A fresh device on the shared server."""
    return await add_device(server)


async def stored_positions(db: asyncpg.Pool, unique_id: str) -> list[asyncpg.Record]:
    """Every stored position of a device, oldest first, with lat/lon read from PostGIS."""
    return list(
        await db.fetch(
            "SELECT p.fix_time, ST_Y(p.geog::geometry) AS lat, ST_X(p.geog::geometry) AS lon, "
            "p.speed, p.course, p.accuracy, p.altitude, p.attributes "
            "FROM positions p JOIN devices d ON d.id = p.device_id "
            "WHERE d.unique_id = $1 ORDER BY p.fix_time",
            unique_id,
        )
    )
