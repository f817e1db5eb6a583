"""Drives the core for each request: decode → filter → store (group commit) → publish → ack."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tracker import offload
from tracker.core import filters
from tracker.core.model import Fix, Reject
from tracker.live.bus import Bus
from tracker.protocols.base import Decoded
from tracker.store.devices import Device
from tracker.store.writer import PositionRow, PositionWriter

log = logging.getLogger(__name__)

POSITIONS_CHANNEL = "positions"

# Called after a device's fixes committed, with the newly stored ones in time order.
AfterCommit = Callable[[Device, list[Fix]], Awaitable[None]]


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


def position_message(device: Device, fix: Fix) -> dict[str, Any]:
    """The bus message for a device's new last position."""
    return {
        "type": "position",
        "device": device.unique_id,
        "name": device.name,
        "time": fix.time.isoformat(),
        "lat": fix.lat,
        "lon": fix.lon,
        "speed": fix.speed,
        "course": fix.course,
        "accuracy": fix.accuracy,
    }


def _screened(
    device_id: int,
    fixes: list[tuple[int, Fix]],
    last: Fix | None,
    now: datetime,
    cfg: filters.FilterConfig,
) -> tuple[list[tuple[int, Fix]], list[Reject], list[PositionRow]]:
    """The filters' verdicts on a device's fixes, and the accepted ones as rows to store."""
    accepted, rejects = filters.screen(fixes, last, now, cfg)
    rows: list[PositionRow] = [
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
    return accepted, rejects, rows


class IngestService:
    """Stores a device's decoded pings and publishes the ones that moved it forward."""

    def __init__(self, writer: PositionWriter, bus: Bus, cfg: filters.FilterConfig) -> None:
        self._writer = writer
        self._bus = bus
        self._cfg = cfg
        # Latest accepted fix per device seen by this instance: the jump filter's reference.
        self._last: dict[int, Fix] = {}
        self.after_commit: list[AfterCommit] = []

    async def ingest(self, device: Device, decoded: Decoded, now: datetime) -> IngestResult:
        """Filter, store and publish; returns after the commit. Raises StoreUnavailable."""
        # Fixes from protocols that name the device in the payload carry device_id 0 until
        # here: the rows get the device's id below, and only fixes handed on to hooks are
        # copied with it (a copy costs ~4 µs a ping, so the native decoder sets it itself).
        # Thousands of pings take a good part of a second to filter: in a thread then.
        heavy = len(decoded.fixes) >= offload.HEAVY_ITEMS
        last = self._last.get(device.id)
        accepted, rejects, rows = await offload.run(
            heavy, _screened, device.id, decoded.fixes, last, now, self._cfg
        )
        result = IngestResult(rejects=sorted(decoded.rejects + rejects, key=lambda r: r.index))
        if not accepted:
            return result
        written = await self._writer.write(rows)
        result.stored = sum(written.stored)
        result.duplicates = len(accepted) - result.stored
        newest = [f for (_, f), moved in zip(accepted, written.advanced, strict=True) if moved]
        if newest:
            last = newest[-1]
            self._last[device.id] = last
            await self._bus.publish(POSITIONS_CHANNEL, position_message(device, last))
        if result.stored and self.after_commit:
            stored = sorted(
                (
                    f if f.device_id == device.id else dataclasses.replace(f, device_id=device.id)
                    for (_, f), ok in zip(accepted, written.stored, strict=True)
                    if ok
                ),
                key=lambda f: f.time,
            )
            for hook in self.after_commit:
                try:
                    await hook(device, stored)
                except Exception:
                    # The pings are committed; a failing follow-up must not turn the ack
                    # into an error that makes the phone resend them.
                    log.exception("after-commit hook failed for device %s", device.unique_id)
        return result
