"""tracker.api.ratelimit with a fake clock: fixed windows, Retry-After, sweeping, socket slots."""

from __future__ import annotations

import pytest
from limits import parse
from limits.strategies import FixedWindowRateLimiter

from tracker.api.ratelimit import Limits, RateLimit, SocketSlots, WindowCounters
from tracker.config import Settings


class Clock:
    def __init__(self, now: float = 1_700_000_000.25) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_allows_the_limit_then_refuses_until_the_window_ends() -> None:
    clock = Clock()
    limit = RateLimit("3/10seconds", clock)
    assert [limit.hit("a") for _ in range(3)] == [None, None, None]
    assert limit.hit("a") == 10
    clock.now += 6.5
    assert limit.hit("a") == 4  # 3.5 s left, in whole seconds rounded up
    clock.now += 3.4
    assert limit.hit("a") == 1  # 0.1 s left: never 0
    clock.now += 0.1
    assert limit.hit("a") is None  # a new window
    assert limit.hit("b") is None  # keys are counted apart


def test_every_window_of_a_multiple_limit_counts() -> None:
    clock = Clock()
    limit = RateLimit("2/second;3/minute", clock)
    assert limit.describe() == "2 per 1 second, 3 per 1 minute"
    assert [limit.hit("d") for _ in range(3)] == [None, None, 1]
    clock.now += 1.0
    assert limit.hit("d") is None
    # The second-long window has room, the minute-long one is full (the refused hit above
    # was not counted in it).
    assert limit.hit("d") == 59
    clock.now += 59.0
    assert limit.hit("d") is None


def test_off_allows_everything() -> None:
    limit = RateLimit("")
    assert not limit.enabled
    assert all(limit.hit("x") is None for _ in range(10_000))


def test_counters_agree_with_the_library_fixed_window_strategy() -> None:
    # The counters are a `limits` storage: its own strategy on them gives the same answers.
    clock = Clock()
    counters = WindowCounters(clock)
    strategy = FixedWindowRateLimiter(counters)
    item = parse("5/minute")
    ours = RateLimit("5/minute", clock)
    for step in range(40):
        theirs_ok = strategy.hit(item, "k")
        assert (ours.hit("k") is None) == theirs_ok
        stats = strategy.get_window_stats(item, "k")
        assert stats.reset_time > clock.now
        clock.now += 7.0 if step % 3 else 1.0


def test_windows_nobody_hits_again_are_swept() -> None:
    clock = Clock()
    counters = WindowCounters(clock, sweep_s=10.0)
    for key in range(100):
        counters.incr(f"k{key}", 1)
    assert len(counters) == 100
    clock.now += 11.0
    counters.incr("fresh", 1)
    assert len(counters) == 1
    assert counters.get("k1") == 0 and counters.get("fresh") == 1


def test_socket_slots_cap_each_key_and_free_on_release() -> None:
    slots = SocketSlots(2)
    assert slots.acquire("a") and slots.acquire("a")
    assert not slots.acquire("a")
    assert slots.acquire("b")
    slots.release("a")
    assert slots.held("a") == 1
    assert slots.acquire("a")
    for _ in range(2):
        slots.release("a")
    assert slots.held("a") == 0


def test_zero_means_no_socket_limit() -> None:
    slots = SocketSlots(0)
    assert all(slots.acquire("a") for _ in range(1000))


@pytest.mark.parametrize("spec", ["20/second", "20/second;600/minute"])
def test_limits_from_settings(spec: str) -> None:
    limits = Limits.from_settings(
        Settings(rate_limit_device=spec, rate_limit_ip="", ws_max_per_token=3)
    )
    assert limits.device.enabled and not limits.ip.enabled
    assert limits.sockets.per_key == 3
