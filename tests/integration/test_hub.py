"""The hub over real sockets: a client that never reads does not delay one that does, gets
its frames coalesced while blocked, and is disconnected once it stays stuck."""

from __future__ import annotations

import asyncio
import socket
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import ADMIN_TOKEN, ServerFactory
from tracker.live.hub import DISPATCH

NOW = datetime.now(UTC).replace(microsecond=0)
# Fat vehicles (a ~1 MB frame per tick) fill the slow client's window and the server's
# kernel send buffer (up to 4 MB) within a second.
BIG_NAME = "x" * 10_000


def position(device: str, n: int, name: str = BIG_NAME) -> dict[str, Any]:
    return {
        "type": "position",
        "device": device,
        "name": name,
        "time": (NOW + timedelta(milliseconds=n)).isoformat(),
        "lat": 52.0,
        "lon": 4.0,
        "speed": None,
        "course": None,
        "accuracy": None,
    }


def tiny_buffer_socket(port: int) -> socket.socket:
    """A client socket with a small receive window, so a non-reading client blocks the
    server's writes after kilobytes rather than megabytes."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    return sock


async def drain(ws: ClientConnection, seen: dict[str, float], frames: list[int]) -> None:
    """A fast client: read everything, note when each marker vehicle first arrived."""
    async for raw in ws:
        message = orjson.loads(raw)
        frames.append(len(raw))
        for v in message.get("vehicles", []):
            if v["id"].startswith("marker-") and v["id"] not in seen:
                seen[v["id"]] = time.monotonic()


async def test_slow_client_never_delays_a_fast_one(server_factory: ServerFactory) -> None:
    # Frames of ~1 MB: one per tick, not split in parts (TRACKER_WS_MAX_FRAME_BYTES), so
    # frames can be counted against ticks below.
    srv = await server_factory(tick_ms=100.0, ws_stuck_s=3.0, ws_max_frame_bytes=16 << 20)
    hub = srv.runtime.hub
    bus = srv.runtime.bus
    url = f"{srv.ws_url}/ws/dispatch?token={ADMIN_TOKEN}"

    # The slow client: connects, then never reads (small queue, small kernel window, and no
    # compression, which would shrink these repetitive frames a thousandfold).
    slow = await connect(
        url, sock=tiny_buffer_socket(srv.port), max_queue=1, max_size=None, compression=None
    )
    fast = await connect(url, max_size=None)
    seen: dict[str, float] = {}
    frames: list[int] = []
    reader = asyncio.create_task(drain(fast, seen, frames))
    for _ in range(100):
        if hub.stats()["subscribers"] == 2:
            break
        await asyncio.sleep(0.02)
    slow_sub, fast_sub = list(hub.channel(DISPATCH).subscribers)

    # Load: 100 fat vehicles moving every 20 ms (~10 MB/s to each client), plus markers.
    latencies: list[float] = []
    # A fixed number of rounds (not a fixed time), so a loaded machine still sends
    # every marker: ~2.5 s of load when nothing else runs.
    for n in range(1, 101):
        for d in range(100):
            await bus.publish("positions", position(f"fat-{d}", n))
        if n % 10 == 0:
            marker = f"marker-{n}"
            sent = time.monotonic()
            await bus.publish("positions", position(marker, n, name="m"))
            for _ in range(100):
                if marker in seen:
                    break
                await asyncio.sleep(0.01)
            assert marker in seen, "the fast client missed a marker"
            latencies.append(seen[marker] - sent)
        await asyncio.sleep(0.02)

    # The slow client really was blocked: its write hangs and ticks were merged for it.
    assert slow_sub.busy_since is not None
    assert slow_sub.frames_merged > 5
    assert fast_sub.frames_merged <= 2
    # ...while the fast one got every marker within about a tick.
    assert len(latencies) == 10
    assert max(latencies) < 0.5, latencies
    # One frame per tick, not one per publish (n rounds of 101 updates).
    assert len(frames) < n

    # Stuck beyond ws_stuck_s: the hub drops it; the fast client carries on.
    for _ in range(100):
        if hub.stats()["closed_stuck"] >= 1:
            break
        await asyncio.sleep(0.1)
    assert hub.stats()["closed_stuck"] == 1
    assert slow_sub.closed and not fast_sub.closed
    assert list(hub.channel(DISPATCH).subscribers) == [fast_sub]
    await bus.publish("positions", position("marker-after", n + 1, name="m"))
    for _ in range(100):
        if "marker-after" in seen:
            break
        await asyncio.sleep(0.01)
    assert "marker-after" in seen

    # The connection itself was dropped, not just forgotten: reading again, the slow
    # client finds what was buffered and then the end of the connection.
    with pytest.raises(ConnectionClosed):
        async with asyncio.timeout(20):
            while True:
                await slow.recv()

    reader.cancel()
    await fast.close()
