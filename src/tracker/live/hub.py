"""Live fan-out of bus updates to WebSocket clients, one frame per tick per client.

Updates from the bus become pending changes of each channel. At most once per tick a
channel encodes its changes once and offers that same frame to all its subscribers. A
subscriber whose previous frame is still being written (a slow reader) does not queue the
frame: it folds the changes into its own pending set, latest state per vehicle winning, and
later gets one catch-up frame encoded just for it. So a slow client receives fewer, fresher
frames, costs memory bounded by the fleet size, and never delays the others; one whose write
makes no progress for `stuck_s` is disconnected.

No frame is larger than `max_frame_bytes` (WebSocket clients cap what they accept: Python
websockets at 1 MiB by default, which a snapshot of a few hundred vehicles passed). A larger
snapshot goes out as consecutive parts, `{"type": "snapshot", "part": 0, "final": false,
"vehicles": [...]}` ... `{"part": n - 1, "final": true}`, which the client applies together
once the final one arrived; a snapshot that fits one frame is sent as before (no `part`). A
larger delta goes out as several deltas, each complete by itself (vehicles first, then the
events in order).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson

from tracker import metrics
from tracker.live.fleet import (
    Changes,
    Fleet,
    FleetView,
    Message,
    Update,
    Vehicle,
    View,
    delta_message,
    pong_message,
    snapshot_message,
    through,
)

log = logging.getLogger(__name__)

DISPATCH = "dispatch"
# The metrics label of every other channel: each is one customer's tracking link.
TRACK = "track"
# Client messages answered out of band (pongs) beyond this many waiting are dropped.
MAX_CONTROL = 8
# What a frame may hold by default: a quarter of the 1 MiB Python websockets clients accept.
MAX_FRAME_BYTES = 256 * 1024
# Room left in each part for the `part` and `final` keys added after the split.
_PART_MARGIN = 64

VehicleLoader = Callable[[], Awaitable[list[Vehicle]]]
Clock = Callable[[], float]


def encode(message: Message) -> str:
    """JSON text of a message (ASGI text frames take str)."""
    return orjson.dumps(message).decode()


def _size(text: str) -> int:
    # The frame's UTF-8 length; text is mostly ASCII, where that is the number of characters.
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def _fits(text: str, limit: int) -> bool:
    # Characters bound the UTF-8 length from below and (x4) from above: most frames are
    # decided without encoding them again.
    if len(text) > limit:
        return False
    return len(text) * 4 <= limit or _size(text) <= limit


def _split(
    message: Message, keys: tuple[str, ...], encoder: Callable[[Message], str], limit: int
) -> list[Message]:
    """`message` as consecutive messages whose `keys` lists, concatenated in order, are the
    original's, each encoding to at most `limit` bytes where one item allows."""
    items = [(key, item) for key in keys for item in message.get(key) or ()]

    def build(chunk: list[tuple[str, Any]]) -> Message:
        return {**message, **{key: [item for k, item in chunk if k == key] for key in keys}}

    # Greedy by each item's JSON size (a separator each), under what the envelope leaves.
    room = limit - _size(encoder(build([])))
    chunks: list[list[tuple[str, Any]]] = [[]]
    used = 0
    for entry in items:
        size = len(orjson.dumps(entry[1])) + 1
        if chunks[-1] and used + size > room:
            chunks.append([])
            used = 0
        chunks[-1].append(entry)
        used += size
    if encoder is encode:
        # Plain JSON: the sizes above are exact, no need to encode every part twice.
        return [build(chunk) for chunk in chunks]
    out: list[Message] = []
    todo = chunks[::-1]
    while todo:
        chunk = todo.pop()
        part = build(chunk)
        # A channel encoder that writes items differently than plain JSON: halve until it
        # fits, or is one item (which then travels alone, however large).
        if len(chunk) > 1 and not _fits(encoder(part), limit):
            half = len(chunk) // 2
            todo.extend((chunk[half:], chunk[:half]))
            continue
        out.append(part)
    return out


def frames(message: Message, encoder: Callable[[Message], str], max_bytes: int) -> list[str]:
    """`message` encoded as one frame, or, past `max_bytes`, as several (module docstring)."""
    text = encoder(message)
    if _fits(text, max_bytes):
        return [text]
    kind = message.get("type")
    if kind == "snapshot":
        parts = _split(message, ("vehicles",), encoder, max_bytes - _PART_MARGIN)
        last = len(parts) - 1
        return [encoder({**m, "part": k, "final": k == last}) for k, m in enumerate(parts)]
    if kind == "delta":
        return [encoder(m) for m in _split(message, ("vehicles", "events"), encoder, max_bytes)]
    return [text]


