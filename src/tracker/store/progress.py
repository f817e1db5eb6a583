"""Route progress in batches: the SQL of `tracker.services.route_work`, many devices per
round trip.

A round takes the devices' advisory locks without waiting (a device whose lock another
instance holds is simply tried again later), reads their active routes and the stored
fixes each has not applied yet, and writes the new states back in one statement each.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from tracker.core.model import Fix, JsonDict
from tracker.core.route.progress import Progress, RoutePlan, RouteState
from tracker.store.devices import fix_of
from tracker.store.routes import LOCK_SPACE, StopValues


async def try_lock(conn: asyncpg.Connection, device_ids: Sequence[int]) -> list[int]:
    """Take the route locks of whichever of `device_ids` are free, until the transaction ends.

    Never waits, so two instances working on overlapping batches cannot deadlock."""
    rows = await conn.fetch(
        "SELECT d FROM unnest($2::bigint[]) AS d "
        "WHERE pg_try_advisory_xact_lock($1::int, (d % 2147483647)::int)",
        LOCK_SPACE,
        sorted(device_ids),
    )
    return [r["d"] for r in rows]


@dataclass(frozen=True, slots=True)
class Head:
    """What a round needs of a device's active route; its state only if not cached."""

    id: int
    device_id: int
    created_at: datetime
    revision: int  # bumped when re-planning replaces the stops and path
    state_seq: int  # moves on with every write of the state


async def active_heads(conn: asyncpg.Connection, device_ids: Sequence[int]) -> dict[int, Head]:
    """Each device's newest active route (devices without one are left out)."""
    rows = await conn.fetch(
        "SELECT DISTINCT ON (device_id) id, device_id, created_at, revision, state_seq "
        "FROM routes WHERE device_id = ANY($1::bigint[]) AND status = 'active' "
        "ORDER BY device_id, id DESC",
        list(device_ids),
    )
    return {
        r["device_id"]: Head(
            r["id"], r["device_id"], r["created_at"], r["revision"], r["state_seq"]
        )
        for r in rows
    }


async def states(conn: asyncpg.Connection, route_ids: Sequence[int]) -> dict[int, JsonDict]:
    """The stored states of routes (the ones a round has no current copy of)."""
    rows = await conn.fetch(
        "SELECT id, route_state FROM routes WHERE id = ANY($1::bigint[])", list(route_ids)
    )
    return {r["id"]: r["route_state"] for r in rows}


async def positions_after(
    conn: asyncpg.Connection, after: Mapping[int, datetime], limit: int
) -> dict[int, list[Fix]]:
    """Per device, its stored fixes newer than its time in `after`, oldest first, at most
    `limit` each.

    Progress is made from what is stored, not from what a request carried, so fixes
    committed by another instance are applied in time order too, with the stored values.
    """
    ids = list(after)
    rows = await conn.fetch(
        """
        SELECT a.d AS device_id, p.fix_time, ST_Y(p.geog::geometry) AS lat,
               ST_X(p.geog::geometry) AS lon, p.speed, p.course, p.accuracy, p.altitude
        FROM unnest($1::bigint[], $2::timestamptz[]) AS a(d, t)
        CROSS JOIN LATERAL (
            SELECT fix_time, geog, speed, course, accuracy, altitude FROM positions
            WHERE device_id = a.d AND fix_time > a.t ORDER BY fix_time LIMIT $3
        ) AS p
        ORDER BY a.d, p.fix_time
        """,
        ids,
        [after[d] for d in ids],
        limit,
    )
    out: dict[int, list[Fix]] = {d: [] for d in ids}
    for r in rows:
        out[r["device_id"]].append(fix_of(r["device_id"], r))
    return out


async def first_received(
    conn: asyncpg.Connection, since: Mapping[int, datetime]
) -> dict[int, datetime]:
    """Per device, the oldest fix time among the fixes received since its time in `since`
    (a fresh route's creation): where a route that has seen no fix yet starts, also when
    the drive is a replay of older fixes."""
    ids = list(since)
    rows = await conn.fetch(
        """
        SELECT a.d, (SELECT min(fix_time) FROM positions
                     WHERE device_id = a.d AND received_at >= a.t) AS first
        FROM unnest($1::bigint[], $2::timestamptz[]) AS a(d, t)
        """,
        ids,
        [since[d] for d in ids],
    )
    return {r["d"]: r["first"] for r in rows if r["first"] is not None}


@dataclass(frozen=True, slots=True)
class StateRow:
    """A route's state after a round."""

    route_id: int
    state: JsonDict
    off_route: bool
    status: str


async def save_states(conn: asyncpg.Connection, rows: Sequence[StateRow]) -> dict[int, int]:
    """Write the routes' states in one statement; returns each route's new `state_seq`."""
    if not rows:
        return {}
    written = await conn.fetch(
        """
        UPDATE routes SET route_state = v.state, off_route = v.off_route, status = v.status,
                          state_seq = routes.state_seq + 1, updated_at = now()
        FROM unnest($1::bigint[], $2::jsonb[], $3::boolean[], $4::text[])
             AS v(id, state, off_route, status)
        WHERE routes.id = v.id
        RETURNING routes.id, routes.state_seq
        """,
        [r.route_id for r in rows],
        [r.state for r in rows],
        [r.off_route for r in rows],
        [r.status for r in rows],
    )
    return {r["id"]: r["state_seq"] for r in written}


async def behind(conn: asyncpg.Connection | asyncpg.Pool) -> list[tuple[int, str]]:
    """(device id, unique id) of active routes whose device has a stored fix newer than the
    route's progress (or, before its first fix, received since it was created): work a
    crashed instance acknowledged but did not apply."""
    rows = await conn.fetch(
        """
        SELECT r.device_id, d.unique_id
        FROM routes r
        JOIN last_positions lp ON lp.device_id = r.device_id
        JOIN devices d ON d.id = r.device_id
        WHERE r.status = 'active'
          AND CASE WHEN r.route_state->>'last_s' IS NULL THEN lp.received_at >= r.created_at
                   ELSE extract(epoch FROM lp.fix_time) > (r.route_state->>'last_s')::float8
              END
        """
    )
    return [(r["device_id"], r["unique_id"]) for r in rows]


def _when(epoch_s: float | None) -> datetime | None:
    return None if epoch_s is None else datetime.fromtimestamp(epoch_s, UTC)


def stop_values(plan: RoutePlan, state: RouteState, etas: Progress) -> list[StopValues]:
    """Every stop's live columns from a state and the ETAs computed with it."""
    out: list[StopValues] = []
    for k, eta in enumerate(etas.etas):
        st = state.stops[k]
        out.append(
            StopValues(
                stop_id=plan.stop_ids[k],
                status=st.status,
                reason=st.reason,
                arrived_at=_when(st.arrived_s),
                completed_at=_when(st.done_s),
                eta=eta.eta,
                eta_earliest=eta.eta_earliest,
                eta_latest=eta.eta_latest,
                deferred=k in state.deferred,
            )
        )
    return out
