"""The dispatcher's reads and changes of routes: list by day, status and van; cancel;
hand to another van; the planned path split where the van has got to; event history.

Every change runs under the device's route-progress lock (`routes.lock_device`) so it
never interleaves with a ping advancing the same route on any instance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import asyncpg

from tracker.core.model import Event, JsonDict
from tracker.store import routes as store

# Why a route ended early (routes.ended_reason).
CANCELLED_BY_DISPATCHER = "cancelled"
REPLACED = "replaced"

# Route event types this module stores (the pipeline's own are in core.model.EventType).
ROUTE_CANCELLED = "route.cancelled"
ROUTE_REASSIGNED = "route.reassigned"

STATUSES = (store.ACTIVE, store.COMPLETED, store.CANCELLED)


@dataclass(frozen=True, slots=True)
class RouteQuery:
    """Filters and paging of the route list (all optional but paging)."""

    day: date | None = None  # UTC day of the planned start
    status: str | None = None
    device: str | None = None  # unique id
    limit: int = 50
    offset: int = 0


async def list_routes(pool: asyncpg.Pool, query: RouteQuery) -> tuple[list[JsonDict], int]:
    """Route JSON of the matching routes, newest planned start first, and how many match."""
    async with pool.acquire() as conn, conn.transaction(readonly=True):
        rows = await conn.fetch(
            """
            SELECT r.id, d.unique_id AS device, r.planned_start, r.status, r.straight_line,
                   r.off_route, r.ended_reason, count(*) OVER () AS total
            FROM routes r JOIN devices d ON d.id = r.device_id
            WHERE ($1::date IS NULL OR (r.planned_start AT TIME ZONE 'UTC')::date = $1)
              AND ($2::text IS NULL OR r.status = $2)
              AND ($3::text IS NULL OR d.unique_id = $3)
            ORDER BY r.planned_start DESC, r.id DESC
            LIMIT $4 OFFSET $5
            """,
            query.day,
            query.status,
            query.device,
            query.limit,
            query.offset,
        )
        total = rows[0]["total"] if rows else 0
        if not rows and query.offset > 0:
            # Past the last page: still say how many there are.
            total = await conn.fetchval(
                """
                SELECT count(*) FROM routes r JOIN devices d ON d.id = r.device_id
                WHERE ($1::date IS NULL OR (r.planned_start AT TIME ZONE 'UTC')::date = $1)
                  AND ($2::text IS NULL OR r.status = $2)
                  AND ($3::text IS NULL OR d.unique_id = $3)
                """,
                query.day,
                query.status,
                query.device,
            )
        stops = await conn.fetch(
            store._STOP_COLUMNS + " WHERE route_id = ANY($1::bigint[]) ORDER BY route_id, seq",
            [r["id"] for r in rows],
        )
    by_route: dict[int, list[asyncpg.Record]] = {}
    for s in stops:
        by_route.setdefault(s["route_id"], []).append(s)
    routes = [
        {**store.route_json(r, by_route.get(r["id"], [])), "ended_reason": r["ended_reason"]}
        for r in rows
    ]
    return routes, int(total)


async def ended_reason(conn: asyncpg.Connection | asyncpg.Pool, route_id: int) -> str | None:
    """Why a route ended early, if it did."""
    reason: str | None = await conn.fetchval(
        "SELECT ended_reason FROM routes WHERE id = $1", route_id
    )
    return reason


async def active_route_ids(conn: asyncpg.Connection, device_id: int) -> list[int]:
    """Every active route of a device (at most one once routes replace each other)."""
    rows = await conn.fetch(
        "SELECT id FROM routes WHERE device_id = $1 AND status = 'active' ORDER BY id",
        device_id,
    )
    return [r["id"] for r in rows]


async def end_routes(conn: asyncpg.Connection, route_ids: Sequence[int], reason: str) -> None:
    """Mark routes cancelled (their pending stops stay pending: never visited)."""
    await conn.execute(
        "UPDATE routes SET status = 'cancelled', ended_reason = $2, updated_at = now() "
        "WHERE id = ANY($1::bigint[]) AND status = 'active'",
        list(route_ids),
        reason,
    )


async def end_active(
    conn: asyncpg.Connection, device_id: int, replaced_by: int, now: datetime
) -> list[Event]:
    """Inside the transaction creating route `replaced_by` (device lock held): cancel the
    device's other active routes. Returns the events to store and publish."""
    ended = [r for r in await active_route_ids(conn, device_id) if r != replaced_by]
    if not ended:
        return []
    await end_routes(conn, ended, REPLACED)
    return [
        Event(
            ROUTE_CANCELLED,
            now,
            device_id,
            route_id,
            None,
            {"reason": REPLACED, "replaced_by": replaced_by},
        )
        for route_id in ended
    ]


