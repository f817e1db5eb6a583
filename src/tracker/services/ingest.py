"""Runs the pipeline's first steps for each request: filter → store (group commit) →
publish → ack; the route steps follow in the route work (see `tracker.core.pipeline`)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from cachetools import LRUCache

from tracker import offload
from tracker.core import filters, messages, pipeline
from tracker.core.model import Fix, JsonDict, Reject
from tracker.live.bus import Bus
from tracker.protocols.base import Decoded
from tracker.store.devices import Device
from tracker.store.writer import PositionRow, StoreUnavailable, WriteResult

log = logging.getLogger(__name__)

# A device's last stored position, from the store (a reference this instance lacks).
Reference = Callable[[int], Awaitable[Fix | None]]

_REFERENCES = 200_000  # devices whose reference fix an instance keeps


class Writer(Protocol):
    """The group-commit writer (`tracker.store.writer.PositionWriter`)."""

    async def write(self, rows: Sequence[PositionRow]) -> WriteResult: ...


class RouteQueue(Protocol):
    """Where committed fixes go next: the route work (`tracker.services.route_work`)."""

    def notify(self, device_id: int, device: str, fixes: list[Fix]) -> None: ...


@dataclass(slots=True)
class IngestResult:
    """What the client is told: counts, and each rejected ping with its reason."""

    stored: int = 0
    duplicates: int = 0
    rejects: list[Reject] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """The 202 body of the native API."""
        return {
            "stored": self.stored,
            "duplicates": self.duplicates,
            "rejected": len(self.rejects),
            "rejects": [{"index": r.index, "reason": r.reason} for r in self.rejects],
        }


def _rows(device_id: int, accepted: list[tuple[int, Fix]], now: datetime) -> list[PositionRow]:
    return [
        (
            device_id,
            f.time,
            now,
            (f.lon, f.lat),
            f.speed,
            f.course,
            f.accuracy,
            f.altitude,
            f.attributes,
        )
        for _, f in accepted
    ]


def _screened(
    device_id: int,
    fixes: list[tuple[int, Fix]],
    last: Fix | None,
    now: datetime,
    cfg: filters.FilterConfig,
) -> tuple[pipeline.Admission, list[PositionRow]]:
    admission = pipeline.admit(fixes, last, now, cfg)
    return admission, _rows(device_id, admission.accepted, now)


class IngestService:
    """Stores a device's decoded pings, publishes the ones that moved it forward and hands
    the stored ones to the route work."""

    def __init__(
        self,
        writer: Writer,
        bus: Bus,
        cfg: filters.FilterConfig,
        reference: Reference,
        routes: RouteQueue,
    ) -> None:
        self._writer = writer
        self._bus = bus
        self._cfg = cfg
        self._reference = reference
        self._routes = routes
        # unique id -> the device's last position, the jump filter's reference: loaded from
        # the store once, then kept current by every instance's `positions` messages, so
        # all workers judge a device against the same fix.
        self._last: LRUCache[str, Fix] = LRUCache(_REFERENCES)

    def on_bus(self, channel: str, message: JsonDict) -> None:
        """Bus handler: another instance (or this one) stored a newer last position."""
        if channel != messages.POSITIONS or message.get("type") != "position":
            return
        device = message.get("device")
        known = self._last.get(device) if isinstance(device, str) else None
        if known is None or not isinstance(device, str):
            return  # not a device judged here: loaded from the store when it is
        fix = messages.position_fix(known.device_id, message)
        if fix is not None and fix.time > known.time:
            self._last[device] = fix

    def on_bus_resumed(self) -> None:
        """Bus handler for a reconnect: positions may have been missed; reload as needed."""
        self._last.clear()

    async def ingest(self, device: Device, decoded: Decoded, now: datetime) -> IngestResult:
        """Filter, store and publish; returns after the commit. Raises StoreUnavailable."""
        last = self._last.get(device.unique_id)
        if last is None:
            try:
                last = await self._reference(device.id)
            except Exception as exc:
                raise StoreUnavailable(f"database unavailable: {type(exc).__name__}") from exc
        # Fixes from protocols that name the device in the payload carry device_id 0 until
        # here: the rows get the device's id, and only fixes handed on are copied with it
        # (a copy costs ~4 µs a ping, so the native decoder sets it itself). Thousands of
        # pings take a good part of a second to filter: in a thread then.
        heavy = len(decoded.fixes) >= offload.HEAVY_ITEMS
        admission, rows = await offload.run(
            heavy, _screened, device.id, decoded.fixes, last, now, self._cfg
        )
        accepted = admission.accepted
        result = IngestResult(
            rejects=sorted(decoded.rejects + admission.rejects, key=lambda r: r.index)
        )
        if not accepted:
            self._keep(device.unique_id, last)
            return result
        written = await self._writer.write(rows)
        result.stored = sum(written.stored)
        result.duplicates = len(accepted) - result.stored
        moved = pipeline.newest(accepted, written.advanced)
        if moved is not None:
            last = moved if moved.device_id == device.id else _owned(moved, device.id)
            await self._bus.publish(
                messages.POSITIONS, messages.position(device.unique_id, device.name, last)
            )
        self._keep(device.unique_id, last)
        if result.stored:
            stored = sorted(
                (
                    f if f.device_id == device.id else _owned(f, device.id)
                    for (_, f), ok in zip(accepted, written.stored, strict=True)
                    if ok
                ),
                key=lambda f: f.time,
            )
            self._routes.notify(device.id, device.unique_id, stored)
        return result

    def _keep(self, device: str, fix: Fix | None) -> None:
        known = self._last.get(device)
        if fix is not None and (known is None or fix.time > known.time):
            self._last[device] = fix


def _owned(fix: Fix, device_id: int) -> Fix:
    return dataclasses.replace(fix, device_id=device_id)
