"""Per-process limits on what one client may use: request rates and open WebSockets.

Rates are in `limits` notation ("20/second;600/minute": each window is counted, the first
one full refuses) and counted with its fixed-window strategy, on counters kept in this
process by `WindowCounters`. A fixed window costs one dict lookup per hit (about 0.6 µs);
its known weakness, a burst of up to twice the limit across a window boundary, does not
matter for throttling phones and token guessers. `limits`' own `MemoryStorage` is not used:
its expiry thread scans every key a hundred times a second, which with a few thousand
devices cost about 45 µs of CPU per request at 4,000 requests/s; here an expired window is
replaced when next hit and the others are swept every few seconds.

Everything here counts per server process: with N workers (or N instances) a client gets up
to N times the limit. A fleet-wide limit belongs in the reverse proxy in front.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from limits import RateLimitItem, parse_many
from limits.storage import Storage

from tracker.config import Settings

Clock = Callable[[], float]


class _Window:
    __slots__ = ("count", "end")

    def __init__(self, count: int, end: float) -> None:
        self.count = count
        self.end = end


class WindowCounters(Storage):
    """In-process fixed-window counters for `limits`' FixedWindowRateLimiter.

    A window past its end counts as empty and is replaced on the next hit; windows nobody
    hits again are swept at most every `sweep_s` seconds. `clock` (epoch seconds, like the
    library's reset times) is replaceable for tests.
    """

    STORAGE_SCHEME: list[str] | None = ["tracker+memory"]  # noqa: RUF012  # the base declares it so

    def __init__(self, clock: Clock = time.time, sweep_s: float = 10.0) -> None:
        super().__init__()
        self._clock = clock
        self._sweep_s = sweep_s
        self._next_sweep = clock() + sweep_s
        self._windows: dict[str, _Window] = {}

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return ValueError

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        now = self._clock()
        window = self._windows.get(key)
        if window is not None and window.end > now:
            window.count += amount
            return window.count
        if now >= self._next_sweep:
            self._sweep(now)
        self._windows[key] = _Window(amount, now + expiry)
        return amount

    def get(self, key: str) -> int:
        window = self._windows.get(key)
        return window.count if window is not None and window.end > self._clock() else 0

    def get_expiry(self, key: str) -> float:
        now = self._clock()
        window = self._windows.get(key)
        return window.end if window is not None and window.end > now else now

    def check(self) -> bool:
        return True

    def reset(self) -> int | None:
        count = len(self._windows)
        self._windows.clear()
        return count

    def clear(self, key: str) -> None:
        self._windows.pop(key, None)

    def __len__(self) -> int:
        return len(self._windows)

    def _sweep(self, now: float) -> None:
        self._windows = {k: w for k, w in self._windows.items() if w.end > now}
        self._next_sweep = now + self._sweep_s


class RateLimit:
    """A rate limit in `limits` notation applied to each key separately ("" = none).

    `hit` does what `limits.strategies.FixedWindowRateLimiter.hit` does on these counters,
    with each limit's key prefix computed once: the strategy builds the key string on every
    call, which is most of its cost (about 1.8 µs a hit against 0.5 µs here).
    """

    def __init__(self, spec: str, clock: Clock = time.time) -> None:
        self.items: tuple[RateLimitItem, ...] = tuple(parse_many(spec)) if spec else ()
        self.counters = WindowCounters(clock)
        self._plan = [(item.key_for() + "/", item.get_expiry(), item.amount) for item in self.items]
        self._clock = clock

    @property
    def enabled(self) -> bool:
        """Whether any limit is configured."""
        return bool(self.items)

    def hit(self, key: str) -> int | None:
        """Count one request of `key`: None when allowed, else the whole seconds (at least
        1) until the full window resets, for `Retry-After`."""
        for prefix, expiry, amount in self._plan:
            if self.counters.incr(prefix + key, expiry) > amount:
                reset = self.counters.get_expiry(prefix + key)
                return max(1, math.ceil(reset - self._clock()))
        return None

    def describe(self) -> str:
        """The limit in words, for messages: "20 per 1 second, 600 per 1 minute"."""
        return ", ".join(str(item) for item in self.items)


class SocketSlots:
    """How many WebSockets each credential holds open, capped at `per_key` (0 = no cap)."""

    def __init__(self, per_key: int) -> None:
        self.per_key = per_key
        self._open: dict[str, int] = {}

    def acquire(self, key: str) -> bool:
        """Take a slot for `key`; False when it already holds `per_key` sockets."""
        held = self._open.get(key, 0)
        if self.per_key and held >= self.per_key:
            return False
        self._open[key] = held + 1
        return True

    def release(self, key: str) -> None:
        """Give back a slot taken by `acquire`."""
        held = self._open.get(key, 0) - 1
        if held > 0:
            self._open[key] = held
        else:
            self._open.pop(key, None)

    def held(self, key: str) -> int:
        """Sockets `key` holds open now."""
        return self._open.get(key, 0)


@dataclass(frozen=True)
class Limits:
    """This process's limits: per device, per client address, sockets per credential."""

    device: RateLimit
    ip: RateLimit
    sockets: SocketSlots

    @classmethod
    def from_settings(cls, settings: Settings, clock: Clock = time.time) -> Limits:
        """The limits a server's settings configure."""
        return cls(
            RateLimit(settings.rate_limit_device, clock),
            RateLimit(settings.rate_limit_ip, clock),
            SocketSlots(settings.ws_max_per_token),
        )
