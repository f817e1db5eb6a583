"""Two `tracker serve` processes on two ports sharing PostgreSQL and Redis behave as one:
a ping posted to either reaches a dispatcher map connected to the other."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect

from tests.conftest import ADMIN_TOKEN, TEST_REDIS_URL, free_port

TRACKER = Path(sys.executable).parent / "tracker"


@dataclass
class Instance:
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def dispatch_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/dispatch?token={ADMIN_TOKEN}"


async def start_instance(database_url: str, channel: str, log: Path) -> Instance:
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": TEST_REDIS_URL,
        "TRACKER_ADMIN_TOKEN": ADMIN_TOKEN,
        "TRACKER_BUS_CHANNEL": channel,  # isolates this test from anything else on Redis
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(TRACKER), "serve", "--port", str(port), "--log-level", "warning"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    instance = Instance(port, proc)
    deadline = time.monotonic() + 30
    async with httpx.AsyncClient(base_url=instance.base_url, timeout=2) as client:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"tracker serve exited: {log.read_text()}")
            try:
                if (await client.get("/healthz")).status_code == 200:
                    return instance
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    proc.kill()
    raise RuntimeError("tracker serve did not come up")


@pytest.fixture
async def instances(database_url: str, tmp_path: Path) -> AsyncIterator[list[Instance]]:
    channel = f"tracker:test:{uuid.uuid4().hex}"
    started: list[Instance] = []
    try:
        for name in ("a", "b"):
            started.append(await start_instance(database_url, channel, tmp_path / f"{name}.log"))
        yield started
    finally:
        for inst in started:
            inst.proc.terminate()
        for inst in started:
            try:
                inst.proc.wait(15)
            except subprocess.TimeoutExpired:
                inst.proc.kill()
                inst.proc.wait(5)


async def receive_vehicle(
    ws: ClientConnection, device: str, t: datetime, timeout: float = 10.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"{device} at {t} did not arrive")
        message: dict[str, Any] = orjson.loads(await asyncio.wait_for(ws.recv(), left))
        for v in message.get("vehicles", []):
            if v["id"] == device and datetime.fromisoformat(v["time"]) == t:
                return message


async def test_a_ping_posted_to_one_instance_reaches_a_map_on_the_other(
    instances: list[Instance],
) -> None:
    a, b = instances
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    uid = f"multi-{uuid.uuid4().hex[:8]}"
    async with httpx.AsyncClient(base_url=a.base_url, headers=admin, timeout=10) as client:
        r = await client.post(
            "/api/v1/devices", json={"name": "Two-instance van", "unique_id": uid}
        )
        assert r.status_code == 201, r.text
        token = r.json()["token"]
    device_headers = {"Authorization": f"Bearer {token}"}
    now = datetime.now(UTC).replace(microsecond=0)

    async with connect(a.dispatch_url) as ws_a, connect(b.dispatch_url) as ws_b:
        assert orjson.loads(await ws_a.recv())["type"] == "snapshot"
        assert orjson.loads(await ws_b.recv())["type"] == "snapshot"
        # Posted to A, seen on B (and on A)...
        t1 = now - timedelta(seconds=20)
        async with httpx.AsyncClient(base_url=a.base_url, timeout=10) as client:
            sent = time.monotonic()
            r = await client.post(
                "/api/v1/positions",
                json={"time": t1.isoformat(), "lat": 51.9225, "lon": 4.4792, "speed": 7.0},
                headers=device_headers,
            )
            assert r.status_code == 202, r.text
        on_b = await receive_vehicle(ws_b, uid, t1)
        latency = time.monotonic() - sent
        assert on_b["type"] == "delta"
        seen = next(v for v in on_b["vehicles"] if v["id"] == uid)
        assert seen["name"] == "Two-instance van" and seen["speed"] == 7.0
        assert seen["lat"] == pytest.approx(51.9225) and seen["lon"] == pytest.approx(4.4792)
        assert latency < 2.0
        await receive_vehicle(ws_a, uid, t1)
        # ...and the other way round.
        t2 = now - timedelta(seconds=10)
        async with httpx.AsyncClient(base_url=b.base_url, timeout=10) as client:
            r = await client.post(
                "/api/v1/positions",
                json={"time": t2.isoformat(), "lat": 51.9226, "lon": 4.4793},
                headers=device_headers,
            )
            assert r.status_code == 202, r.text
        await receive_vehicle(ws_a, uid, t2)
        await receive_vehicle(ws_b, uid, t2)

    # A map connecting later to either instance starts from the same state.
    for inst in (a, b):
        async with connect(inst.dispatch_url) as ws:
            snapshot = orjson.loads(await ws.recv())
            assert snapshot["type"] == "snapshot"
            mine = next(v for v in snapshot["vehicles"] if v["id"] == uid)
            assert datetime.fromisoformat(mine["time"]) == t2
