"""Routes, stops and events in PostgreSQL: every SQL statement the route feature runs.

A route's live progress is stored with it (`routes.route_state`, the stops' status and
ETA columns), so any server instance can take the next ping of a device and every
instance serves the same ETAs. Writers serialise per device with `lock_device`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import shapely

from tracker.core.model import Event, JsonDict, Route, Stop

ACTIVE = "active"
COMPLETED = "completed"
CANCELLED = "cancelled"

# Two-key advisory locks live in their own key space, apart from the single-key locks
# of migrations and partition creation; this first key names "route progress".
LOCK_SPACE = 0x524F5554  # "ROUT"


@dataclass(frozen=True, slots=True)
class RouteHead:
    """The parts of a route row the ingest hook needs on every batch (not the path)."""

    id: int
    device_id: int
    status: str
    state: JsonDict
    created_at: datetime
    revision: int = 0  # bumped when re-planning replaces the stops and path


@dataclass(frozen=True, slots=True)
class StopValues:
    """A stop's live columns, as written after each change."""

    stop_id: int
    status: str
    reason: str | None
    arrived_at: datetime | None
    completed_at: datetime | None
    eta: datetime | None
    eta_earliest: datetime | None = None  # the ETA's 80 % interval
    eta_latest: datetime | None = None
    deferred: bool = False  # passed by without a visit, expected after the others


async def lock_device(conn: asyncpg.Connection, device_id: int) -> None:
    """Take the device's route-progress lock until the transaction ends (every instance)."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock($1::int, ($2::bigint % 2147483647)::int)",
        LOCK_SPACE,
        device_id,
    )


async def reserve_ids(conn: asyncpg.Connection, stops: int) -> tuple[int, list[int]]:
    """A new route id and `stops` new stop ids, so a route can be planned before insertion."""
    route_id: int = await conn.fetchval("SELECT nextval(pg_get_serial_sequence('routes', 'id'))")
    rows = await conn.fetch(
        "SELECT nextval(pg_get_serial_sequence('stops', 'id')) AS id "
        "FROM generate_series(1, $1::int)",
        stops,
    )
    return route_id, [r["id"] for r in rows]


async def insert_route(
    conn: asyncpg.Connection,
    route: Route,
    state: JsonDict,
    etas: dict[int, datetime | None],
    tracking: Sequence[bytes] | None = None,
    details: Sequence[JsonDict] | None = None,
) -> None:
    """Store a planned route (ids from `reserve_ids`) with its initial state and ETAs.

    `tracking` holds the SHA-256 digests of the stops' tracking tokens, in stop order;
    `details` the stops' doorstep columns (see `save_details`), in stop order.
    """
    path = shapely.set_srid(shapely.LineString([(lon, lat) for lat, lon in route.path]), 4326)
    await conn.execute(
        "INSERT INTO routes (id, device_id, planned_start, path, straight_line, status, "
        "route_state) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        route.id,
        route.device_id,
        route.planned_start,
        path,
        route.straight_line,
        route.status,
        state,
    )
    stops = sorted(route.stops, key=lambda s: s.seq)
    await conn.execute(
        """
        INSERT INTO stops (id, route_id, seq, location, name, recipient, service_s, radius_m,
                           planned_arrival, window_start, window_end, status, eta, tracking_hash)
        SELECT s.id, $1, s.seq, ST_SetSRID(ST_MakePoint(s.lon, s.lat), 4326)::geography,
               s.name, s.recipient, s.service_s, s.radius_m, s.planned_arrival,
               s.window_start, s.window_end, s.status, s.eta, s.tracking_hash
        FROM unnest($2::bigint[], $3::int[], $4::float8[], $5::float8[], $6::text[],
                    $7::text[], $8::float8[], $9::float8[], $10::timestamptz[],
                    $11::timestamptz[], $12::timestamptz[], $13::text[], $14::timestamptz[],
                    $15::bytea[])
             AS s(id, seq, lat, lon, name, recipient, service_s, radius_m, planned_arrival,
                  window_start, window_end, status, eta, tracking_hash)
        """,
        route.id,
        [s.id for s in stops],
        [s.seq for s in stops],
        [s.lat for s in stops],
        [s.lon for s in stops],
        [s.name for s in stops],
        [s.recipient for s in stops],
        [s.service_s for s in stops],
        [s.radius_m for s in stops],
        [s.planned_arrival for s in stops],
        [s.window_start for s in stops],
        [s.window_end for s in stops],
        [s.status for s in stops],
        [etas.get(s.id) for s in stops],
        list(tracking) if tracking is not None else [None] * len(stops),
    )
    if details:
        await save_details(conn, [s.id for s in stops], details)


_DETAIL_TEXT = ("address", "phone", "email", "notes", "language")
_DETAIL_JSON = ("parcels", "reschedule_windows", "pickup_points")


async def save_details(
    conn: asyncpg.Connection, stop_ids: Sequence[int], details: Sequence[JsonDict]
) -> None:
    """The stops' doorstep columns (address, phone, parcels, required proof...), by stop id."""
    await conn.execute(
        """
        UPDATE stops SET address = d.address, phone = d.phone, email = d.email,
                         notes = d.notes, language = d.language, parcels = d.parcels,
                         proof_required = d.proof_required::text[], pin = d.pin,
                         reschedule_windows = d.reschedule_windows,
                         pickup_points = d.pickup_points
        FROM jsonb_to_recordset($2::jsonb) AS d(
            id bigint, address text, phone text, email text, notes text, language text,
            parcels jsonb, proof_required text[], pin text, reschedule_windows jsonb,
            pickup_points jsonb)
        WHERE stops.id = d.id AND stops.id = ANY($1::bigint[])
        """,
        list(stop_ids),
        [{**d, "id": i} for i, d in zip(stop_ids, details, strict=True)],
    )