async def move_route(
    conn: asyncpg.Connection, route_id: int, device_id: int, state: JsonDict
) -> None:
    """Give a route to another device, with a fresh progress state. The revision moves on,
    so every instance plans the route again (its plan names the device)."""
    await conn.execute(
        "UPDATE routes SET device_id = $2, route_state = $3, off_route = false, "
        "revision = revision + 1, state_seq = state_seq + 1, updated_at = now() WHERE id = $1",
        route_id,
        device_id,
        state,
    )


async def route_path(pool: asyncpg.Pool, route_id: int) -> asyncpg.Record | None:
    """A route's planned path split where the van has got to: GeoJSON of the part driven
    and the part ahead, the path's length and the distance along it so far (metres)."""
    return await pool.fetchrow(
        """
        WITH r AS (
            SELECT path::geometry AS g, ST_Length(path) AS length_m, straight_line,
                   LEAST(GREATEST(COALESCE((route_state->>'progress_m')::float8, 0), 0),
                         ST_Length(path)) AS done_m
            FROM routes WHERE id = $1
        ), f AS (
            SELECT g, length_m, done_m, straight_line,
                   CASE WHEN length_m > 0 THEN done_m / length_m ELSE 0 END AS frac
            FROM r
        )
        SELECT length_m, done_m, straight_line, ST_AsGeoJSON(g, 6) AS planned,
               CASE WHEN frac > 0 THEN ST_AsGeoJSON(ST_LineSubstring(g, 0, frac), 6) END
                   AS driven,
               CASE WHEN frac < 1 THEN ST_AsGeoJSON(ST_LineSubstring(g, frac, 1), 6) END
                   AS ahead
        FROM f
        """,
        route_id,
    )


@dataclass(frozen=True, slots=True)
class EventQuery:
    """Filters and paging of the event history."""

    device: str | None = None  # unique id
    types: tuple[str, ...] = ()
    route_id: int | None = None
    since: datetime | None = None
    before_id: int | None = None  # paging: events older than this id
    limit: int = 100


async def recent_events(pool: asyncpg.Pool, query: EventQuery) -> list[dict[str, Any]]:
    """The newest matching events first, each as the live feed shows it (with its id)."""
    rows = await pool.fetch(
        """
        SELECT e.id, e.type, e.time, e.route_id, e.stop_id, e.data, d.unique_id AS device
        FROM events e JOIN devices d ON d.id = e.device_id
        WHERE ($1::text IS NULL OR d.unique_id = $1)
          AND (cardinality($2::text[]) = 0 OR e.type = ANY($2::text[]))
          AND ($3::bigint IS NULL OR e.route_id = $3)
          AND ($4::timestamptz IS NULL OR e.time >= $4)
          AND ($5::bigint IS NULL OR e.id < $5)
        ORDER BY e.id DESC
        LIMIT $6
        """,
        query.device,
        list(query.types),
        query.route_id,
        query.since,
        query.before_id,
        query.limit,
    )
    return [
        {
            "id": r["id"],
            "type": r["type"],
            "time": r["time"].isoformat(),
            "device": r["device"],
            "route_id": r["route_id"],
            "stop_id": r["stop_id"],
            "data": r["data"],
        }
        for r in rows
    ]


async def last_position(pool: asyncpg.Pool, unique_id: str) -> tuple[float, float] | None:
    """(lat, lon) of a device's last known position, or None."""
    row = await pool.fetchrow(
        "SELECT ST_Y(l.geog::geometry) AS lat, ST_X(l.geog::geometry) AS lon "
        "FROM last_positions l JOIN devices d ON d.id = l.device_id WHERE d.unique_id = $1",
        unique_id,
    )
    return None if row is None else (row["lat"], row["lon"])


async def keep_link_salts(pool: asyncpg.Pool, route_id: int, salts: Sequence[bytes]) -> None:
    """The salts of a new route's link tokens, in stop order."""
    await pool.execute(
        "UPDATE stops SET tracking_salt = v.salt "
        "FROM unnest($2::bytea[]) WITH ORDINALITY AS v(salt, seq) "
        "WHERE stops.route_id = $1 AND stops.seq = v.seq",
        route_id,
        list(salts),
    )


async def keep_link_salt(pool: asyncpg.Pool, stop_id: int, salt: bytes | None) -> None:
    """A re-issued link's salt (None: the new token is random and cannot be listed)."""
    await pool.execute("UPDATE stops SET tracking_salt = $2 WHERE id = $1", stop_id, salt)


async def link_salts(
    pool: asyncpg.Pool, route_ids: Sequence[int]
) -> dict[int, tuple[bytes, bytes]]:
    """stop id -> (salt, token digest) of the stops whose links can be made again."""
    rows = await pool.fetch(
        "SELECT id, tracking_salt, tracking_hash FROM stops "
        "WHERE route_id = ANY($1::bigint[]) AND tracking_salt IS NOT NULL "
        "AND tracking_hash IS NOT NULL",
        list(route_ids),
    )
    return {r["id"]: (bytes(r["tracking_salt"]), bytes(r["tracking_hash"])) for r in rows}
