"""Killing Redis mid-stream: ingest keeps acknowledging (durability does not depend on
Redis), and live updates between instances resume by themselves once Redis is back.

Runs its own throw-away redis-server on a free port, never the machine's shared one."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.conftest import ADMIN_TOKEN, DeviceCreds, Server, ServerFactory, add_device, free_port
from tracker.bus import RedisBus

# scripts/setup.sh installs it for the tests: this test kills and restarts its own Redis.
REDIS_SERVER = shutil.which("redis-server") or "redis-server"


class RedisProcess:
    """A private redis-server that can be killed and restarted on the same port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        assert REDIS_SERVER is not None
        self.proc = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            await writer.wait_closed()
            return
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
async def redis_proc() -> AsyncIterator[RedisProcess]:
    proc = RedisProcess()
    await proc.start()
    yield proc
    proc.kill()


NOW = datetime.now(UTC).replace(microsecond=0)


async def post(srv: Server, dev: DeviceCreds, t: datetime, lat: float) -> httpx.Response:
    async with srv.client() as client:
        return await client.post(
            "/api/v1/positions",
            json={"time": t.isoformat(), "lat": lat, "lon": 4.35},
            headers=dev.headers,
        )


async def vehicle_at(
    ws: ClientConnection, device: str, t: datetime, kinds: tuple[str, ...], timeout: float
) -> dict[str, Any]:
    """The first message of one of `kinds` showing `device` at fix time `t`."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"{device} at {t} never arrived")
        message: dict[str, Any] = orjson.loads(await asyncio.wait_for(ws.recv(), left))
        if message["type"] in kinds and any(
            v["id"] == device and datetime.fromisoformat(v["time"]) == t
            for v in message["vehicles"]
        ):
            return message


async def test_ingest_survives_redis_death_and_live_updates_resume(
    redis_proc: RedisProcess, server_factory: ServerFactory, db: asyncpg.Pool
) -> None:
    channel = f"tracker:test:{uuid.uuid4().hex}"
    a = await server_factory(redis_url=redis_proc.url, bus_channel=channel)
    b = await server_factory(redis_url=redis_proc.url, bus_channel=channel)
    for srv in (a, b):
        bus = srv.runtime.bus
        assert isinstance(bus, RedisBus)
        await asyncio.wait_for(bus.connected.wait(), 5)
    dev = await add_device(a)
    url_a = f"{a.ws_url}/ws/dispatch?token={ADMIN_TOKEN}"
    url_b = f"{b.ws_url}/ws/dispatch?token={ADMIN_TOKEN}"
    async with connect(url_a) as ws_a, connect(url_b) as ws_b:
        assert orjson.loads(await ws_a.recv())["type"] == "snapshot"
        assert orjson.loads(await ws_b.recv())["type"] == "snapshot"

        t0 = NOW - timedelta(seconds=40)
        assert (await post(a, dev, t0, 52.0)).status_code == 202
        await vehicle_at(ws_b, dev.unique_id, t0, ("delta",), 5)  # via Redis

        redis_proc.kill()
        outage = [NOW - timedelta(seconds=30 - i) for i in range(5)]
        for i, t in enumerate(outage):
            started = time.monotonic()
            r = await post(a, dev, t, 52.0 + (i + 1) / 10_000)
            # Acknowledged, committed, and not slowed down by the dead bus.
            assert r.status_code == 202, r.text
            assert time.monotonic() - started < 1.0
            # Instance A's own clients still see it live (local delivery).
            await vehicle_at(ws_a, dev.unique_id, t, ("delta",), 5)
        stored = await db.fetchval(
            "SELECT count(*) FROM positions p JOIN devices d ON d.id = p.device_id "
            "WHERE d.unique_id = $1",
            dev.unique_id,
        )
        assert stored == 6

        await redis_proc.start()  # same port
        # B lost the updates posted meanwhile; once resubscribed it resends a snapshot
        # from the database, which has them.
        resync = await vehicle_at(ws_b, dev.unique_id, outage[-1], ("snapshot",), 15)
        assert resync["v"] == 1
        # And live updates flow again between the instances, without any restart.
        t_after = NOW - timedelta(seconds=10)
        bus_a = a.runtime.bus
        assert isinstance(bus_a, RedisBus)
        await asyncio.wait_for(bus_a.connected.wait(), 10)
        assert (await post(a, dev, t_after, 52.001)).status_code == 202
        await vehicle_at(ws_b, dev.unique_id, t_after, ("delta",), 10)
