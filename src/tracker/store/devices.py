"""Devices, API keys and the reads the dispatcher needs about them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from tracker.core import tokens
from tracker.core.model import Fix


@dataclass(frozen=True, slots=True)
class Device:
    """A registered device. `unique_id` is its public identity; `id` is internal."""

    id: int
    unique_id: str
    name: str
    enabled: bool


class DuplicateDevice(Exception):
    """A device with that unique id already exists."""


def _device(row: asyncpg.Record) -> Device:
    return Device(row["id"], row["unique_id"], row["name"], row["enabled"])


async def add_device(
    pool: asyncpg.Pool, name: str, unique_id: str | None = None
) -> tuple[Device, str]:
    """Register a device; returns it and its token (the only time the token exists)."""
    token = tokens.new_token()
    uid = unique_id or tokens.new_token()[:12]
    try:
        row = await pool.fetchrow(
            "INSERT INTO devices (unique_id, name, token_hash) VALUES ($1, $2, $3) "
            "RETURNING id, unique_id, name, enabled",
            uid,
            name,
            tokens.digest(token),
        )
    except asyncpg.UniqueViolationError as exc:
        raise DuplicateDevice(uid) from exc
    assert row is not None
    return _device(row), token


async def device_by_token(pool: asyncpg.Pool, token: str) -> Device | None:
    """The device owning `token`, enabled or not."""
    row = await pool.fetchrow(
        "SELECT id, unique_id, name, enabled FROM devices WHERE token_hash = $1",
        tokens.digest(token),
    )
    return _device(row) if row else None


async def device_by_unique_id(pool: asyncpg.Pool, unique_id: str) -> Device | None:
    """The device registered under `unique_id`."""
    row = await pool.fetchrow(
        "SELECT id, unique_id, name, enabled FROM devices WHERE unique_id = $1", unique_id
    )
    return _device(row) if row else None


async def devices_by_ids(pool: asyncpg.Pool, ids: list[int]) -> dict[int, Device]:
    """Devices by internal id."""
    rows = await pool.fetch(
        "SELECT id, unique_id, name, enabled FROM devices WHERE id = ANY($1::bigint[])", ids
    )
    return {r["id"]: _device(r) for r in rows}


async def set_enabled(pool: asyncpg.Pool, unique_id: str, enabled: bool) -> Device | None:
    """Enable or disable a device."""
    row = await pool.fetchrow(
        "UPDATE devices SET enabled = $2 WHERE unique_id = $1 "
        "RETURNING id, unique_id, name, enabled",
        unique_id,
        enabled,
    )
    return _device(row) if row else None


_LAST = """
SELECT d.id, d.unique_id, d.name, d.enabled,
       l.fix_time, l.received_at, ST_Y(l.geog::geometry) AS lat, ST_X(l.geog::geometry) AS lon,
       l.speed, l.course, l.accuracy, l.altitude, l.attributes
FROM devices d LEFT JOIN last_positions l ON l.device_id = d.id
"""


def last_position_json(row: asyncpg.Record) -> dict[str, Any] | None:
    """The public JSON of a last-position row (None when the device never reported)."""
    if row["fix_time"] is None:
        return None
    return {
        "time": row["fix_time"].isoformat(),
        "received_at": row["received_at"].isoformat(),
        "lat": row["lat"],
        "lon": row["lon"],
        "speed": row["speed"],
        "course": row["course"],
        "accuracy": row["accuracy"],
        "altitude": row["altitude"],
        "attributes": row["attributes"],
    }


async def devices_with_last(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    """Every device joined with its last position (if any), by name."""
    return list(await pool.fetch(_LAST + " ORDER BY d.name, d.unique_id"))


async def track(
    pool: asyncpg.Pool, device_id: int, start: datetime, end: datetime, limit: int
) -> list[asyncpg.Record]:
    """A device's stored positions between `start` and `end`, oldest first."""
    return list(
        await pool.fetch(
            "SELECT fix_time, received_at, ST_Y(geog::geometry) AS lat, "
            "ST_X(geog::geometry) AS lon, speed, course, accuracy, altitude, attributes "
            "FROM positions WHERE device_id = $1 AND fix_time >= $2 AND fix_time < $3 "
            "ORDER BY fix_time LIMIT $4",
            device_id,
            start,
            end,
            limit,
        )
    )


async def add_key(pool: asyncpg.Pool, name: str, role: str) -> str:
    """Create an API key for `role`; returns the key (shown once)."""
    key = tokens.new_token()
    await pool.execute(
        "INSERT INTO api_keys (name, role, key_hash) VALUES ($1, $2, $3)",
        name,
        role,
        tokens.digest(key),
    )
    return key


async def key_role(pool: asyncpg.Pool, key: str) -> str | None:
    """The role of an enabled API key, or None."""
    role: str | None = await pool.fetchval(
        "SELECT role FROM api_keys WHERE key_hash = $1 AND enabled", tokens.digest(key)
    )
    return role


async def last_fix(pool: asyncpg.Pool, device_id: int) -> Fix | None:
    """The device's last stored position as a fix (the jump filter's reference), or None."""
    row = await pool.fetchrow(
        "SELECT fix_time, ST_Y(geog::geometry) AS lat, ST_X(geog::geometry) AS lon, speed, "
        "course, accuracy, altitude FROM last_positions WHERE device_id = $1",
        device_id,
    )
    return None if row is None else fix_of(device_id, row)


def fix_of(device_id: int, row: asyncpg.Record) -> Fix:
    """A stored position (fix_time, lat, lon, speed, course, accuracy, altitude) as a fix."""
    return Fix(
        device_id=device_id,
        time=row["fix_time"],
        lat=row["lat"],
        lon=row["lon"],
        speed=row["speed"],
        course=row["course"],
        accuracy=row["accuracy"],
        altitude=row["altitude"],
    )
