"""Plans and re-planned routes in PostgreSQL: every SQL statement the planner runs besides
the road network's.

A plan is stored as the proposal that was answered (`plans.proposal`), so what a
dispatcher saw is exactly what is dispatched. Re-planning replaces a live route's
remaining stops and path in place (`replace_stops`): stops keep their ids (orders, events
and customer links point at them), and the route's revision goes up so every instance
rebuilds its cached plan of the route.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime

import asyncpg
import shapely

from tracker.core.model import JsonDict, Stop

PROPOSED = "proposed"
DISPATCHED = "dispatched"

# Two-key advisory locks in a key space of their own: "dispatching this plan".
_LOCK_SPACE = 0x504C414E  # "PLAN"


@dataclass(frozen=True, slots=True)
class StoredPlan:
    """A plan row."""

    id: int
    date: date
    status: str
    roads: bool
    proposal: JsonDict
    routes: dict[int, int]  # index in proposal["routes"] -> dispatched route id
    created_at: datetime
    dispatched_at: datetime | None

    def to_json(self) -> JsonDict:
        """The public JSON: the proposal with id, status and dispatched routes."""
        routes = [
            {**r, "route_id": self.routes.get(k)} for k, r in enumerate(self.proposal["routes"])
        ]
        return {
            "id": self.id,
            "status": self.status,
            "created_at": self.created_at.isoformat(),
            "dispatched_at": None if self.dispatched_at is None else self.dispatched_at.isoformat(),
            **self.proposal,
            "routes": routes,
        }


def _plan(row: asyncpg.Record) -> StoredPlan:
    return StoredPlan(
        id=row["id"],
        date=row["date"],
        status=row["status"],
        roads=row["roads"],
        proposal=row["proposal"],
        routes={int(k): int(v) for k, v in row["routes"].items()},
        created_at=row["created_at"],
        dispatched_at=row["dispatched_at"],
    )


_PLAN = "SELECT id, date, status, roads, proposal, routes, created_at, dispatched_at FROM plans"


async def insert_plan(
    conn: asyncpg.Connection | asyncpg.Pool, day: date, roads: bool, proposal: JsonDict
) -> StoredPlan:
    """Store a new proposal."""
    row = await conn.fetchrow(
        "INSERT INTO plans (date, roads, proposal) VALUES ($1, $2, $3) "
        "RETURNING id, date, status, roads, proposal, routes, created_at, dispatched_at",
        day,
        roads,
        proposal,
    )
    assert row is not None
    return _plan(row)


async def update_proposal(
    conn: asyncpg.Connection | asyncpg.Pool, plan_id: int, proposal: JsonDict
) -> bool:
    """Replace a proposal not yet dispatched (an edit); False when it is dispatched (or
    gone)."""
    done = await conn.execute(
        "UPDATE plans SET proposal = $2 WHERE id = $1 AND status = $3 AND routes = '{}'::jsonb",
        plan_id,
        proposal,
        PROPOSED,
    )
    return bool(done.endswith(" 1"))


async def get_plan(conn: asyncpg.Connection | asyncpg.Pool, plan_id: int) -> StoredPlan | None:
    """A plan, or None."""
    row = await conn.fetchrow(_PLAN + " WHERE id = $1", plan_id)
    return _plan(row) if row is not None else None


@contextlib.asynccontextmanager
async def plan_lock(pool: asyncpg.Pool, plan_id: int) -> AsyncIterator[None]:
    """Hold "changing plan `plan_id`" (a dispatch or an edit) on every instance while the
    block runs: a session advisory lock on a connection of its own."""
    key = (_LOCK_SPACE, plan_id)
    async with pool.acquire() as conn:
        await conn.execute("SELECT pg_advisory_lock($1::int, ($2::bigint % 2147483647)::int)", *key)
        try:
            yield
        finally:
            await conn.execute(
                "SELECT pg_advisory_unlock($1::int, ($2::bigint % 2147483647)::int)", *key
            )


async def record_route(conn: asyncpg.Connection, plan_id: int, index: int, route_id: int) -> None:
    """Remember that route `index` of the plan was dispatched as `route_id`."""
    await conn.execute(
        "UPDATE plans SET routes = routes || jsonb_build_object($2::text, $3::bigint) "
        "WHERE id = $1",
        plan_id,
        str(index),
        route_id,
    )
    await conn.execute("UPDATE routes SET plan_id = $2 WHERE id = $1", route_id, plan_id)


async def mark_dispatched(conn: asyncpg.Connection | asyncpg.Pool, plan_id: int) -> None:
    """The whole plan is dispatched."""
    await conn.execute(
        "UPDATE plans SET status = $2, dispatched_at = now() WHERE id = $1", plan_id, DISPATCHED
    )


async def order_statuses(
    conn: asyncpg.Connection | asyncpg.Pool, order_ids: Sequence[int]
) -> dict[int, str]:
    """Each order's current status (missing: no such order)."""
    rows = await conn.fetch(
        "SELECT id, status FROM orders WHERE id = ANY($1::bigint[])", list(order_ids)
    )
    return {r["id"]: r["status"] for r in rows}


