"""Credentials' administration: dispatcher keys listed and revoked, device tokens rotated.

Keys and devices are never deleted: a revoked key keeps its row (who had access, until
when), a disabled device keeps its history.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from tracker.core import tokens
from tracker.store.devices import Device


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A dispatcher or admin API key as the list shows it (never the key itself)."""

    id: int
    name: str
    role: str
    enabled: bool
    created_at: datetime
    revoked_at: datetime | None

    def to_json(self) -> dict[str, Any]:
        """The public JSON of a key."""
        return {
            "id": self.id,
            "name": self.name,
            "role": self.role,
            "enabled": self.enabled,
            "created_at": self.created_at.isoformat(),
            "revoked_at": None if self.revoked_at is None else self.revoked_at.isoformat(),
        }


_KEY_COLUMNS = "id, name, role, enabled, created_at, revoked_at"


def _key(row: asyncpg.Record) -> ApiKey:
    return ApiKey(
        row["id"], row["name"], row["role"], row["enabled"], row["created_at"], row["revoked_at"]
    )


async def create_key(pool: asyncpg.Pool, name: str, role: str) -> tuple[ApiKey, str]:
    """A new API key; returns its row and the key itself (shown once, stored hashed)."""
    key = tokens.new_token()
    row = await pool.fetchrow(
        f"INSERT INTO api_keys (name, role, key_hash) VALUES ($1, $2, $3) RETURNING {_KEY_COLUMNS}",
        name,
        role,
        tokens.digest(key),
    )
    assert row is not None
    return _key(row), key


async def list_keys(pool: asyncpg.Pool) -> list[ApiKey]:
    """Every key, newest first (revoked ones too)."""
    rows = await pool.fetch(f"SELECT {_KEY_COLUMNS} FROM api_keys ORDER BY id DESC")
    return [_key(r) for r in rows]


async def revoke_key(pool: asyncpg.Pool, key_id: int) -> ApiKey | None:
    """Disable a key for good (a second revocation keeps the first time); None if unknown."""
    row = await pool.fetchrow(
        "UPDATE api_keys SET enabled = false, revoked_at = COALESCE(revoked_at, now()) "
        f"WHERE id = $1 RETURNING {_KEY_COLUMNS}",
        key_id,
    )
    return _key(row) if row else None


async def rotate_token(pool: asyncpg.Pool, unique_id: str) -> tuple[Device, str] | None:
    """Give a device a new token (the old one stops working); None for an unknown device."""
    token = tokens.new_token()
    row = await pool.fetchrow(
        "UPDATE devices SET token_hash = $2, token_issued_at = now() WHERE unique_id = $1 "
        "RETURNING id, unique_id, name, enabled",
        unique_id,
        tokens.digest(token),
    )
    if row is None:
        return None
    return Device(row["id"], row["unique_id"], row["name"], row["enabled"]), token
