"""Ordered, idempotent migrations from `sql/NNN_name.sql`, recorded in `schema_migrations`."""

from __future__ import annotations

import os
from pathlib import Path

import asyncpg

_LOCK_KEY = 0x7472_6163  # any constant; serialises concurrent `tracker migrate` runs


def sql_dir() -> Path:
    """Where the migration files are: TRACKER_SQL_DIR, else `sql/` of the source checkout."""
    configured = os.environ.get("TRACKER_SQL_DIR")
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[3] / "sql"


def migration_files(directory: Path | None = None) -> list[Path]:
    """The `NNN_*.sql` files in apply order."""
    files = sorted((directory or sql_dir()).glob("[0-9][0-9][0-9]_*.sql"))
    if not files:
        raise FileNotFoundError(f"no migrations found in {directory or sql_dir()}")
    return files


async def migrate(url: str, directory: Path | None = None) -> list[str]:
    """Apply every migration not yet recorded, each in its own transaction. Returns their names."""
    conn = await asyncpg.connect(url)
    applied: list[str] = []
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")}
        for path in migration_files(directory):
            if path.name in done:
                continue
            async with conn.transaction():
                await conn.execute(path.read_text())
                await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", path.name)
            applied.append(path.name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
        await conn.close()
    return applied


async def ensure_database(url: str) -> None:
    """Create the database named in `url` when it does not exist (connecting to `postgres`)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    try:
        conn = await asyncpg.connect(url)
    except asyncpg.InvalidCatalogNameError:
        admin = await asyncpg.connect(urlunsplit(parts._replace(path="/postgres")))
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        except asyncpg.DuplicateDatabaseError:
            pass
        finally:
            await admin.close()
    else:
        await conn.close()
