"""Connection pool with the codecs and per-connection staging table the store relies on."""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson
import shapely

# Rows are COPY'd here first, then moved into `positions` with ON CONFLICT DO NOTHING,
# because COPY itself cannot skip duplicates. ON COMMIT DELETE ROWS empties it per batch.
STAGE_DDL = """
CREATE TEMP TABLE IF NOT EXISTS ingest_stage (
    seq integer NOT NULL,
    device_id bigint NOT NULL,
    fix_time timestamptz NOT NULL,
    received_at timestamptz NOT NULL,
    lon double precision NOT NULL,
    lat double precision NOT NULL,
    speed real, course real, accuracy real, altitude real,
    attributes jsonb NOT NULL
) ON COMMIT DELETE ROWS
"""

DB_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.ConnectionFailureError,
)


def _jsonb_encode(value: Any) -> bytes:
    return b"\x01" + orjson.dumps(value)


def _jsonb_decode(data: bytes) -> Any:
    return orjson.loads(data[1:])


async def init_connection(conn: asyncpg.Connection) -> None:
    """Register jsonb and PostGIS codecs (shapely geometries in and out), create staging."""
    await conn.set_type_codec(
        "jsonb", encoder=_jsonb_encode, decoder=_jsonb_decode, schema="pg_catalog", format="binary"
    )
    await conn.set_type_codec(
        "json", encoder=orjson.dumps, decoder=orjson.loads, schema="pg_catalog", format="binary"
    )
    for typename in ("geometry", "geography"):
        oid = await conn.fetchval(
            "SELECT t.oid FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
            "WHERE t.typname = $1",
            typename,
        )
        if oid is not None:
            await conn.set_type_codec(
                typename,
                encoder=lambda g: shapely.to_wkb(g, hex=False, include_srid=True),
                decoder=shapely.from_wkb,
                schema="public",
                format="binary",
            )
    if await conn.fetchval("SELECT to_regclass('public.positions') IS NOT NULL"):
        await conn.execute(STAGE_DDL)


async def create_pool(url: str, size: int) -> asyncpg.Pool:
    """A pool whose connections all carry the codecs; fails fast when PostgreSQL is down."""
    pool = await asyncpg.create_pool(
        url,
        min_size=0,
        max_size=size,
        init=init_connection,
        timeout=5.0,
        command_timeout=30.0,
    )
    assert pool is not None
    return pool
