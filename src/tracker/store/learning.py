"""SQL of the learned travel times (`learned_cells`) and of the drives still to learn."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from tracker.core.route import history as hist


@dataclass(frozen=True, slots=True)
class Drive:
    """A route whose drive is ready to learn: its device and the span of its fixes."""

    route_id: int
    device_id: int
    since: datetime
    last_s: float | None


async def snapshot(
    conn: asyncpg.Connection | asyncpg.Pool, path: Sequence[tuple[float, float]]
) -> dict[tuple[int, int, int], list[hist.CellStats]]:
    """Everything learned about the cells a path (lat, lon) passes through."""
    cells = sorted(hist.cells_of_path(path))
    if not cells:
        return {}
    rows = await conn.fetch(
        """
        SELECT l.cell_y, l.cell_x, l.heading, l.hour_of_week, l.passes, l.sum_log_pace,
               l.sum_log_pace2
        FROM unnest($1::int[], $2::int[]) AS c(y, x)
        JOIN learned_cells l ON l.cell_y = c.y AND l.cell_x = c.x
        """,
        [c[0] for c in cells],
        [c[1] for c in cells],
    )
    out: dict[tuple[int, int, int], list[hist.CellStats]] = defaultdict(list)
    for r in rows:
        out[(r["cell_y"], r["cell_x"], r["heading"])].append(
            hist.CellStats(r["hour_of_week"], r["passes"], r["sum_log_pace"], r["sum_log_pace2"])
        )
    return dict(out)


async def drives_to_learn(conn: asyncpg.Connection, quiet_s: float, limit: int) -> list[Drive]:
    """Routes not learned yet that are over: done, or without a fix for `quiet_s` seconds
    (by the fixes' own clock against the database's). Rows stay locked until the
    transaction ends and other instances skip them."""
    rows = await conn.fetch(
        """
        SELECT id, device_id, least(planned_start, created_at) - interval '30 minutes' AS since,
               (route_state->>'last_s')::float8 AS last_s
        FROM routes
        WHERE learned_at IS NULL
          AND (status <> 'active'
               OR (route_state->>'last_s')::float8 < extract(epoch FROM now()) - $1)
        ORDER BY id
        LIMIT $2
        FOR UPDATE SKIP LOCKED
        """,
        quiet_s,
        limit,
    )
    return [Drive(r["id"], r["device_id"], r["since"], r["last_s"]) for r in rows]


async def track(conn: asyncpg.Connection, drive: Drive) -> list[tuple[float, float, float]]:
    """The drive's stored fixes as (epoch s, lat, lon), in time order."""
    if drive.last_s is None:
        return []
    rows = await conn.fetch(
        """
        SELECT extract(epoch FROM fix_time)::float8 AS t, ST_Y(geog::geometry) AS lat,
               ST_X(geog::geometry) AS lon
        FROM positions
        WHERE device_id = $1 AND fix_time >= $2 AND fix_time <= to_timestamp($3)
        ORDER BY fix_time
        """,
        drive.device_id,
        drive.since,
        drive.last_s,
    )
    return [(r["t"], r["lat"], r["lon"]) for r in rows]


async def add_crossings(conn: asyncpg.Connection, crossings: Sequence[hist.Crossing]) -> None:
    """Fold crossings into the learned cells (summed per cell, heading and hour)."""
    sums: dict[tuple[int, int, int, int], list[float]] = defaultdict(lambda: [0, 0.0, 0.0])
    for c in crossings:
        s = sums[(c.cell_y, c.cell_x, c.heading, c.hour_of_week)]
        v = c.log_pace
        s[0] += 1
        s[1] += v
        s[2] += v * v
    if not sums:
        return
    keys = sorted(sums)
    await conn.execute(
        """
        INSERT INTO learned_cells AS l (cell_y, cell_x, heading, hour_of_week, passes,
                                        sum_log_pace, sum_log_pace2)
        SELECT * FROM unnest($1::int[], $2::int[], $3::smallint[], $4::smallint[], $5::int[],
                             $6::float8[], $7::float8[])
        ON CONFLICT (cell_y, cell_x, heading, hour_of_week) DO UPDATE
        SET passes = l.passes + excluded.passes,
            sum_log_pace = l.sum_log_pace + excluded.sum_log_pace,
            sum_log_pace2 = l.sum_log_pace2 + excluded.sum_log_pace2
        """,
        [k[0] for k in keys],
        [k[1] for k in keys],
        [k[2] for k in keys],
        [k[3] for k in keys],
        [int(sums[k][0]) for k in keys],
        [sums[k][1] for k in keys],
        [sums[k][2] for k in keys],
    )


async def mark_learned(conn: asyncpg.Connection, route_ids: Sequence[int]) -> None:
    """Routes whose drives are now part of the learned cells."""
    await conn.execute(
        "UPDATE routes SET learned_at = now() WHERE id = ANY($1::bigint[])", list(route_ids)
    )
