"""Geocoding orders given only by address, through a Nominatim-compatible /search endpoint.

Orders arrive `pending`; this service settles them in the background (an import of a
thousand addresses must not wait on a geocoder that answers once a second):

- one instance at a time works the queue (`GeocodeQueue.turn`: a PostgreSQL advisory lock
  in `tracker.store.geocoding`), so the pace
  `TRACKER_GEOCODER_INTERVAL_S` holds for the deployment, not per instance;
- every answer is cached in PostgreSQL by normalised address and endpoint: an address is
  asked once, ever;
- a geocoder that fails (timeout, 5xx, 429, a reply that is not a place list) leaves the
  orders pending and is retried with a growing delay; nothing is marked unresolved on a
  transient error.

The verdict (resolved / ambiguous / unresolved) is `tracker.planning.geocode`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import Any, Protocol

import httpx

from tracker.config import Settings
from tracker.planning.geocode import (
    MAX_CANDIDATES,
    GeocoderReplyError,
    Verdict,
    candidates,
    judge,
    normalise,
)
from tracker.planning.model import Candidate, Order
from tracker.store.db import DB_ERRORS

log = logging.getLogger(__name__)

BATCH = 50
MAX_BACKOFF_S = 300.0


class GeocoderUnavailable(Exception):
    """The geocoder did not give a usable answer this time (try again later, no sooner than
    `retry_after_s` when it said so)."""

    def __init__(self, message: str, retry_after_s: float = 0.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def _retry_after(reply: httpx.Response) -> float:
    try:
        return min(MAX_BACKOFF_S, max(0.0, float(reply.headers.get("retry-after", "0"))))
    except ValueError:
        return 0.0  # an HTTP date: the doubling delay will do


class NominatimClient:
    """GET {url}/search?q=…&format=jsonv2 with the deployment's User-Agent."""

    def __init__(self, settings: Settings, transport: httpx.AsyncBaseTransport | None = None):
        assert settings.geocoder_url
        base = settings.geocoder_url.rstrip("/")
        self.url = base if base.endswith("/search") else base + "/search"
        self.countries = settings.geocoder_countries.replace(" ", "")
        self.client = httpx.AsyncClient(
            timeout=settings.geocoder_timeout_s,
            headers={"User-Agent": settings.geocoder_user_agent, "Accept": "application/json"},
            follow_redirects=False,
            transport=transport,
        )

    async def search(self, query: str) -> Any:
        """The geocoder's JSON reply to `query`; GeocoderUnavailable when there is none."""
        params = {"q": query, "format": "jsonv2", "limit": str(MAX_CANDIDATES)}
        if self.countries:
            params["countrycodes"] = self.countries
        try:
            reply = await self.client.get(self.url, params=params)
        except httpx.HTTPError as exc:
            raise GeocoderUnavailable(f"{type(exc).__name__}: {exc}") from exc
        if reply.status_code != 200:
            raise GeocoderUnavailable(f"HTTP {reply.status_code}", _retry_after(reply))
        try:
            return reply.json()
        except ValueError as exc:
            raise GeocoderUnavailable("reply is not JSON") from exc

    async def close(self) -> None:
        await self.client.aclose()


class Searcher(Protocol):
    """A geocoder: its endpoint (the cache's key) and a search."""

    url: str

    async def search(self, query: str) -> Any: ...

    async def close(self) -> None: ...


class GeocodeSession(Protocol):
    """One turn at the queue: read pending orders and the cache, store verdicts."""

    async def pending(self, limit: int) -> list[Order]: ...

    async def cached(self, endpoint: str, query: str) -> list[Candidate] | None: ...

    async def remember(
        self, endpoint: str, query: str, found: Sequence[Candidate], now: datetime
    ) -> None: ...

    async def settle(self, order: Order, verdict: Verdict) -> None: ...


class GeocodeQueue(Protocol):
    """Where pending orders wait (store.geocoding.PgGeocodeQueue in production)."""

    def turn(self) -> AbstractAsyncContextManager[GeocodeSession | None]: ...


class GeocodingService:
    """Settles pending orders: cache first, then the geocoder, one request per interval."""

    def __init__(
        self,
        queue: GeocodeQueue,
        client: Searcher,
        interval_s: float,
        poll_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.queue = queue
        self.client = client
        self.endpoint = client.url
        self.interval_s = interval_s
        self.poll_s = poll_s
        self.clock = clock
        self.sleep = sleep
        self.now = now
        self._wake = asyncio.Event()
        self._last_request = -float("inf")
        self.backoff_s = 0.0
        self.requests = 0  # sent to the geocoder by this instance (tests and logs)

    def wake(self) -> None:
        """New pending orders: start now rather than at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        """Work the queue until cancelled."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.backoff_s or self.poll_s)
            self._wake.clear()
            try:
                await self.work()
            except DB_ERRORS as exc:
                log.warning("geocoding paused, database unavailable: %s", exc)
            except Exception:
                # Never let one bad answer end the loop for good: log it, wait, go on.
                log.exception("geocoding failed; retrying in %.0f s", self.poll_s)

    async def work(self) -> int:
        """Settle every pending order this instance can now; returns how many it settled."""
        settled = 0
        async with self.queue.turn() as session:
            if session is None:
                return 0  # another instance is on it
            # Another instance may have asked just before handing over the queue: the first
            # request of a turn waits one interval too, so the pace holds across instances.
            self._last_request = max(self._last_request, self.clock())
            while batch := await session.pending(BATCH):
                for order in batch:
                    try:
                        found = await self.verdict(session, order.address)
                    except GeocoderUnavailable as exc:
                        doubled = min(MAX_BACKOFF_S, max(1.0, self.backoff_s * 2))
                        self.backoff_s = max(doubled, exc.retry_after_s)
                        log.warning(
                            "geocoder unavailable (%s); retrying in %.0f s", exc, self.backoff_s
                        )
                        return settled
                    await session.settle(order, found)
                    settled += 1
                self.backoff_s = 0.0
        return settled

    async def verdict(self, session: GeocodeSession, address: str) -> Verdict:
        """The verdict on `address`, from the cache or (paced) from the geocoder."""
        key = normalise(address)
        cached = await session.cached(self.endpoint, key)
        if cached is not None:
            return judge(cached)
        wait = self._last_request + self.interval_s - self.clock()
        if wait > 0:
            await self.sleep(wait)
        self._last_request = self.clock()
        self.requests += 1
        reply = await self.client.search(address)
        try:
            found = candidates(reply)
        except GeocoderReplyError as exc:
            raise GeocoderUnavailable(str(exc)) from exc
        await session.remember(self.endpoint, key, found, self.now())
        return judge(found)

    async def close(self) -> None:
        """Release the geocoder's connections."""
        await self.client.close()