def _head(row: asyncpg.Record) -> RouteHead:
    return RouteHead(
        row["id"],
        row["device_id"],
        row["status"],
        row["route_state"],
        row["created_at"],
        row["revision"],
    )


async def active_route(conn: asyncpg.Connection, device_id: int) -> RouteHead | None:
    """The device's newest active route: the one its pings advance."""
    row = await conn.fetchrow(
        "SELECT id, device_id, status, route_state, created_at, revision FROM routes "
        "WHERE device_id = $1 AND status = 'active' ORDER BY id DESC LIMIT 1",
        device_id,
    )
    return _head(row) if row else None


async def route_head(conn: asyncpg.Connection, route_id: int) -> RouteHead | None:
    """A route's owner, status and state, or None."""
    row = await conn.fetchrow(
        "SELECT id, device_id, status, route_state, created_at, revision FROM routes WHERE id = $1",
        route_id,
    )
    return _head(row) if row else None


async def route_device(pool: asyncpg.Pool, route_id: int) -> int | None:
    """The internal id of the device a route belongs to (for authorisation)."""
    device_id: int | None = await pool.fetchval(
        "SELECT device_id FROM routes WHERE id = $1", route_id
    )
    return device_id


async def route_owner(pool: asyncpg.Pool, route_id: int) -> tuple[int, str] | None:
    """(internal id, unique id) of the device a route belongs to, or None."""
    row = await pool.fetchrow(
        "SELECT d.id, d.unique_id FROM routes r JOIN devices d ON d.id = r.device_id "
        "WHERE r.id = $1",
        route_id,
    )
    return None if row is None else (row["id"], row["unique_id"])


async def current_route_id(pool: asyncpg.Pool, device_id: int) -> int | None:
    """Id of the device's newest active route."""
    route_id: int | None = await pool.fetchval(
        "SELECT id FROM routes WHERE device_id = $1 AND status = 'active' ORDER BY id DESC LIMIT 1",
        device_id,
    )
    return route_id


async def load_route(conn: asyncpg.Connection, route_id: int) -> Route:
    """The planned route as the core's `Route` (path and stops), for building its plan."""
    row = await conn.fetchrow(
        "SELECT id, device_id, planned_start, path, straight_line, status FROM routes "
        "WHERE id = $1",
        route_id,
    )
    if row is None:
        raise LookupError(f"no route {route_id}")
    stop_rows = await conn.fetch(
        "SELECT id, seq, ST_Y(location::geometry) AS lat, ST_X(location::geometry) AS lon, "
        "name, recipient, service_s, radius_m, planned_arrival, window_start, window_end, "
        "status FROM stops WHERE route_id = $1 ORDER BY seq",
        route_id,
    )
    stops = tuple(
        Stop(
            id=s["id"],
            seq=s["seq"],
            lat=s["lat"],
            lon=s["lon"],
            name=s["name"],
            recipient=s["recipient"],
            service_s=s["service_s"],
            radius_m=s["radius_m"],
            planned_arrival=s["planned_arrival"],
            window_start=s["window_start"],
            window_end=s["window_end"],
            status=s["status"],
        )
        for s in stop_rows
    )
    path = tuple((float(y), float(x)) for x, y in row["path"].coords)
    return Route(
        id=row["id"],
        device_id=row["device_id"],
        planned_start=row["planned_start"],
        stops=stops,
        path=path,
        straight_line=row["straight_line"],
        status=row["status"],
    )


