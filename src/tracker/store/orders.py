"""Orders in PostgreSQL: every SQL statement about orders (and the geocoder's cache).

Write functions take the validated column values of `tracker.planning.orders` (a dict of
column name → value, with `lat`/`lon` for the location), so this module only speaks SQL.
The planner reads the day's orders with `orders_for_planning` and records where each one
went with `link_orders`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, TypeAlias

import asyncpg

from tracker.core.model import Event
from tracker.core.timeparse import parse_time
from tracker.planning.model import (
    CANCELLED,
    DISPATCHED,
    FINAL_STATUSES,
    LOCATED,
    PENDING,
    PLANNED,
    STOP_OUTCOMES,
    UNPLANNED,
    Candidate,
    Order,
    Window,
)

# A pool or a connection (in a transaction): both answer fetch/fetchrow/execute alike.
Conn: TypeAlias = "asyncpg.Pool | asyncpg.Connection"

_COLUMNS = """
o.id, o.external_id, o.kind, ST_Y(o.location::geometry) AS lat, ST_X(o.location::geometry) AS lon,
o.address, o.recipient, o.phone, o.email, o.windows, o.service_s, o.size, o.skills, o.priority,
o.notes, o.date, o.status, o.geocode_status, o.geocode_candidates, o.route_id, o.stop_id,
o.created_at, o.updated_at
"""

# Columns a caller may set (besides lat/lon, stored as `location`).
WRITABLE = (
    "external_id",
    "kind",
    "address",
    "recipient",
    "phone",
    "email",
    "windows",
    "service_s",
    "size",
    "skills",
    "priority",
    "notes",
    "date",
    "geocode_status",
    "geocode_candidates",
)


class DuplicateExternalId(Exception):
    """An order with that external id exists already (args[0] is the id)."""


class OrderClosed(Exception):
    """The order is delivered, failed or cancelled: it cannot change any more."""


@dataclass(frozen=True, slots=True)
class OrderFilter:
    """What `list_orders` selects; None means "any"."""

    date: date | None = None
    status: str | None = None
    kind: str | None = None
    geocode_status: str | None = None
    text: str | None = None  # matched against address, recipient, external id, notes


def _windows(raw: Any) -> tuple[Window, ...]:
    return tuple(Window(parse_time(s), parse_time(e)) for s, e in raw)


def order_from_row(row: asyncpg.Record) -> Order:
    """An `Order` from a row selected with this module's column list."""
    return Order(
        id=row["id"],
        external_id=row["external_id"],
        kind=row["kind"],
        lat=row["lat"],
        lon=row["lon"],
        address=row["address"],
        recipient=row["recipient"],
        phone=row["phone"],
        email=row["email"],
        windows=_windows(row["windows"]),
        service_s=row["service_s"],
        size=row["size"],
        skills=tuple(row["skills"]),
        priority=row["priority"],
        notes=row["notes"],
        date=row["date"],
        status=row["status"],
        geocode_status=row["geocode_status"],
        geocode_candidates=tuple(Candidate.from_json(c) for c in row["geocode_candidates"]),
        route_id=row["route_id"],
        stop_id=row["stop_id"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _assignments(fields: dict[str, Any], start: int) -> tuple[list[str], list[Any]]:
    """`col = $n` parts and their values for an INSERT/UPDATE of validated fields."""
    parts: list[str] = []
    values: list[Any] = []
    for name in WRITABLE:
        if name in fields:
            values.append(fields[name])
            parts.append(f"{name} = ${start + len(values) - 1}")
    if "lat" in fields or "lon" in fields:
        lat, lon = fields.get("lat"), fields.get("lon")
        if lat is None or lon is None:
            parts.append("location = NULL")
        else:
            values.extend([lon, lat])
            n = start + len(values) - 2
            parts.append(f"location = ST_SetSRID(ST_MakePoint(${n}, ${n + 1}), 4326)::geography")
    return parts, values


# Every column a new order has, with the value it takes when the caller left it out.
_NEW_DEFAULTS: dict[str, Any] = {
    "external_id": None,
    "kind": "delivery",
    "address": "",
    "recipient": "",
    "phone": "",
    "email": "",
    "windows": [],
    "service_s": 0.0,
    "size": {},
    "skills": [],
    "priority": 0,
    "notes": "",
    "date": None,
    "geocode_status": "given",
    "geocode_candidates": [],
}
_INSERT = (
    f"INSERT INTO orders (id, {', '.join(_NEW_DEFAULTS)}, location) VALUES ($1, "
    + ", ".join(f"${i}" for i in range(2, len(_NEW_DEFAULTS) + 2))
    + f", CASE WHEN ${len(_NEW_DEFAULTS) + 2}::float8 IS NULL THEN NULL ELSE "
    f"ST_SetSRID(ST_MakePoint(${len(_NEW_DEFAULTS) + 3}::float8, "
    f"${len(_NEW_DEFAULTS) + 2}::float8), 4326)::geography END)"
)


async def insert_orders(conn: asyncpg.Connection, batch: Sequence[dict[str, Any]]) -> list[Order]:
    """Insert validated orders in the caller's transaction, in order; all or none. One
    pipelined statement for the whole batch (a 10,000-row import is one round of them)."""
    if not batch:
        return []
    ids = [
        r["id"]
        for r in await conn.fetch(
            "SELECT nextval(pg_get_serial_sequence('orders', 'id')) AS id "
            "FROM generate_series(1, $1::int)",
            len(batch),
        )
    ]
    records = [
        (
            order_id,
            *(fields.get(name, default) for name, default in _NEW_DEFAULTS.items()),
            fields.get("lat"),
            fields.get("lon"),
        )
        for order_id, fields in zip(ids, batch, strict=True)
    ]
    try:
        await conn.executemany(_INSERT, records)
    except asyncpg.UniqueViolationError as exc:
        taken = re.search(r"=\((.*)\) already exists", str(getattr(exc, "detail", "") or ""))
        raise DuplicateExternalId(taken.group(1) if taken else None) from exc
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM orders o WHERE o.id = ANY($1::bigint[]) ORDER BY o.id", ids
    )
    return [order_from_row(r) for r in rows]


async def existing_external_ids(conn: Conn, ids: Iterable[str]) -> set[str]:
    """Which of `ids` are taken by stored orders."""
    rows = await conn.fetch(
        "SELECT external_id FROM orders WHERE external_id = ANY($1::text[])", list(ids)
    )
    return {r["external_id"] for r in rows}


async def get_order(conn: Conn, order_id: int) -> Order | None:
    """One order by id."""
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM orders o WHERE o.id = $1", order_id)
    return order_from_row(row) if row else None


def _where(f: OrderFilter) -> tuple[str, list[Any]]:
    conds: list[str] = []
    values: list[Any] = []

    def add(cond: str, value: Any) -> None:
        values.append(value)
        conds.append(cond.replace("$?", f"${len(values)}"))

    if f.date is not None:
        add("o.date = $?", f.date)
    if f.status is not None:
        add("o.status = $?", f.status)
    if f.kind is not None:
        add("o.kind = $?", f.kind)
    if f.geocode_status is not None:
        add("o.geocode_status = $?", f.geocode_status)
    if f.text:
        # strpos, not LIKE: the dispatcher's text is matched literally (no % or _ wildcards).
        add(
            "(strpos(lower(o.address || ' ' || o.recipient || ' ' || coalesce(o.external_id, '')"
            " || ' ' || o.notes || ' ' || o.phone || ' ' || o.email), lower($?)) > 0)",
            f.text,
        )
    return (" WHERE " + " AND ".join(conds)) if conds else "", values


async def list_orders(
    conn: Conn, f: OrderFilter, limit: int, after_id: int | None = None
) -> tuple[list[Order], int]:
    """Orders matching `f` by id (keyset paging after `after_id`), and how many match."""
    where, values = _where(f)
    total: int = await conn.fetchval(f"SELECT count(*) FROM orders o{where}", *values)
    page_where = where
    page_values = list(values)
    if after_id is not None:
        page_values.append(after_id)
        page_where += (" AND " if where else " WHERE ") + f"o.id > ${len(page_values)}"
    page_values.append(limit)
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM orders o{page_where} ORDER BY o.id LIMIT ${len(page_values)}",
        *page_values,
    )
    return [order_from_row(r) for r in rows], total