# -- live routes -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LiveRoute:
    """An active route as re-planning sees it."""

    id: int
    device_id: int
    device: str
    revision: int
    straight_line: bool
    state: JsonDict
    position: tuple[float, float] | None  # the vehicle's last fix (lat, lon)
    fix_time: datetime | None


async def live_routes(
    conn: asyncpg.Connection | asyncpg.Pool, route_ids: Sequence[int] | None = None
) -> list[LiveRoute]:
    """Active routes (all, or those of `route_ids`), each device's newest only."""
    rows = await conn.fetch(
        """
        SELECT DISTINCT ON (r.device_id) r.id, r.device_id, d.unique_id AS device, r.revision,
               r.straight_line, r.route_state, ST_Y(l.geog::geometry) AS lat,
               ST_X(l.geog::geometry) AS lon, l.fix_time
        FROM routes r
        JOIN devices d ON d.id = r.device_id
        LEFT JOIN last_positions l ON l.device_id = r.device_id
        WHERE r.status = 'active' AND ($1::bigint[] IS NULL OR r.id = ANY($1::bigint[]))
        ORDER BY r.device_id, r.id DESC
        """,
        None if route_ids is None else list(route_ids),
    )
    return [
        LiveRoute(
            id=r["id"],
            device_id=r["device_id"],
            device=r["device"],
            revision=r["revision"],
            straight_line=r["straight_line"],
            state=r["route_state"],
            position=None if r["lat"] is None else (r["lat"], r["lon"]),
            fix_time=r["fix_time"],
        )
        for r in rows
    ]


async def replace_stops(
    conn: asyncpg.Connection,
    route_id: int,
    kept: Sequence[Stop],
    added: Sequence[Stop],
    moved_in: Sequence[Stop],
    path: Sequence[tuple[float, float]],
    straight_line: bool,
    state: JsonDict,
    etas: dict[int, datetime | None],
) -> None:
    """Give a route a new order of stops and a new path, in the caller's transaction
    (holding the device's route lock).

    `kept`: the route's own stops that stay, with their new `seq` and planned arrival;
    `moved_in`: stops of another route that move here (same ids: links and orders follow);
    `added`: new stops with ids from `store.routes.reserve_ids`. Stops of the route in none
    of these were moved away by the caller first. Every stop's ETA is set from `etas`.
    """
    line = shapely.set_srid(shapely.LineString([(lon, lat) for lat, lon in path]), 4326)
    # seq is unique per route: park every stop out of the way before renumbering.
    await conn.execute("UPDATE stops SET seq = -seq - 1000000 WHERE route_id = $1", route_id)
    relocated = [*kept, *moved_in]
    await conn.execute(
        """
        UPDATE stops SET route_id = $1, seq = v.seq, planned_arrival = v.planned_arrival,
                         eta = v.eta
        FROM unnest($2::bigint[], $3::int[], $4::timestamptz[], $5::timestamptz[])
             AS v(id, seq, planned_arrival, eta)
        WHERE stops.id = v.id
        """,
        route_id,
        [s.id for s in relocated],
        [s.seq for s in relocated],
        [s.planned_arrival for s in relocated],
        [etas.get(s.id) for s in relocated],
    )
    if added:
        await conn.execute(
            """
            INSERT INTO stops (id, route_id, seq, location, name, recipient, service_s,
                               radius_m, planned_arrival, window_start, window_end, status, eta)
            SELECT s.id, $1, s.seq, ST_SetSRID(ST_MakePoint(s.lon, s.lat), 4326)::geography,
                   s.name, s.recipient, s.service_s, s.radius_m, s.planned_arrival,
                   s.window_start, s.window_end, 'pending', s.eta
            FROM unnest($2::bigint[], $3::int[], $4::float8[], $5::float8[], $6::text[],
                        $7::text[], $8::float8[], $9::float8[], $10::timestamptz[],
                        $11::timestamptz[], $12::timestamptz[], $13::timestamptz[])
                 AS s(id, seq, lat, lon, name, recipient, service_s, radius_m, planned_arrival,
                      window_start, window_end, eta)
            """,
            route_id,
            [s.id for s in added],
            [s.seq for s in added],
            [s.lat for s in added],
            [s.lon for s in added],
            [s.name for s in added],
            [s.recipient for s in added],
            [s.service_s for s in added],
            [s.radius_m for s in added],
            [s.planned_arrival for s in added],
            [s.window_start for s in added],
            [s.window_end for s in added],
            [etas.get(s.id) for s in added],
        )
    await conn.execute(
        "UPDATE routes SET path = $2, straight_line = $3, route_state = $4, "
        "revision = revision + 1, state_seq = state_seq + 1, updated_at = now() WHERE id = $1",
        route_id,
        line,
        straight_line,
        state,
    )


