"""The geocoding queue in PostgreSQL: pending orders, the answers cache, the one-instance
lock. `tracker.services.geocoding` works through this (in-memory fakes in its unit tests)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from datetime import datetime

import asyncpg

from tracker.planning.geocode import Verdict
from tracker.planning.model import Candidate, Order
from tracker.store import orders as store

# Single-key advisory lock: "the geocoding queue" (other single keys: migrations, partitions).
_LOCK_KEY = 0x47454F43  # "GEOC"


class PgGeocodeSession:
    """One instance's turn at the queue, on one connection (each write commits alone)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def pending(self, limit: int) -> list[Order]:
        return await store.pending_geocode(self._conn, limit)

    async def cached(self, endpoint: str, query: str) -> list[Candidate] | None:
        return await store.cached_geocode(self._conn, endpoint, query)

    async def remember(
        self, endpoint: str, query: str, found: Sequence[Candidate], now: datetime
    ) -> None:
        await store.cache_geocode(self._conn, endpoint, query, found, now)

    async def settle(self, order: Order, verdict: Verdict) -> None:
        await store.set_geocode(
            self._conn,
            order.id,
            verdict.status,
            verdict.lat,
            verdict.lon,
            verdict.candidates,
            order.address,
        )


class PgGeocodeQueue:
    """Pending orders in PostgreSQL; one instance at a time holds the queue."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[PgGeocodeSession | None]:
        """This instance's turn (None while another instance has it)."""
        async with self._pool.acquire() as conn:
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", _LOCK_KEY):
                yield None
                return
            try:
                yield PgGeocodeSession(conn)
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