async def save_state(
    conn: asyncpg.Connection, route_id: int, state: JsonDict, off_route: bool, status: str
) -> None:
    """Write a route's state after fixes or a status change."""
    await conn.execute(
        "UPDATE routes SET route_state = $2, off_route = $3, status = $4, updated_at = now(), "
        "state_seq = state_seq + 1 "
        "WHERE id = $1",
        route_id,
        state,
        off_route,
        status,
    )


async def save_stops(conn: asyncpg.Connection, route_id: int, stops: Sequence[StopValues]) -> None:
    """Write the stops' status, times and published ETAs in one statement."""
    await save_stops_of(conn, [(route_id, stops)])


async def save_stops_of(
    conn: asyncpg.Connection, batch: Sequence[tuple[int, Sequence[StopValues]]]
) -> None:
    """Write the stops' status, times and published ETAs of several routes at once."""
    flat = [(route_id, v) for route_id, values in batch for v in values]
    if not flat:
        return
    await conn.execute(
        """
        UPDATE stops SET status = v.status, reason = v.reason, arrived_at = v.arrived_at,
                         completed_at = v.completed_at, eta = v.eta,
                         eta_earliest = v.eta_earliest, eta_latest = v.eta_latest,
                         deferred = v.deferred
        FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::timestamptz[],
                    $6::timestamptz[], $7::timestamptz[], $8::timestamptz[], $9::timestamptz[],
                    $10::boolean[])
             AS v(route_id, id, status, reason, arrived_at, completed_at, eta, eta_earliest,
                  eta_latest, deferred)
        WHERE stops.id = v.id AND stops.route_id = v.route_id
          -- most rounds move a few ETAs: the other stops need no new row version
          AND (stops.status, stops.reason, stops.arrived_at, stops.completed_at, stops.eta,
               stops.eta_earliest, stops.eta_latest, stops.deferred)
              IS DISTINCT FROM (v.status, v.reason, v.arrived_at, v.completed_at, v.eta,
                                v.eta_earliest, v.eta_latest, v.deferred)
        """,
        [r for r, _ in flat],
        [v.stop_id for _, v in flat],
        [v.status for _, v in flat],
        [v.reason for _, v in flat],
        [v.arrived_at for _, v in flat],
        [v.completed_at for _, v in flat],
        [v.eta for _, v in flat],
        [v.eta_earliest for _, v in flat],
        [v.eta_latest for _, v in flat],
        [v.deferred for _, v in flat],
    )


async def insert_events(conn: asyncpg.Connection, events: Sequence[Event]) -> list[int]:
    """Append events to the history; returns their ids, in the order given."""
    if not events:
        return []
    rows = await conn.fetch(
        """
        INSERT INTO events (type, time, device_id, route_id, stop_id, data)
        SELECT e.type, e.time, e.device_id, e.route_id, e.stop_id, e.data
        FROM unnest($1::text[], $2::timestamptz[], $3::bigint[], $4::bigint[], $5::bigint[],
                    $6::jsonb[]) WITH ORDINALITY AS e(type, time, device_id, route_id, stop_id,
                                                      data, n)
        ORDER BY e.n
        RETURNING id
        """,
        [e.type for e in events],
        [e.time for e in events],
        [e.device_id for e in events],
        [e.route_id for e in events],
        [e.stop_id for e in events],
        [e.data for e in events],
    )
    # Ids come from a sequence in insertion order, which follows the ordinality.
    return sorted(r["id"] for r in rows)


_ROUTE_COLUMNS = """
SELECT r.id, d.unique_id AS device, r.planned_start, r.status, r.straight_line, r.off_route
FROM routes r JOIN devices d ON d.id = r.device_id
"""