async def stop_route(conn: asyncpg.Connection | asyncpg.Pool, stop_id: int) -> int | None:
    """The route a stop is on."""
    route_id: int | None = await conn.fetchval("SELECT route_id FROM stops WHERE id = $1", stop_id)
    return route_id


async def orders_by_stop(
    conn: asyncpg.Connection | asyncpg.Pool, stop_ids: Sequence[int]
) -> dict[int, int]:
    """stop id -> the order it serves."""
    rows = await conn.fetch(
        "SELECT id, stop_id FROM orders WHERE stop_id = ANY($1::bigint[])", list(stop_ids)
    )
    return {r["stop_id"]: r["id"] for r in rows}


async def complete_route(conn: asyncpg.Connection, route_id: int) -> None:
    """A route whose last stops moved away is over."""
    await conn.execute(
        "UPDATE routes SET status = 'completed', updated_at = now() WHERE id = $1", route_id
    )


async def follow_stops(conn: asyncpg.Connection, route_id: int, stop_ids: Sequence[int]) -> None:
    """Orders whose stops moved to route `route_id` follow them."""
    await conn.execute(
        "UPDATE orders SET route_id = $1, updated_at = now() WHERE stop_id = ANY($2::bigint[])",
        route_id,
        list(stop_ids),
    )


async def nearest_routes(
    conn: asyncpg.Connection | asyncpg.Pool,
    lat: float,
    lon: float,
    limit: int,
    route_ids: Sequence[int] | None = None,
) -> list[int]:
    """Active routes whose remaining stops or vehicle pass nearest to (lat, lon)."""
    rows = await conn.fetch(
        """
        WITH here AS (SELECT ST_SetSRID(ST_MakePoint($2, $1), 4326)::geography AS g),
        live AS (
            SELECT DISTINCT ON (device_id) id, device_id FROM routes
            WHERE status = 'active' AND ($4::bigint[] IS NULL OR id = ANY($4::bigint[]))
            ORDER BY device_id, id DESC
        )
        SELECT l.id, least(
            (SELECT min(s.location <-> here.g) FROM stops s
             WHERE s.route_id = l.id AND s.status IN ('pending', 'arrived')),
            (SELECT p.geog <-> here.g FROM last_positions p
             WHERE p.device_id = l.device_id)) AS d
        FROM live l, here
        ORDER BY d NULLS LAST, l.id LIMIT $3
        """,
        lat,
        lon,
        limit,
        None if route_ids is None else list(route_ids),
    )
    return [r["id"] for r in rows]


async def driven_path(
    conn: asyncpg.Connection, route_id: int, progress_m: float
) -> list[tuple[float, float]]:
    """The first `progress_m` metres of a route's path (lat, lon): the stretch driven."""
    row = await conn.fetchrow(
        "SELECT ST_AsBinary(ST_LineSubstring(path::geometry, 0, "
        "least(1.0, $2 / greatest(ST_Length(path), 1e-9)))) AS piece FROM routes WHERE id = $1",
        route_id,
        progress_m,
    )
    if row is None or row["piece"] is None:
        return []
    piece = shapely.from_wkb(bytes(row["piece"]))
    if not isinstance(piece, shapely.LineString):
        return []
    return [(float(lat), float(lon)) for lon, lat in piece.coords]
