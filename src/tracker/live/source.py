"""Where snapshots come from: every device's last position in PostgreSQL, as live vehicles."""

from __future__ import annotations

from typing import Any

import asyncpg

from tracker.live.fleet import Vehicle
from tracker.store import devices as store


def _real(value: float | None) -> float | None:
    # The columns are float4: widened to a Python float they grow noise digits
    # (12.3 → 12.300000190734863); seven significant digits is what float4 holds.
    return None if value is None else float(f"{value:.7g}")


def vehicle_from_row(row: Any) -> Vehicle:
    """The live Vehicle of a device row joined with its last position."""
    return {
        "id": row["unique_id"],
        "name": row["name"],
        "time": row["fix_time"].isoformat(),
        "lat": row["lat"],
        "lon": row["lon"],
        "speed": _real(row["speed"]),
        "course": _real(row["course"]),
        "accuracy": _real(row["accuracy"]),
        "route": None,
    }


async def load_vehicles(pool: asyncpg.Pool) -> list[Vehicle]:
    """Every device that has a last position."""
    rows = await store.devices_with_last(pool)
    return [vehicle_from_row(r) for r in rows if r["fix_time"] is not None]
