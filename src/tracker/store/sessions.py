"""Sign-in sessions (sql/008_hardening.sql): opened with a dispatcher key or the admin token,
found by the digest of the cookie's random id, listed and revoked by their numeric id."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from tracker.core import tokens


@dataclass(frozen=True, slots=True)
class Session:
    """A live session: whose it is and when it ends."""

    id: int
    role: str
    key_id: int | None
    credential_hash: bytes
    expires_at: datetime


_COLUMNS = "s.id, s.role, s.key_id, s.credential_hash, s.expires_at"


def _session(row: asyncpg.Record) -> Session:
    return Session(
        row["id"], row["role"], row["key_id"], bytes(row["credential_hash"]), row["expires_at"]
    )


async def key_by_token(pool: asyncpg.Pool, key: str) -> tuple[int, str] | None:
    """(id, role) of an enabled API key."""
    row = await pool.fetchrow(
        "SELECT id, role FROM api_keys WHERE key_hash = $1 AND enabled", tokens.digest(key)
    )
    return (row["id"], row["role"]) if row else None


async def open_session(
    pool: asyncpg.Pool,
    role: str,
    key_id: int | None,
    credential: str,
    max_age_s: float,
    user_agent: str,
    client: str,
) -> tuple[Session, str]:
    """A new session and the random id its cookie carries (the only time it exists)."""
    secret = tokens.new_token()
    async with pool.acquire() as conn, conn.transaction():
        # Expired sessions go when new ones come: the table holds only live ones for long.
        await conn.execute("DELETE FROM sessions WHERE expires_at < now()")
        row = await conn.fetchrow(
            "INSERT INTO sessions AS s (token_hash, role, key_id, credential_hash, expires_at, "
            "user_agent, client) VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5), "
            f"$6, $7) RETURNING {_COLUMNS}",
            tokens.digest(secret),
            role,
            key_id,
            tokens.digest(credential),
            max_age_s,
            user_agent[:300],
            client[:100],
        )
    assert row is not None
    return _session(row), secret


async def session_by_token(pool: asyncpg.Pool, secret: str) -> Session | None:
    """The live session whose cookie holds `secret`: not expired, and its key still enabled."""
    row = await pool.fetchrow(
        f"SELECT {_COLUMNS} FROM sessions s LEFT JOIN api_keys k ON k.id = s.key_id "
        "WHERE s.token_hash = $1 AND s.expires_at > now() AND (s.key_id IS NULL OR k.enabled)",
        tokens.digest(secret),
    )
    return _session(row) if row else None


async def list_sessions(pool: asyncpg.Pool, key_id: int | None) -> list[asyncpg.Record]:
    """Live sessions of one key, or every live session (`key_id` None: the admin's view)."""
    return list(
        await pool.fetch(
            "SELECT s.id, s.role, s.key_id, k.name AS key_name, s.created_at, s.last_seen_at, "
            "s.expires_at, s.user_agent, s.client FROM sessions s "
            "LEFT JOIN api_keys k ON k.id = s.key_id "
            "WHERE s.expires_at > now() AND ($1::bigint IS NULL OR s.key_id = $1) "
            "ORDER BY s.created_at DESC, s.id DESC LIMIT 1000",
            key_id,
        )
    )


async def delete_session(pool: asyncpg.Pool, session_id: int, key_id: int | None) -> bool:
    """End a session (of `key_id` only, unless None: the admin may end any)."""
    done: str = await pool.execute(
        "DELETE FROM sessions WHERE id = $1 AND ($2::bigint IS NULL OR key_id = $2)",
        session_id,
        key_id,
    )
    return done.endswith(" 1")


async def touch(pool: asyncpg.Pool, session_id: int) -> None:
    """Note that a session was used (shown in the list)."""
    await pool.execute("UPDATE sessions SET last_seen_at = now() WHERE id = $1", session_id)


async def disable_key(pool: asyncpg.Pool, key_id: int) -> bool:
    """Disable an API key (its sessions end with it)."""
    done: str = await pool.execute(
        "UPDATE api_keys SET enabled = false WHERE id = $1 AND enabled", key_id
    )
    return done.endswith(" 1")