async def update_order(conn: Conn, order_id: int, fields: dict[str, Any]) -> Order | None:
    """Change an open order's fields; None when there is no such order, `OrderClosed` when it
    is finished."""
    parts, values = _assignments(fields, 2)
    parts.append("updated_at = now()")
    final = f"${len(values) + 2}::text[]"  # after $1 (the id) and the assigned values
    try:
        row = await conn.fetchrow(
            f"UPDATE orders AS o SET {', '.join(parts)} "
            f"WHERE o.id = $1 AND o.status <> ALL({final}) RETURNING {_COLUMNS}",
            order_id,
            *values,
            list(FINAL_STATUSES),
        )
    except asyncpg.UniqueViolationError as exc:
        raise DuplicateExternalId(fields.get("external_id")) from exc
    if row is not None:
        return order_from_row(row)
    if await conn.fetchval("SELECT 1 FROM orders WHERE id = $1", order_id) is None:
        return None
    raise OrderClosed(order_id)


async def cancel_order(conn: Conn, order_id: int) -> Order | None:
    """Cancel an order not yet delivered or failed (cancelling twice is fine)."""
    row = await conn.fetchrow(
        f"UPDATE orders AS o SET status = $2, updated_at = now() "
        f"WHERE o.id = $1 AND o.status NOT IN ('delivered', 'failed') RETURNING {_COLUMNS}",
        order_id,
        CANCELLED,
    )
    if row is not None:
        return order_from_row(row)
    if await conn.fetchval("SELECT 1 FROM orders WHERE id = $1", order_id) is None:
        return None
    raise OrderClosed(order_id)


