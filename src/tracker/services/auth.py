"""Who is calling: devices by token, dispatchers and the admin by bearer token, API key or
sign-in session; and what follows when a credential changes.

Lookups are cached per instance in bounded LRU caches (TRACKER_AUTH_CACHE_SIZE entries,
sized for 100,000 phones; unknown tokens in a small cache of their own, so a flood of random
tokens evicts nothing real). Device tokens are kept until they change, at most
TRACKER_AUTH_CACHE_S; keys and sessions (few, rarely used) at most 5 s. Every change made
through the server (a key revoked, a device disabled, a session signed out) is announced on
the bus: each instance drops what it cached about it and closes the WebSockets that
credential opened (close code 1008) at once. When the bus comes back after a gap, whatever
it missed is made good: caches are emptied and every open socket's credential is checked
again; open sockets are also checked every 10 s, for changes made behind the server's back.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import asyncpg
from cachetools import TTLCache

from tracker.core import tokens
from tracker.store import devices as device_store
from tracker.store import sessions as session_store
from tracker.store.devices import Device

log = logging.getLogger(__name__)

ADMIN = "admin"
DISPATCHER = "dispatcher"

# The bus channel and message of credential changes:
# {"type": "credential_changed", "kind": "key" | "keys" | "device" | "devices" | "session",
#  "id": int | None}  (the plural kinds: some of them changed, which is not known)
AUTH_CHANNEL = "auth"
CHANGED = "credential_changed"
KEY, ALL_KEYS, DEVICE, ALL_DEVICES, SESSION = "key", "keys", "device", "devices", "session"
# Unknown tokens kept at most (each costs a database lookup once, then nothing).
NEGATIVE_SIZE = 4096
# Keys and sessions are few; their caches need not be as large as the devices', nor kept
# as long: a key disabled by hand in SQL (no bus message) still ends within seconds.
STAFF_SIZE = 10_000
STAFF_TTL_S = 5.0
# How often open sockets' credentials are asked again (catches changes made behind the
# server's back; those made through it close the sockets at once).
RECHECK_S = 10.0
TOUCH_EVERY_S = 60.0

V = TypeVar("V")


class Publisher(Protocol):
    """What announcing a change needs from the bus."""

    async def publish(self, channel: str, message: dict[str, Any]) -> None: ...


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated human-facing caller: its role, and the key and session behind it
    (none for the admin token itself)."""

    role: str  # "admin" or "dispatcher"
    key_id: int | None = None
    session_id: int | None = None

    def identities(self) -> list[tuple[str, int]]:
        """What revoking ends this caller: its key, its session."""
        found = []
        if self.key_id is not None:
            found.append((KEY, self.key_id))
        if self.session_id is not None:
            found.append((SESSION, self.session_id))
        return found


Closer = Callable[[], None]
Recheck = Callable[[], Awaitable[bool]]


@dataclass(eq=False)
class _Watch:
    identities: tuple[tuple[str, int], ...]
    close: Closer
    recheck: Recheck
    done: bool = False


@dataclass
class Watchers:
    """Open connections by the credentials that opened them, to close when one is revoked."""

    _by_identity: dict[tuple[str, int], set[_Watch]] = field(default_factory=dict)
    _all: set[_Watch] = field(default_factory=set)

    def watch(
        self, identities: Iterable[tuple[str, int]], close: Closer, recheck: Recheck
    ) -> Callable[[], None]:
        """Call `close()` once when any of `identities` is revoked; returns the unwatch."""
        w = _Watch(tuple(identities), close, recheck)
        self._all.add(w)
        for identity in w.identities:
            self._by_identity.setdefault(identity, set()).add(w)
        return lambda: self._drop(w)

    def _drop(self, w: _Watch) -> None:
        self._all.discard(w)
        for identity in w.identities:
            group = self._by_identity.get(identity)
            if group is not None:
                group.discard(w)
                if not group:
                    del self._by_identity[identity]

    def _fire(self, w: _Watch) -> None:
        if w.done:
            return
        w.done = True
        self._drop(w)
        try:
            w.close()
        except Exception:
            log.exception("closing a connection of a revoked credential failed")

    def revoke(self, kind: str, ident: int | None) -> int:
        """Close what `kind`/`ident` opened (every device's for ALL_DEVICES); how many."""
        if kind == ALL_DEVICES:
            hit = [w for key, group in self._by_identity.items() if key[0] == DEVICE for w in group]
        else:
            hit = list(self._by_identity.get((kind, ident or 0), ()))
        for w in hit:
            self._fire(w)
        return len(hit)

    async def recheck_all(self) -> int:
        """Ask every connection's credential again; close those no longer valid."""
        closed = 0
        for w in list(self._all):
            try:
                valid = await w.recheck()
            except Exception:
                continue  # the database is away: keep it, the next gap asks again
            if not valid:
                self._fire(w)
                closed += 1
        return closed

    def __len__(self) -> int:
        return len(self._all)