_STOP_COLUMNS = """
SELECT route_id, id, seq, name, recipient, ST_Y(location::geometry) AS lat,
       address, phone, email, notes, language, parcels, proof_required, reschedule_windows,
       pickup_points, instructions, safe_place, outcome,
       ST_X(location::geometry) AS lon, radius_m, service_s, planned_arrival, window_start,
       window_end, status, eta, eta_earliest, eta_latest, deferred, arrived_at, completed_at,
       reason
FROM stops
"""


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def route_json(route: asyncpg.Record, stops: Sequence[asyncpg.Record]) -> JsonDict:
    """The public Route JSON (the API reply, the bus message, the snapshot summary)."""
    stop_list: list[dict[str, Any]] = [
        {
            "id": s["id"],
            "seq": s["seq"],
            "name": s["name"],
            "recipient": s["recipient"],
            "lat": s["lat"],
            "lon": s["lon"],
            "radius_m": s["radius_m"],
            "service_s": s["service_s"],
            "planned_arrival": _iso(s["planned_arrival"]),
            "window_start": _iso(s["window_start"]),
            "window_end": _iso(s["window_end"]),
            "status": s["status"],
            "eta": _iso(s["eta"]),
            "eta_earliest": _iso(s["eta_earliest"]),
            "eta_latest": _iso(s["eta_latest"]),
            "deferred": s["deferred"],
            "arrived_at": _iso(s["arrived_at"]),
            "completed_at": _iso(s["completed_at"]),
            "reason": s["reason"],
            # The doorstep (migration 010): contact and hand-over details, what the
            # customer added, and the latest report's outcome (never the PIN).
            "address": s["address"],
            "phone": s["phone"],
            "email": s["email"],
            "notes": s["notes"],
            "language": s["language"],
            "parcels": s["parcels"],
            "proof_required": list(s["proof_required"]),
            "reschedule_windows": s["reschedule_windows"],
            "pickup_points": s["pickup_points"],
            "instructions": s["instructions"],
            "safe_place": s["safe_place"],
            "outcome": s["outcome"],
            # The link holds a token stored only as a digest: only the reply that creates
            # it (POST /api/v1/routes, or re-issuing it) can show it.
            "tracking_url": None,
        }
        for s in stops
    ]
    # The stop being served, else the first one still to visit: what a map highlights.
    # A stop passed by without a visit (deferred) comes after the others.
    next_stop = next((s["id"] for s in stop_list if s["status"] == "arrived"), None)
    if next_stop is None:
        pending = [s for s in stop_list if s["status"] == "pending"]
        first = next((s for s in pending if not s["deferred"]), pending[0] if pending else None)
        next_stop = None if first is None else first["id"]
    return {
        "id": route["id"],
        "device": route["device"],
        "planned_start": route["planned_start"].isoformat(),
        "status": route["status"],
        "straight_line": route["straight_line"],
        "off_route": route["off_route"],
        "next_stop": next_stop,
        "stops": stop_list,
    }


async def route_by_id(conn: asyncpg.Connection | asyncpg.Pool, route_id: int) -> JsonDict | None:
    """Route JSON of one route, or None."""
    route = await conn.fetchrow(_ROUTE_COLUMNS + " WHERE r.id = $1", route_id)
    if route is None:
        return None
    stops = await conn.fetch(_STOP_COLUMNS + " WHERE route_id = $1 ORDER BY seq", route_id)
    return route_json(route, stops)


async def routes_by_ids(conn: asyncpg.Connection, route_ids: Sequence[int]) -> dict[int, JsonDict]:
    """Route JSON of several routes (two queries for any number)."""
    if not route_ids:
        return {}
    ids = list(route_ids)
    routes = await conn.fetch(_ROUTE_COLUMNS + " WHERE r.id = ANY($1::bigint[])", ids)
    stops = await conn.fetch(
        _STOP_COLUMNS + " WHERE route_id = ANY($1::bigint[]) ORDER BY route_id, seq", ids
    )
    by_route: dict[int, list[asyncpg.Record]] = {}
    for stop in stops:
        by_route.setdefault(stop["route_id"], []).append(stop)
    return {r["id"]: route_json(r, by_route.get(r["id"], [])) for r in routes}


async def active_route_summaries(pool: asyncpg.Pool) -> dict[str, JsonDict]:
    """Route JSON of every device's newest active route, by device unique id.

    For the live map's snapshot: the same values the `routes` bus messages carry, read
    from the database so a freshly started instance shows every route at once.
    """
    async with pool.acquire() as conn, conn.transaction(readonly=True):
        routes = await conn.fetch(
            "SELECT DISTINCT ON (r.device_id) r.id, d.unique_id AS device, r.planned_start, "
            "r.status, r.straight_line, r.off_route "
            "FROM routes r JOIN devices d ON d.id = r.device_id "
            "WHERE r.status = 'active' ORDER BY r.device_id, r.id DESC"
        )
        if not routes:
            return {}
        stops = await conn.fetch(
            _STOP_COLUMNS + " WHERE route_id = ANY($1::bigint[]) ORDER BY route_id, seq",
            [r["id"] for r in routes],
        )
    by_route: dict[int, list[asyncpg.Record]] = {}
    for s in stops:
        by_route.setdefault(s["route_id"], []).append(s)
    return {r["device"]: route_json(r, by_route.get(r["id"], [])) for r in routes}