async def orders_for_planning(
    conn: Conn, day: date, ids: Sequence[int] | None = None
) -> list[Order]:
    """The planner's input: `ids` (any status), or else the day's unplanned orders that have
    coordinates. Sorted by id."""
    if ids is not None:
        rows = await conn.fetch(
            f"SELECT {_COLUMNS} FROM orders o WHERE o.id = ANY($1::bigint[]) ORDER BY o.id",
            list(ids),
        )
    else:
        rows = await conn.fetch(
            f"SELECT {_COLUMNS} FROM orders o WHERE o.date = $1 AND o.status = $2 "
            "AND o.geocode_status = ANY($3::text[]) AND o.location IS NOT NULL ORDER BY o.id",
            day,
            UNPLANNED,
            list(LOCATED),
        )
    return [order_from_row(r) for r in rows]


async def link_orders(
    conn: Conn,
    links: Sequence[tuple[int, int | None, int | None]],
    status: str,
) -> None:
    """Record (order id, route id, stop id) for each planned or dispatched order and set its
    status (`unplanned` with None ids takes orders off their routes)."""
    await conn.executemany(
        "UPDATE orders SET route_id = $2, stop_id = $3, status = $4, updated_at = now() "
        "WHERE id = $1",
        [(order_id, route_id, stop_id, status) for order_id, route_id, stop_id in links],
    )


async def follow_stop_events(
    conn: asyncpg.Connection, device: str, stored: Sequence[tuple[int, Event]]
) -> None:
    """A routing event sink (in the transaction that stores the events): a completed stop
    delivers its orders, a failed one fails them. Only planned or dispatched orders move,
    so a cancelled order stays cancelled."""
    for _, event in stored:
        status = STOP_OUTCOMES.get(event.type)
        if status is None or event.stop_id is None:
            continue
        await conn.execute(
            "UPDATE orders SET status = $2, updated_at = now() "
            "WHERE stop_id = $1 AND status = ANY($3::text[])",
            event.stop_id,
            status,
            [PLANNED, DISPATCHED],
        )


async def pending_geocode(conn: Conn, limit: int) -> list[Order]:
    """Orders whose address waits for the geocoder, oldest first."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM orders o WHERE o.geocode_status = $1 ORDER BY o.id LIMIT $2",
        PENDING,
        limit,
    )
    return [order_from_row(r) for r in rows]


async def set_geocode(
    conn: Conn,
    order_id: int,
    status: str,
    lat: float | None,
    lon: float | None,
    candidates: Sequence[Candidate],
    address: str,
) -> None:
    """Store the geocoder's verdict on `address`, unless the order was edited since (given
    coordinates, or another address)."""
    await conn.execute(
        "UPDATE orders SET geocode_status = $2, geocode_candidates = $3, updated_at = now(), "
        "location = CASE WHEN $4::float8 IS NULL THEN NULL "
        "ELSE ST_SetSRID(ST_MakePoint($5::float8, $4::float8), 4326)::geography END "
        "WHERE id = $1 AND geocode_status = 'pending' AND address = $6",
        order_id,
        status,
        [c.to_json() for c in candidates],
        lat,
        lon,
        address,
    )


async def cached_geocode(conn: Conn, endpoint: str, query: str) -> list[Candidate] | None:
    """The geocoder's stored answer to `query`, if it was asked before."""
    raw = await conn.fetchval(
        "SELECT results FROM geocode_cache WHERE endpoint = $1 AND query = $2", endpoint, query
    )
    if raw is None:
        return None
    return [Candidate.from_json(c) for c in raw]


async def cache_geocode(
    conn: Conn, endpoint: str, query: str, candidates: Sequence[Candidate], now: datetime
) -> None:
    """Remember the geocoder's answer to `query`."""
    await conn.execute(
        "INSERT INTO geocode_cache (endpoint, query, results, created_at) VALUES ($1, $2, $3, $4) "
        "ON CONFLICT (endpoint, query) DO UPDATE SET results = EXCLUDED.results, "
        "created_at = EXCLUDED.created_at",
        endpoint,
        query,
        [c.to_json() for c in candidates],
        now,
    )
