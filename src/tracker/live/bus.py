"""Publish/subscribe between server instances: Redis pub/sub, or in-process for one instance.

Messages are JSON-ready dicts on named channels. Delivery is best effort: durability lives
in PostgreSQL, so a bus outage loses live updates, never data. Every instance delivers its
own messages to its local subscribers at once and ignores their echo from Redis.

Publishing never waits for Redis: messages go to a bounded outbox that one task sends in
pipelined batches, so a slow or dead Redis cannot slow down the acknowledgement of pings.
After the subscription was lost and is back, the `on_resumed` callbacks run, because
whatever was published meanwhile never arrived (the hub resends snapshots).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

import orjson
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from tracker import metrics

log = logging.getLogger(__name__)

Message = dict[str, Any]
Handler = Callable[[str, Message], None]
Resumed = Callable[[], None]

REDIS_CHANNEL = "tracker:bus"
# Messages waiting for Redis beyond this many are dropped, oldest first.
OUTBOX_LIMIT = 20_000


class Bus(Protocol):
    """What the service and the hub need from a message bus."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def publish(self, channel: str, message: Message) -> None:
        """Deliver to every subscriber of every instance; never raises, never waits long."""

    def subscribe(self, handler: Handler) -> None:
        """Call `handler(channel, message)` for every message, from any instance."""

    def on_resumed(self, callback: Resumed) -> None:
        """Call `callback()` when delivery from other instances resumes after a gap."""


class LocalBus:
    """In-process bus for a single instance."""

    def __init__(self) -> None:
        self._handlers: list[Handler] = []
        self._resumed: list[Resumed] = []

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def subscribe(self, handler: Handler) -> None:
        self._handlers.append(handler)

    def on_resumed(self, callback: Resumed) -> None:
        # In-process delivery has no gaps; kept for the RedisBus.
        self._resumed.append(callback)

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

    def __init__(
        self,
        url: str,
        channel: str = REDIS_CHANNEL,
        instance_id: str | None = None,
        outbox_limit: int = OUTBOX_LIMIT,
    ) -> None:
        super().__init__()
        self.instance_id = instance_id or uuid.uuid4().hex
        self.channel = channel
        # No retries inside redis-py: its silent reconnect would hide a gap in the
        # subscription, and the loops below retry with their own backoff anyway.
        self._redis = aioredis.Redis.from_url(
            url,
            socket_connect_timeout=2,
            socket_timeout=None,
            health_check_interval=5,
            retry=Retry(NoBackoff(), 0),
        )
        self._outbox: deque[bytes] = deque(maxlen=outbox_limit)
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.connected = asyncio.Event()
        self.dropped = 0
        self.published = 0

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._listen(), name="redis-bus-listen"),
            asyncio.create_task(self._send(), name="redis-bus-send"),
        ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._redis.aclose()

    async def publish(self, channel: str, message: Message) -> None:
        self.deliver(channel, message)
        if len(self._outbox) == self._outbox.maxlen:
            self.dropped += 1
            metrics.BUS_DROPPED.inc()
        self._outbox.append(orjson.dumps({"i": self.instance_id, "c": channel, "m": message}))
        self._wake.set()

    async def _send(self) -> None:
        backoff = 0.1
        failing = False
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._outbox:
                batch, self._outbox = self._outbox, deque(maxlen=self._outbox.maxlen)
                try:
                    pipe = self._redis.pipeline(transaction=False)
                    for payload in batch:
                        pipe.publish(self.channel, payload)
                    await pipe.execute()
                except (RedisError, OSError) as exc:
                    if not failing:
                        log.warning("bus publish failed (%s); live updates held back", exc)
                    failing = True
                    # Put the batch back in front of what arrived meanwhile, newest kept.
                    limit = batch.maxlen or 0
                    lost = max(0, len(batch) + len(self._outbox) - limit)
                    self.dropped += lost
                    metrics.BUS_DROPPED.inc(lost)
                    batch.extend(self._outbox)
                    self._outbox = batch
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 2.0)
                    continue
                self.published += len(batch)
                metrics.BUS_PUBLISHED.inc(len(batch))
                if failing:
                    log.info("bus publishing resumed")
                failing = False
                backoff = 0.1

    async def _listen(self) -> None:
        backoff = 0.2
        subscribed_before = False
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                self.connected.set()
                backoff = 0.2
                if subscribed_before:
                    log.info("bus subscription restored")
                    metrics.BUS_RECONNECTS.inc()
                    self._run_resumed()
                subscribed_before = True
                while True:
                    raw = await pubsub.get_message(timeout=1.0)
                    if raw is not None:
                        self._on_raw(raw["data"])
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                if self.connected.is_set():
                    log.warning("bus subscription lost (%s); reconnecting", exc)
                self.connected.clear()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    def _run_resumed(self) -> None:
        for callback in self._resumed:
            try:
                callback()
            except Exception:
                log.exception("bus resume callback failed")

    def _on_raw(self, data: bytes) -> None:
        try:
            envelope = orjson.loads(data)
            sender, channel, message = envelope["i"], envelope["c"], envelope["m"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            log.warning("ignoring a malformed bus message")
            return
        if sender == self.instance_id or not isinstance(message, dict):
            return
        self.deliver(str(channel), message)


def make_bus(redis_url: str | None, channel: str = REDIS_CHANNEL) -> LocalBus:
    """Redis when configured, else the in-process bus."""
    return RedisBus(redis_url, channel) if redis_url else LocalBus()
