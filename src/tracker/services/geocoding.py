"""Geocoding orders given only by address, through a Nominatim-compatible /search endpoint.

Orders arrive `pending`; this service settles them in the background (an import of a
thousand addresses must not wait on a geocoder that answers once a second):

- one instance at a time works the queue (a PostgreSQL advisory lock), so the pace
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
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
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
from tracker.store import orders as store
from tracker.store.db import DB_ERRORS

log = logging.getLogger(__name__)

# Single-key advisory lock: "the geocoding queue" (other single keys: migrations, partitions).
_LOCK_KEY = 0x47454F43  # "GEOC"
BATCH = 50
MAX_BACKOFF_S = 300.0


class GeocoderUnavailable(Exception):
    """The geocoder did not give a usable answer this time (try again later)."""


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
            raise GeocoderUnavailable(f"HTTP {reply.status_code}")
        try:
            return reply.json()
        except ValueError as exc:
            raise GeocoderUnavailable("reply is not JSON") from exc

    async def close(self) -> None:
        await self.client.aclose()


class GeocodingService:
    """Settles pending orders: cache first, then the geocoder, one request per interval."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        client: NominatimClient,
        interval_s: float,
        poll_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.pool = pool
        self.client = client
        self.endpoint = client.url
        self.interval_s = interval_s
        self.poll_s = poll_s
        self.clock = clock
        self._wake = asyncio.Event()
        self._last_request = -float("inf")
        self._backoff_s = 0.0
        self.requests = 0  # sent to the geocoder by this instance (tests and logs)

    def wake(self) -> None:
        """New pending orders: start now rather than at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        """Work the queue until cancelled."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._backoff_s or self.poll_s)
            self._wake.clear()
            try:
                await self.work()
            except DB_ERRORS as exc:
                log.warning("geocoding paused, database unavailable: %s", exc)

    async def work(self) -> int:
        """Settle every pending order this instance can now; returns how many it settled."""
        settled = 0
        async with self.pool.acquire() as conn:
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", _LOCK_KEY):
                return 0  # another instance is on it
            try:
                while True:
                    batch = await store.pending_geocode(conn, BATCH)
                    if not batch:
                        break
                    for order in batch:
                        try:
                            found = await self.verdict(conn, order.address)
                        except GeocoderUnavailable as exc:
                            self._backoff_s = min(MAX_BACKOFF_S, max(1.0, self._backoff_s * 2))
                            log.warning(
                                "geocoder unavailable (%s); retrying in %.0f s",
                                exc,
                                self._backoff_s,
                            )
                            return settled
                        await store.set_geocode(
                            conn,
                            order.id,
                            found.status,
                            found.lat,
                            found.lon,
                            found.candidates,
                            order.address,
                        )
                        settled += 1
                    self._backoff_s = 0.0
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
        return settled

    async def verdict(self, conn: asyncpg.Connection, address: str) -> Verdict:
        """The verdict on `address`, from the cache or (paced) from the geocoder."""
        key = normalise(address)
        cached = await store.cached_geocode(conn, self.endpoint, key)
        if cached is not None:
            return judge(cached)
        wait = self._last_request + self.interval_s - self.clock()
        if wait > 0:
            await asyncio.sleep(wait)
        self._last_request = self.clock()
        self.requests += 1
        reply = await self.client.search(address)
        try:
            found = candidates(reply)
        except GeocoderReplyError as exc:
            raise GeocoderUnavailable(str(exc)) from exc
        await store.cache_geocode(conn, self.endpoint, key, found, datetime.now(UTC))
        return judge(found)

    async def close(self) -> None:
        await self.client.close()
