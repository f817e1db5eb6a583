"""Who is calling: devices by token, dispatchers and the admin by bearer token or API key.

Lookups are cached for a few seconds per instance (TRACKER_AUTH_CACHE_S) so the ingest hot
path does not query PostgreSQL per request; disabling a device takes effect at once on the
instance that did it and within that time on the others.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import asyncpg

from tracker.core import tokens
from tracker.store import devices as device_store
from tracker.store.devices import Device

ADMIN = "admin"
DISPATCHER = "dispatcher"


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated human-facing caller."""

    role: str  # "admin" or "dispatcher"


class Authenticator:
    """Resolves bearer tokens; the only place that knows where credentials live."""

    def __init__(self, pool: asyncpg.Pool, admin_token: str | None, cache_s: float) -> None:
        self._pool = pool
        self._admin_token = admin_token
        self._cache_s = cache_s
        self._devices: dict[bytes, tuple[Device | None, float]] = {}
        self._keys: dict[bytes, tuple[str | None, float]] = {}

    async def device(self, token: str) -> Device | None:
        """The device owning `token` (enabled or not), or None."""
        key = tokens.digest(token)
        hit = self._devices.get(key)
        now = time.monotonic()
        if hit is not None and hit[1] > now:
            return hit[0]
        found = await device_store.device_by_token(self._pool, token)
        if self._cache_s > 0:
            if len(self._devices) > 100_000:
                self._devices.clear()
            self._devices[key] = (found, now + self._cache_s)
        return found

    def forget_devices(self) -> None:
        """Drop cached device lookups (after a device was enabled or disabled here)."""
        self._devices.clear()

    def forget_keys(self) -> None:
        """Drop cached key lookups (after a key was revoked here)."""
        self._keys.clear()

    async def principal(self, token: str | None) -> Principal | None:
        """Admin or dispatcher behind `token`, or None."""
        if not token:
            return None
        if self._admin_token and tokens.same(token, self._admin_token):
            return Principal(ADMIN)
        key = tokens.digest(token)
        hit = self._keys.get(key)
        now = time.monotonic()
        if hit is not None and hit[1] > now:
            role = hit[0]
        else:
            role = await device_store.key_role(self._pool, token)
            if self._cache_s > 0:
                self._keys[key] = (role, now + self._cache_s)
        return Principal(role) if role else None


def bearer(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer ...` header."""
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()
