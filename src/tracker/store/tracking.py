"""Customer tracking links in PostgreSQL: find a stop by its token's digest, re-issue one.

Only SHA-256 digests of the tokens are stored (`stops.tracking_hash`). A token carries 256
bits of randomness, so its digest can be looked up with an index equality: learning that
some digest does not exist tells an attacker nothing about the others. A link works while
its stop is open and for `ttl_s` seconds after the stop became done (`stops.done_at`, the
server's time, set by a trigger) or after its route stopped being active.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from tracker.core.privacy import Position


@dataclass(frozen=True, slots=True)
class TrackingTarget:
    """The stop behind a valid tracking link, and where its vehicle was last seen."""

    stop_id: int
    route_id: int
    device: str  # unique id: only for subscribing to the live updates, never shown
    position: Position | None
    closed_at: datetime | None  # when the stop was done or its route ended, if so
    driving_route: int | None  # the device's newest active route: what it drives now


_LOOKUP = """
SELECT s.id AS stop_id, s.route_id, s.tracking_hash, d.unique_id AS device,
       COALESCE(s.done_at, CASE WHEN r.status <> 'active' THEN r.updated_at END) AS closed_at,
       l.fix_time, ST_Y(l.geog::geometry) AS lat, ST_X(l.geog::geometry) AS lon, l.course,
       (SELECT a.id FROM routes a WHERE a.device_id = r.device_id AND a.status = 'active'
        ORDER BY a.id DESC LIMIT 1) AS driving_route
FROM stops s
JOIN routes r ON r.id = s.route_id
JOIN devices d ON d.id = r.device_id
LEFT JOIN last_positions l ON l.device_id = r.device_id
WHERE s.tracking_hash = $1
  AND COALESCE(s.done_at, CASE WHEN r.status <> 'active' THEN r.updated_at END, 'infinity')
      > now() - make_interval(secs => $2::float8)
"""


async def lookup(pool: asyncpg.Pool, digest: bytes, ttl_s: float) -> TrackingTarget | None:
    """The stop whose tracking token has `digest`, unless unknown or expired (same None)."""
    row = await pool.fetchrow(_LOOKUP, digest, ttl_s)
    # The index found the row by equality; the constant-time check keeps any comparison
    # made here from depending on how much of the digest matched.
    if row is None or not hmac.compare_digest(bytes(row["tracking_hash"]), digest):
        return None
    position = None
    if row["fix_time"] is not None:
        course = row["course"]
        position = Position(
            row["lat"], row["lon"], row["fix_time"], None if course is None else float(course)
        )
    return TrackingTarget(
        stop_id=row["stop_id"],
        route_id=row["route_id"],
        device=row["device"],
        position=position,
        closed_at=row["closed_at"],
        driving_route=row["driving_route"],
    )


async def replace_token(pool: asyncpg.Pool, route_id: int, stop_id: int, digest: bytes) -> bool:
    """Give a stop a new tracking token (the old link stops working). False: no such stop."""
    result: str = await pool.execute(
        "UPDATE stops SET tracking_hash = $3 WHERE id = $2 AND route_id = $1",
        route_id,
        stop_id,
        digest,
    )
    return result.endswith(" 1")