def channel_kind(key: str) -> str:
    """A channel's metrics label: `dispatch`, or `track` for a customer's tracking link."""
    return DISPATCH if key == DISPATCH else TRACK


class Sink(Protocol):
    """One client connection, as the hub needs it."""

    async def send(self, text: str) -> None:
        """Write one text frame; may wait while the client is not reading."""

    def abort(self) -> None:
        """Drop the connection at once, discarding anything not yet written."""


class Subscriber:
    """One client of a channel: its sender task and what is waiting to be sent to it."""

    def __init__(self, hub: Hub, channel: Channel, sink: Sink) -> None:
        self.hub = hub
        self.channel = channel
        self.sink = sink
        self.live = False  # deltas flow only after the first snapshot was queued
        self.closed = False
        self.busy_since: float | None = None
        self.frames_sent = 0
        self.frames_merged = 0
        kind = channel_kind(channel.key)
        self._sent_metric = metrics.WS_FRAMES_SENT.labels(kind)
        self._merged_metric = metrics.WS_FRAMES_MERGED.labels(kind)
        self._clients_metric = metrics.WS_CLIENTS.labels(kind)
        self._clients_metric.inc()
        self._counted = True  # in the clients gauge until unsubscribed
        self._control: deque[tuple[str, str]] = deque()
        self._pending: Changes | None = None
        self._frames: list[str] | None = None
        # The rest of a frame sent in parts: written before anything else.
        self._sending: deque[str] = deque()
        self._own = False  # whether _pending is a private copy this subscriber may change
        self._wake = asyncio.Event()
        self.task = asyncio.create_task(self._run(), name="hub-subscriber")

    def offer(self, changes: Changes, frames: list[str]) -> None:
        """A channel's frames for this tick; merged into what is waiting if anything is."""
        if self._pending is None:
            self._pending, self._frames, self._own = changes, frames, False
        else:
            if not self._own:
                self._pending, self._own = self._pending.copy(), True
            self._pending.merge(changes)
            self._frames = None
            self.frames_merged += 1
            self._merged_metric.inc()
        if self.live:
            self._wake.set()

    def reset(self, snapshot: str | list[str]) -> None:
        """Queue a snapshot (one frame, or its parts in order). It holds every vehicle's
        latest state, so waiting vehicle changes are dropped (waiting events still follow
        it), as is an older snapshot, or what of one was not sent yet."""
        if self._pending is not None:
            if self._pending.events:
                kept = Changes(self._pending.max_events, {}, list(self._pending.events))
                self._pending, self._own = kept, True
            else:
                self._pending = None
            self._frames = None
        self._control = deque(item for item in self._control if item[0] != "snapshot")
        parts = [snapshot] if isinstance(snapshot, str) else snapshot
        self._control.extend(("snapshot", part) for part in parts)
        self.live = True
        self._wake.set()

    def pong(self, text: str) -> None:
        """Queue an answer to the client's ping, unless it is flooding us with them."""
        if len(self._control) < MAX_CONTROL:
            self._control.append(("pong", text))
            self._wake.set()

    def uncount(self) -> None:
        """Leave the clients gauge (once, however often it is called)."""
        if self._counted:
            self._counted = False
            self._clients_metric.dec()

    def kill(self) -> None:
        """Stop sending and drop the connection (it is stuck or the hub is closing)."""
        self.closed = True
        self.task.cancel()
        with contextlib.suppress(Exception):
            self.sink.abort()

    def _next(self) -> str | None:
        if self._sending:
            return self._sending.popleft()
        if self._control:
            return self._control.popleft()[1]
        if self._pending is not None and self.live:
            texts = self._frames or self.channel.frames(
                delta_message(self.hub.now(), self._pending)
            )
            self._pending = self._frames = None
            self._sending.extend(texts[1:])
            return texts[0]
        return None

    async def _run(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while (text := self._next()) is not None:
                    self.busy_since = self.hub.clock()
                    await self.sink.send(text)
                    self.busy_since = None
                    self.frames_sent += 1
                    self._sent_metric.inc()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # The client went away; its endpoint sees the disconnect and unsubscribes.
            log.debug("stopped sending to a client: %r", exc)
        finally:
            self.busy_since = None
            self.closed = True
            self.channel.discard(self)


class Channel:
    """A group of subscribers seeing the fleet through one view: its sockets, its pending
    changes, and its encoder (one encode per tick, shared by all its sockets)."""

    def __init__(
        self,
        key: str,
        view: View,
        max_events: int,
        encoder: Callable[[Message], str] = encode,
        max_frame_bytes: int = MAX_FRAME_BYTES,
    ) -> None:
        self.key = key
        self.view = view
        self.encode = encoder
        self.max_frame_bytes = max_frame_bytes
        self.subscribers: dict[Subscriber, None] = {}  # insertion-ordered set
        self._max_events = max_events
        self.pending = Changes(max_events)

    def add(self, update: Update) -> bool:
        """Record an update for the next frame; False when nobody would see it."""
        if not self.subscribers:
            return False
        seen = through(self.view, update)
        if seen is None:
            return False
        self.pending.add(seen)
        return True

    def frames(self, message: Message) -> list[str]:
        """`message` in this channel's encoding, in frames of at most `max_frame_bytes`."""
        return frames(message, self.encode, self.max_frame_bytes)

    def flush(self, now: datetime) -> None:
        """Encode the pending changes once and offer the frames to every subscriber."""
        if not self.pending:
            return
        changes, self.pending = self.pending, Changes(self._max_events)
        texts = self.frames(delta_message(now, changes))
        for sub in list(self.subscribers):
            sub.offer(changes, texts)

    def snapshot(self, now: datetime, vehicles: list[Vehicle]) -> list[str]:
        """The encoded snapshot of the vehicles this channel shows (its parts, in order)."""
        shown = (self.view.vehicle(v) for v in vehicles)
        return self.frames(snapshot_message(now, (v for v in shown if v is not None)))

    def discard(self, sub: Subscriber) -> None:
        self.subscribers.pop(sub, None)


class Hub:
    """Every live channel of this instance, fed by the bus, flushed once per tick."""

    def __init__(
        self,
        load_vehicles: VehicleLoader,
        tick_s: float = 0.15,
        stuck_s: float = 10.0,
        max_events: int = 500,
        clock: Clock = time.monotonic,
        max_frame_bytes: int = MAX_FRAME_BYTES,
    ) -> None:
        self.fleet = Fleet()
        self.tick_s = tick_s
        self.max_frame_bytes = max_frame_bytes
        self.stuck_s = stuck_s
        self.clock = clock
        self.channels: dict[str, Channel] = {}
        # Channels whose view shows one device only (a `device` attribute naming it): an
        # update reaches just that device's channels, so thousands of customer channels
        # cost nothing per ping of the other vehicles.
        self._by_device: dict[str, dict[Channel, None]] = {}
        self._fleetwide: dict[Channel, None] = {}
        self.closed_stuck = 0
        self._max_events = max_events
        self._load_vehicles = load_vehicles
        self._loading: asyncio.Future[list[Vehicle]] | None = None
        self._dirty = asyncio.Event()
        self._resyncing: asyncio.Task[None] | None = None

    @staticmethod
    def now() -> datetime:
        """Wall-clock time stamped on frames."""
        return datetime.now(UTC)

    def channel(
        self, key: str, view: View | None = None, encoder: Callable[[Message], str] = encode
    ) -> Channel:
        """The channel named `key`, created with `view` (default: the whole fleet) and
        `encoder` (what its frames look like) unless it exists already."""
        found = self.channels.get(key)
        if found is None:
            found = Channel(
                key, view or FleetView(), self._max_events, encoder, self.max_frame_bytes
            )
            self.channels[key] = found
            device = getattr(found.view, "device", None)
            if isinstance(device, str):
                self._by_device.setdefault(device, {})[found] = None
            else:
                self._fleetwide[found] = None
        return found

    # -- bus side --------------------------------------------------------------------------

    def on_bus(self, channel: str, message: Message) -> None:
        """Bus handler: update the fleet and the channels' pending changes."""
        update = self.fleet.apply(channel, message)
        if update is None:
            return
        touched = False
        for ch in self._fleetwide:
            touched = ch.add(update) or touched
        for ch in self._by_device.get(update.device, ()):
            touched = ch.add(update) or touched
        if touched:
            self._dirty.set()

    def on_bus_resumed(self) -> None:
        """Bus handler for a reconnect: updates were lost meanwhile, so resend snapshots."""
        if self._resyncing is None or self._resyncing.done():
            self._resyncing = asyncio.create_task(self._resync_all(), name="hub-resync")

    # -- client side -----------------------------------------------------------------------

    def subscribe(
        self,
        key: str,
        sink: Sink,
        view: View | None = None,
        encoder: Callable[[Message], str] = encode,
    ) -> Subscriber:
        """Register a client; it gets nothing until `send_snapshot`, then deltas."""
        channel = self.channel(key, view, encoder)
        sub = Subscriber(self, channel, sink)
        channel.subscribers[sub] = None
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        """Forget a client (idempotent)."""
        sub.closed = True
        sub.task.cancel()
        sub.uncount()
        sub.channel.discard(sub)
        if not sub.channel.subscribers and sub.channel.key != DISPATCH:
            self._forget(sub.channel)

    async def send_snapshot(self, sub: Subscriber) -> None:
        """Queue a snapshot for one client (on connect and on its resync request).
        Raises what the vehicle loader raises (database unavailable)."""
        vehicles = await self._load(fresh=False)
        if sub.closed:
            return
        sub.reset(sub.channel.snapshot(self.now(), self.fleet.absorb(vehicles)))

    def pong(self, sub: Subscriber) -> None:
        """Answer a client's application-level ping."""
        sub.pong(sub.channel.encode(pong_message(self.now())))

    # -- loops -----------------------------------------------------------------------------

    async def run(self) -> None:
        """The tick loop: flush when something changed, at most once per tick, and
        disconnect stuck clients."""
        loop = asyncio.get_running_loop()
        last = -self.tick_s
        watch_s = max(0.5, min(self.stuck_s / 4, 5.0))
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(watch_s):
                    await self._dirty.wait()
            if self._dirty.is_set():
                # The first change after a quiet spell goes out at once; later ones wait
                # for the tick, so a busy channel sends one frame per tick.
                delay = last + self.tick_s - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                self._dirty.clear()
                last = loop.time()
                self.flush()
            self.reap()

    def flush(self) -> None:
        """Send every channel's pending changes (one encode per channel)."""
        now = self.now()
        for ch in list(self.channels.values()):
            ch.flush(now)

    def reap(self) -> int:
        """Disconnect clients whose current write has made no progress for `stuck_s`."""
        limit = self.clock() - self.stuck_s
        stuck = [
            sub
            for ch in self.channels.values()
            for sub in ch.subscribers
            if sub.busy_since is not None and sub.busy_since < limit
        ]
        for sub in stuck:
            log.info("closing a live client stuck for over %.0f s", self.stuck_s)
            metrics.WS_CLIENTS_STUCK.labels(channel_kind(sub.channel.key)).inc()
            sub.kill()
            self.unsubscribe(sub)
        self.closed_stuck += len(stuck)
        return len(stuck)

    async def close(self) -> None:
        """Stop every sender (connections are closed by the server itself)."""
        subs = [sub for ch in self.channels.values() for sub in ch.subscribers]
        tasks = [sub.task for sub in subs]
        for sub in subs:
            sub.uncount()
        if self._resyncing is not None:
            tasks.append(self._resyncing)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.channels.clear()
        self._by_device.clear()
        self._fleetwide.clear()

    def stats(self) -> dict[str, Any]:
        """Counters for monitoring and tests."""
        subs = [sub for ch in self.channels.values() for sub in ch.subscribers]
        return {
            "subscribers": len(subs),
            "vehicles": len(self.fleet),
            "frames_sent": sum(s.frames_sent for s in subs),
            "frames_merged": sum(s.frames_merged for s in subs),
            "closed_stuck": self.closed_stuck,
        }

    # -- internals -------------------------------------------------------------------------

    def _load(self, fresh: bool) -> Awaitable[list[Vehicle]]:
        # Clients connecting together share one query. Reusing a query that started before
        # a client subscribed is safe: the fleet remembers every update the bus delivered
        # since, and the snapshot takes the newer of both. After a bus outage (`fresh`) the
        # fleet has gaps, so only a query started afterwards will do.
        if fresh or self._loading is None or self._loading.done():
            self._loading = asyncio.ensure_future(self._load_vehicles())
            self._loading.add_done_callback(_retrieve)
        return asyncio.shield(self._loading)

    def _forget(self, channel: Channel) -> None:
        if self.channels.get(channel.key) is channel:
            del self.channels[channel.key]
        self._fleetwide.pop(channel, None)
        device = getattr(channel.view, "device", None)
        if isinstance(device, str) and device in self._by_device:
            scoped = self._by_device[device]
            scoped.pop(channel, None)
            if not scoped:
                del self._by_device[device]

    async def _resync_all(self) -> None:
        try:
            vehicles = await self._load(fresh=True)
        except Exception as exc:
            log.warning("could not resend snapshots after a bus reconnect: %r", exc)
            return
        merged = self.fleet.absorb(vehicles)
        now = self.now()
        for ch in list(self.channels.values()):
            if ch.subscribers:
                text = ch.snapshot(now, merged)
                for sub in list(ch.subscribers):
                    sub.reset(text)


def _retrieve(future: asyncio.Future[Any]) -> None:
    # Mark a failed load's exception as seen: its awaiters may all have gone.
    if not future.cancelled():
        future.exception()
