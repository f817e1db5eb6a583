"""The bus: in-process delivery, Redis pub/sub between instances (real Redis), no echoes,
and publishing that never waits for Redis."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest

from tests.conftest import TEST_REDIS_URL, free_port
from tracker.live.bus import LocalBus, RedisBus, make_bus

Received = list[tuple[str, dict[str, Any]]]


def recorder() -> tuple[Received, Any]:
    got: Received = []

    def handler(channel: str, message: dict[str, Any]) -> None:
        got.append((channel, message))

    return got, handler


async def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.01)


async def test_local_bus_delivers_to_every_handler_even_if_one_fails() -> None:
    bus = LocalBus()
    got, handler = recorder()

    def broken(channel: str, message: dict[str, Any]) -> None:
        raise RuntimeError("boom")

    bus.subscribe(broken)
    bus.subscribe(handler)
    await bus.publish("positions", {"n": 1})
    assert got == [("positions", {"n": 1})]


def test_make_bus_picks_redis_only_when_configured() -> None:
    assert type(make_bus(None)) is LocalBus
    assert isinstance(make_bus("redis://127.0.0.1:6379/0", "x"), RedisBus)


async def test_redis_bus_shares_messages_between_instances_without_echoes() -> None:
    channel = f"tracker:test:{uuid.uuid4().hex}"
    a, b = RedisBus(TEST_REDIS_URL, channel), RedisBus(TEST_REDIS_URL, channel)
    other = RedisBus(TEST_REDIS_URL, channel + ":other")  # another deployment on one Redis
    got_a, handler_a = recorder()
    got_b, handler_b = recorder()
    got_other, handler_other = recorder()
    a.subscribe(handler_a)
    b.subscribe(handler_b)
    other.subscribe(handler_other)
    for bus in (a, b, other):
        await bus.start()
    try:
        for bus in (a, b, other):
            await asyncio.wait_for(bus.connected.wait(), 5)
        for n in range(50):
            await a.publish("positions", {"n": n})
        await b.publish("routes", {"from": "b"})
        await wait_for(lambda: len(got_b) == 51 and len(got_a) == 51)
        # In order, exactly once each: local delivery at once, the Redis echo ignored.
        for got in (got_a, got_b):
            assert [m for c, m in got if c == "positions"] == [{"n": n} for n in range(50)]
            assert [m for c, m in got if c == "routes"] == [{"from": "b"}]
        assert got_b[0] == ("routes", {"from": "b"})  # its own message, delivered at once
        await asyncio.sleep(0.2)
        assert len(got_a) == 51 and len(got_b) == 51 and got_other == []
        assert a.published == 50 and a.dropped == 0
    finally:
        for bus in (a, b, other):
            await bus.close()


async def test_publish_never_waits_for_an_unreachable_redis() -> None:
    bus = RedisBus(f"redis://127.0.0.1:{free_port()}/0", outbox_limit=10)
    got, handler = recorder()
    bus.subscribe(handler)
    await bus.start()
    try:
        start = time.monotonic()
        for n in range(100):
            await bus.publish("positions", {"n": n})
        elapsed = time.monotonic() - start
        assert elapsed < 0.1, elapsed
        # This instance's own subscribers still get everything.
        assert [m["n"] for _, m in got] == list(range(100))
        await asyncio.sleep(0.3)  # let the sender fail at least once
        assert not bus.connected.is_set()
        # The outbox is bounded: the oldest live updates were dropped, not hoarded.
        assert bus.dropped == 90
        assert bus.published == 0
    finally:
        await bus.close()


@pytest.mark.parametrize("payload", [b"not json", b'{"i": "x"}', b'{"i": "x", "c": "c", "m": 3}'])
async def test_malformed_bus_messages_are_ignored(payload: bytes) -> None:
    bus = RedisBus("redis://127.0.0.1:1/0")
    got, handler = recorder()
    bus.subscribe(handler)
    bus._on_raw(payload)
    assert got == []