class _Cache:
    """A bounded LRU with a time limit, and a smaller one for "no such token"."""

    def __init__(self, size: int, ttl_s: float) -> None:
        self.enabled = ttl_s > 0
        ttl = max(ttl_s, 0.001)
        self.found: TTLCache[bytes, Any] = TTLCache(maxsize=size, ttl=ttl)
        self.missing: TTLCache[bytes, bool] = TTLCache(maxsize=min(size, NEGATIVE_SIZE), ttl=ttl)

    def get(self, key: bytes) -> tuple[bool, Any]:
        if not self.enabled:
            return False, None
        if key in self.missing:
            return True, None
        value = self.found.get(key)
        return value is not None, value

    def put(self, key: bytes, value: Any) -> None:
        if not self.enabled:
            return
        if value is None:
            self.missing[key] = True
        else:
            self.found[key] = value

    def drop_where(self, match: Callable[[Any], bool]) -> None:
        for key in [k for k, v in list(self.found.items()) if match(v)]:
            self.found.pop(key, None)

    def clear(self) -> None:
        self.found.clear()
        self.missing.clear()

    def __len__(self) -> int:
        return len(self.found) + len(self.missing)


class Authenticator:
    """Resolves credentials; the only place that knows where they live and when they end."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        admin_token: str | None,
        cache_s: float,
        cache_size: int = 120_000,
        bus: Publisher | None = None,
    ) -> None:
        self._pool = pool
        self._admin_token = admin_token
        self._bus = bus
        self._devices = _Cache(cache_size, cache_s)
        staff_s = min(cache_s, STAFF_TTL_S)
        self._keys = _Cache(min(cache_size, STAFF_SIZE), staff_s)
        self._sessions = _Cache(min(cache_size, STAFF_SIZE), staff_s)
        self._touched: TTLCache[int, float] = TTLCache(maxsize=STAFF_SIZE, ttl=TOUCH_EVERY_S)
        self._tasks: set[asyncio.Task[Any]] = set()
        self.watchers = Watchers()

    # -- lookups -------------------------------------------------------------------------

    async def device(self, token: str) -> Device | None:
        """The device owning `token` (enabled or not), or None."""
        key = tokens.digest(token)
        hit, found = self._devices.get(key)
        if hit:
            return found  # type: ignore[no-any-return]
        device = await device_store.device_by_token(self._pool, token)
        self._devices.put(key, device)
        return device

    def is_admin(self, token: str) -> bool:
        """Whether `token` is the admin token."""
        return bool(self._admin_token) and tokens.same(token, self._admin_token or "")

    async def principal(self, token: str | None) -> Principal | None:
        """Admin or dispatcher behind a bearer token or API key, or None."""
        if not token:
            return None
        if self.is_admin(token):
            return Principal(ADMIN)
        key = tokens.digest(token)
        hit, found = self._keys.get(key)
        if not hit:
            row = await session_store.key_by_token(self._pool, token)
            found = None if row is None else Principal(row[1], key_id=row[0])
            self._keys.put(key, found)
        return found  # type: ignore[no-any-return]

    async def session(self, secret: str | None) -> Principal | None:
        """The caller behind a session cookie's random id, or None (unknown, expired,
        signed out, revoked, or its key or admin token no longer valid)."""
        if not secret:
            return None
        key = tokens.digest(secret)
        hit, found = self._sessions.get(key)
        if not hit:
            row = await session_store.session_by_token(self._pool, secret)
            found = None
            if row is not None and (row.role != ADMIN or self._admin_matches(row)):
                found = Principal(row.role, key_id=row.key_id, session_id=row.id)
            self._sessions.put(key, found)
        if found is not None:
            self._touch(found.session_id)
        return found  # type: ignore[no-any-return]

    def _admin_matches(self, row: session_store.Session) -> bool:
        # An admin session lasts only as long as the admin token it was opened with.
        current = self._admin_token
        return current is not None and hmac.compare_digest(
            row.credential_hash, tokens.digest(current)
        )

    def _touch(self, session_id: int | None) -> None:
        if session_id is None or session_id in self._touched:
            return
        self._touched[session_id] = time.monotonic()
        self._spawn(session_store.touch(self._pool, session_id))

    # -- sessions ------------------------------------------------------------------------

    async def open_session(
        self, token: str, max_age_s: float, user_agent: str, client: str
    ) -> tuple[Principal, str] | None:
        """Sign in with an admin token or dispatcher key: the new session's principal and the
        random id for its cookie, or None when `token` is neither."""
        who = await self.principal(token)
        if who is None:
            return None
        row, secret = await session_store.open_session(
            self._pool, who.role, who.key_id, token, max_age_s, user_agent, client
        )
        return Principal(row.role, key_id=row.key_id, session_id=row.id), secret

    async def end_session(self, session_id: int, of_key: int | None) -> bool:
        """Sign a session out (only one of `of_key`, unless None) on every instance."""
        ended = await session_store.delete_session(self._pool, session_id, of_key)
        if ended:
            await self.announce(SESSION, session_id)
        return ended

    # -- changes -------------------------------------------------------------------------

    async def revoke_key(self, key_id: int) -> bool:
        """Disable an API key; its sessions and sockets end on every instance."""
        revoked = await session_store.disable_key(self._pool, key_id)
        await self.announce(KEY, key_id)
        return revoked

    async def key_changed(self, key_id: int) -> None:
        """A key was revoked (or its role changed) elsewhere in the server: tell every
        instance, which closes its sockets and sessions' sockets."""
        await self.announce(KEY, key_id)

    def forget_keys(self) -> None:
        """Some key changed (which is not said): every instance drops its cached keys and
        sessions and asks every open socket's credential again."""
        self._keys.clear()
        self._sessions.clear()
        self._spawn(self.announce(ALL_KEYS, None))

    async def device_changed(self, device_id: int) -> None:
        """A device was disabled, enabled or given a new token: tell every instance."""
        await self.announce(DEVICE, device_id)

    def forget_devices(self) -> None:
        """Drop every cached device lookup here and on every other instance."""
        self._devices.clear()
        self._spawn(self.announce(ALL_DEVICES, None))

    async def announce(self, kind: str, ident: int | None) -> None:
        """Publish a credential change (this instance acts on it at once, the others when
        the bus delivers it); without a bus, act here only."""
        message = {"type": CHANGED, "kind": kind, "id": ident}
        if self._bus is None:
            self.on_bus(AUTH_CHANNEL, message)
        else:
            await self._bus.publish(AUTH_CHANNEL, message)

    def on_bus(self, channel: str, message: dict[str, Any]) -> None:
        """Bus handler: forget what a changed credential allowed and close its sockets."""
        if channel != AUTH_CHANNEL or message.get("type") != CHANGED:
            return
        kind, ident = message.get("kind"), message.get("id")
        if kind in (DEVICE, ALL_DEVICES):
            if kind == ALL_DEVICES or not isinstance(ident, int):
                self._devices.clear()
            else:
                self._devices.drop_where(lambda d: d.id == ident)
        elif kind in (KEY, ALL_KEYS):
            # Keys and sessions are few: start afresh rather than index them by key.
            self._keys.clear()
            self._sessions.clear()
            if kind == ALL_KEYS:
                self._spawn(self.watchers.recheck_all())
                return
        elif kind == SESSION:
            self._sessions.drop_where(lambda p: p.session_id == ident)
        else:
            return
        closed = self.watchers.revoke(str(kind), ident if isinstance(ident, int) else None)
        if closed:
            log.info("closed %d connection(s) of a changed credential (%s %s)", closed, kind, ident)

    def on_bus_resumed(self) -> None:
        """Bus handler after a gap: changes may have been missed, so ask again."""
        self._devices.clear()
        self._keys.clear()
        self._sessions.clear()
        self._spawn(self.watchers.recheck_all())

    async def keep_checking(self, every_s: float = RECHECK_S) -> None:
        """Ask open sockets' credentials again now and then, until cancelled."""
        while True:
            await asyncio.sleep(every_s)
            await self.watchers.recheck_all()

    def cached(self) -> dict[str, int]:
        """Entries per cache (for tests and diagnostics)."""
        return {
            "devices": len(self._devices),
            "keys": len(self._keys),
            "keys_missing": len(self._keys.missing),
            "sessions": len(self._sessions),
        }

    def _spawn(self, coro: Awaitable[Any]) -> None:
        async def run() -> None:
            with contextlib.suppress(Exception):
                await coro

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def bearer(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer ...` header."""
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()
