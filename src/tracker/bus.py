"""Publish/subscribe between server instances: Redis pub/sub, or in-process for one instance.

Messages are JSON-ready dicts on named channels. Delivery is best effort: durability lives
in PostgreSQL, so a bus outage loses live updates, never data. Every instance delivers its
own messages to its local subscribers at once and ignores their echo from Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from typing import Any, Protocol

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

Message = dict[str, Any]
Handler = Callable[[str, Message], None]

REDIS_CHANNEL = "tracker:bus"


class Bus(Protocol):
    """What the service and the hub need from a message bus."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def publish(self, channel: str, message: Message) -> None:
        """Deliver to every subscriber of every instance; never raises."""

    def subscribe(self, handler: Handler) -> None:
        """Call `handler(channel, message)` for every message, from any instance."""


class LocalBus:
    """In-process bus for a single instance."""

    def __init__(self) -> None:
        self._handlers: list[Handler] = []

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def subscribe(self, handler: Handler) -> None:
        self._handlers.append(handler)

    def deliver(self, channel: str, message: Message) -> None:
        """Hand a message to local subscribers; one failing handler does not stop others."""
        for handler in self._handlers:
            try:
                handler(channel, message)
            except Exception:
                log.exception("bus handler failed on %s", channel)

    async def publish(self, channel: str, message: Message) -> None:
        self.deliver(channel, message)


class RedisBus(LocalBus):
    """Redis pub/sub shared by all instances; reconnects by itself after an outage."""

    def __init__(self, url: str, instance_id: str | None = None) -> None:
        super().__init__()
        self.instance_id = instance_id or uuid.uuid4().hex
        self._redis = aioredis.Redis.from_url(
            url, socket_connect_timeout=2, socket_timeout=None, health_check_interval=5
        )
        self._listener: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()

    async def start(self) -> None:
        self._listener = asyncio.create_task(self._listen(), name="redis-bus")

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        await self._redis.aclose()

    async def publish(self, channel: str, message: Message) -> None:
        self.deliver(channel, message)
        payload = orjson.dumps({"i": self.instance_id, "c": channel, "m": message})
        try:
            await self._redis.publish(REDIS_CHANNEL, payload)
        except (RedisError, OSError) as exc:
            log.warning("bus publish failed (%s); live update not shared", exc)

    async def _listen(self) -> None:
        backoff = 0.2
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(REDIS_CHANNEL)
                self.connected.set()
                backoff = 0.2
                while True:
                    raw = await pubsub.get_message(timeout=1.0)
                    if raw is None:
                        continue
                    self._on_raw(raw["data"])
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                self.connected.clear()
                log.warning("bus subscription lost (%s); retrying in %.1f s", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _on_raw(self, data: bytes) -> None:
        try:
            envelope = orjson.loads(data)
        except orjson.JSONDecodeError:
            log.warning("ignoring a malformed bus message")
            return
        if envelope.get("i") == self.instance_id:
            return
        self.deliver(envelope["c"], envelope["m"])


def make_bus(redis_url: str | None) -> LocalBus:
    """Redis when configured, else the in-process bus."""
    return RedisBus(redis_url) if redis_url else LocalBus()
