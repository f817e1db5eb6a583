"""Killing Redis mid-stream: ingest keeps acknowledging (durability does not depend on
Redis), and live updates between instances resume by themselves once Redis is back. The
counts (pings sent, acknowledged and stored during the outage, live frames before and after)
go to the fault report.

Runs its own throw-away redis-server on a free port, never the machine's shared one."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.conftest import ADMIN_TOKEN, DeviceCreds, Server, ServerFactory, add_device, free_port
from tests.faults.conftest import record
from tracker.live.bus import RedisBus

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
OUTAGE_PINGS = 10
AFTER_PINGS = 5


async def post(srv: Server, dev: DeviceCreds, t: datetime, lat: float) -> httpx.Response:
    async with srv.client() as client:
        return await client.post(
            "/api/v1/positions",
            json={"time": t.isoformat(), "lat": lat, "lon": 4.35},
            headers=dev.headers,
        )


async def vehicle_at(
    ws: ClientConnection,
    device: str,
    t: datetime,
    kinds: tuple[str, ...],
    timeout: float,
    seen: Counter[str],
) -> dict[str, Any]:
    """The first message of one of `kinds` showing `device` at fix time `t`; every message
    read on the way is counted in `seen` by type."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"{device} at {t} never arrived")
        message: dict[str, Any] = orjson.loads(await asyncio.wait_for(ws.recv(), left))
        seen[message["type"]] += 1
        if message["type"] in kinds and any(
            v["id"] == device and datetime.fromisoformat(v["time"]) == t
            for v in message["vehicles"]
        ):
            return message


async def drain(ws: ClientConnection, quiet_s: float) -> list[dict[str, Any]]:
    """Every message that arrives until none has come for `quiet_s`."""
    messages: list[dict[str, Any]] = []
    with contextlib.suppress(TimeoutError):
        while True:
            messages.append(orjson.loads(await asyncio.wait_for(ws.recv(), quiet_s)))
    return messages


async def stored_count(db: asyncpg.Pool, device: str) -> int:
    count: int = await db.fetchval(
        "SELECT count(*) FROM positions p JOIN devices d ON d.id = p.device_id "
        "WHERE d.unique_id = $1",
        device,
    )
    return count


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
    seen_a: Counter[str] = Counter()
    seen_b_before: Counter[str] = Counter()
    seen_b_after: Counter[str] = Counter()
    async with connect(url_a) as ws_a, connect(url_b) as ws_b:
        assert orjson.loads(await ws_a.recv())["type"] == "snapshot"
        assert orjson.loads(await ws_b.recv())["type"] == "snapshot"

        t0 = NOW - timedelta(seconds=40)
        assert (await post(a, dev, t0, 52.0)).status_code == 202
        await vehicle_at(ws_b, dev.unique_id, t0, ("delta",), 5, seen_b_before)  # via Redis
        await vehicle_at(ws_a, dev.unique_id, t0, ("delta",), 5, Counter())

        redis_proc.kill()
        outage = [NOW - timedelta(seconds=30 - i) for i in range(OUTAGE_PINGS)]
        statuses: Counter[int] = Counter()
        slowest = 0.0
        for i, t in enumerate(outage):
            started = time.monotonic()
            r = await post(a, dev, t, 52.0 + (i + 1) / 10_000)
            slowest = max(slowest, time.monotonic() - started)
            statuses[r.status_code] += 1
            # Instance A's own clients still see it live (local delivery).
            await vehicle_at(ws_a, dev.unique_id, t, ("delta",), 5, seen_a)
        stored_in_outage = await stored_count(db, dev.unique_id) - 1
        # B hears nothing of them while Redis is down.
        b_in_outage = [
            m
            for m in await drain(ws_b, 0.5)
            if m["type"] == "delta"
            and any(datetime.fromisoformat(v["time"]) in outage for v in m["vehicles"])
        ]

        await redis_proc.start()  # same port
        # B lost the updates posted meanwhile; once resubscribed it resends a snapshot
        # from the database, which has them.
        resync = await vehicle_at(ws_b, dev.unique_id, outage[-1], ("snapshot",), 15, seen_b_after)
        # And live updates flow again between the instances, without any restart.
        bus_a = a.runtime.bus
        assert isinstance(bus_a, RedisBus)
        await asyncio.wait_for(bus_a.connected.wait(), 10)
        after = [NOW - timedelta(seconds=10 - i) for i in range(AFTER_PINGS)]
        after_statuses: Counter[int] = Counter()
        for i, t in enumerate(after):
            r = await post(a, dev, t, 52.001 + i / 10_000)
            after_statuses[r.status_code] += 1
            await vehicle_at(ws_b, dev.unique_id, t, ("delta",), 10, seen_b_after)
        stored_total = await stored_count(db, dev.unique_id)

    numbers = {
        "outage_pings_sent": OUTAGE_PINGS,
        "outage_pings_acknowledged": statuses[202],
        "outage_answers": dict(statuses),
        "outage_slowest_answer_s": round(slowest, 3),
        "outage_pings_stored": stored_in_outage,
        "instance_a_live_frames_during_outage": dict(seen_a),
        "instance_b_frames_before_outage": dict(seen_b_before),
        "instance_b_outage_pings_seen_live": len(b_in_outage),
        "instance_b_resync_snapshot_version": resync["v"],
        "instance_b_frames_after_redis_back": dict(seen_b_after),
        "pings_after_redis_back": AFTER_PINGS,
        "pings_after_redis_back_acknowledged": after_statuses[202],
        "rows_stored_total": stored_total,
    }
    record("redis_restart", numbers)

    # Ingest does not depend on Redis: acknowledged, committed, not slowed down.
    assert statuses == Counter({202: OUTAGE_PINGS})
    assert stored_in_outage == OUTAGE_PINGS
    assert slowest < 1.0
    # A's own clients saw every outage ping live; B none, until Redis was back and it
    # resent a snapshot holding them, after which every new ping reached it live.
    assert seen_a["delta"] >= OUTAGE_PINGS
    assert b_in_outage == []
    assert resync["v"] == 1
    assert seen_b_after["snapshot"] >= 1 and seen_b_after["delta"] >= AFTER_PINGS
    assert after_statuses == Counter({202: AFTER_PINGS})
    assert stored_total == 1 + OUTAGE_PINGS + AFTER_PINGS
