"""Stop reports (a driver's completion or failure), proof images, and what the customer
adds (instructions, reschedule requests, a rating), in PostgreSQL.

A report is stored with its proofs in one transaction and summarised in `stops.outcome`,
which every Route JSON carries (so the dispatcher sees a far-away reason at once). Proof
images are served only through `proof_for_stop` / `proof_by_id`, whose callers check who
asks.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from tracker.core.model import JsonDict


@dataclass(frozen=True, slots=True)
class StopContext:
    """What checking a report needs to know about its stop."""

    stop_id: int
    route_id: int
    status: str
    proof_required: tuple[str, ...]
    pin: str | None
    radius_m: float
    distance_m: float | None  # from the reported (or else last known) position
    has_report: bool  # this client_id was stored already (a retried sync)


async def stop_context(
    pool: asyncpg.Pool,
    route_id: int,
    stop_id: int,
    client_id: uuid.UUID,
    at: tuple[float, float] | None,
) -> StopContext | None:
    """The stop of a report, with its distance from `at` (lat, lon) or, without it, from
    the device's last stored position; None if the route has no such stop."""
    row = await pool.fetchrow(
        """
        SELECT s.id, s.route_id, s.status, s.proof_required, s.pin, s.radius_m,
               CASE WHEN $3::float8 IS NOT NULL
                    THEN ST_Distance(s.location,
                                     ST_SetSRID(ST_MakePoint($4, $3), 4326)::geography)
                    ELSE (SELECT ST_Distance(s.location, l.geog) FROM last_positions l
                          WHERE l.device_id = r.device_id) END AS distance_m,
               EXISTS (SELECT 1 FROM stop_reports WHERE client_id = $5) AS has_report
        FROM stops s JOIN routes r ON r.id = s.route_id
        WHERE s.id = $2 AND s.route_id = $1
        """,
        route_id,
        stop_id,
        None if at is None else at[0],
        None if at is None else at[1],
        client_id,
    )
    if row is None:
        return None
    return StopContext(
        row["id"],
        row["route_id"],
        row["status"],
        tuple(row["proof_required"]),
        row["pin"],
        row["radius_m"],
        row["distance_m"],
        row["has_report"],
    )


@dataclass(frozen=True, slots=True)
class Image:
    """A cleaned proof image, ready to store."""

    kind: str  # photo | signature
    media_type: str
    data: bytes
    width: int
    height: int


async def save_report(
    pool: asyncpg.Pool, stop_id: int, report: JsonDict, images: Sequence[Image]
) -> JsonDict:
    """Store a report and its images; the stop's `outcome` becomes its summary (returned)."""
    async with pool.acquire() as conn, conn.transaction():
        report_id: int = await conn.fetchval(
            """
            INSERT INTO stop_reports (stop_id, client_id, status, reason_code, reason_text,
                                      next_step, recipient_name, pin_ok, lat, lon, distance_m,
                                      far_reason, reported_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
            ON CONFLICT (client_id) DO NOTHING RETURNING id
            """,
            stop_id,
            report["client_id"],
            report["status"],
            report["reason_code"],
            report["reason_text"],
            report["next_step"],
            report["recipient_name"],
            report["pin_ok"],
            report["lat"],
            report["lon"],
            report["distance_m"],
            report["far_reason"],
            report["reported_at"],
        )
        if report_id is None:  # stored by a concurrent retry of the same sync
            outcome: JsonDict = await conn.fetchval(
                "SELECT outcome FROM stops WHERE id = $1", stop_id
            )
            return outcome or {}
        proof_ids = []
        for image in images:
            proof_ids.append(
                await conn.fetchval(
                    "INSERT INTO proofs (stop_id, report_id, kind, media_type, data, width, "
                    "height) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
                    stop_id,
                    report_id,
                    image.kind,
                    image.media_type,
                    image.data,
                    image.width,
                    image.height,
                )
            )
        outcome = {
            "report_id": report_id,
            "status": report["status"],
            "reason_code": report["reason_code"],
            "reason_text": report["reason_text"],
            "next_step": report["next_step"],
            "recipient_name": report["recipient_name"],
            "pin_ok": report["pin_ok"],
            "distance_m": report["distance_m"],
            "far_reason": report["far_reason"],
            "reported_at": report["reported_at"].isoformat(),
            "proofs": [
                {"id": pid, "kind": image.kind}
                for pid, image in zip(proof_ids, images, strict=True)
            ],
        }
        await conn.execute("UPDATE stops SET outcome = $2 WHERE id = $1", stop_id, outcome)
    return outcome


async def drop_report(pool: asyncpg.Pool, stop_id: int, client_id: uuid.UUID) -> None:
    """Undo `save_report` when the status change it belonged to was refused."""
    async with pool.acquire() as conn, conn.transaction():
        gone = await conn.fetchval(
            "DELETE FROM stop_reports WHERE client_id = $1 RETURNING id", client_id
        )
        if gone is not None:
            await conn.execute(
                "UPDATE stops SET outcome = NULL "
                "WHERE id = $1 AND (outcome->>'report_id')::bigint = $2",
                stop_id,
                gone,
            )


async def proof_required(pool: asyncpg.Pool, route_id: int, stop_id: int) -> list[str]:
    """The proof a stop requires (empty for an unknown stop)."""
    found = await pool.fetchval(
        "SELECT proof_required FROM stops WHERE id = $2 AND route_id = $1", route_id, stop_id
    )
    return list(found or [])


async def proof_by_id(pool: asyncpg.Pool, proof_id: int) -> asyncpg.Record | None:
    """A proof image (for the dispatcher)."""
    row: asyncpg.Record | None = await pool.fetchrow(
        "SELECT id, stop_id, media_type, data FROM proofs WHERE id = $1", proof_id
    )
    return row


async def proof_for_stop(pool: asyncpg.Pool, stop_id: int, proof_id: int) -> asyncpg.Record | None:
    """A proof image of one stop (for that stop's customer link)."""
    row: asyncpg.Record | None = await pool.fetchrow(
        "SELECT id, stop_id, media_type, data FROM proofs WHERE id = $1 AND stop_id = $2",
        proof_id,
        stop_id,
    )
    return row


async def purge(pool: asyncpg.Pool, older_than: datetime) -> int:
    """Delete proof images stored before `older_than`; the stops' outcomes forget them."""
    async with pool.acquire() as conn, conn.transaction():
        gone = await conn.fetch(
            "DELETE FROM proofs WHERE created_at < $1 RETURNING stop_id", older_than
        )
        stop_ids = sorted({r["stop_id"] for r in gone})
        if stop_ids:
            await conn.execute(
                "UPDATE stops SET outcome = jsonb_set(outcome, '{proofs}', COALESCE(("
                "  SELECT jsonb_agg(p) FROM jsonb_array_elements(outcome->'proofs') p"
                "  WHERE (p->>'id')::bigint IN (SELECT id FROM proofs WHERE stop_id = stops.id)"
                "), '[]'::jsonb)) WHERE id = ANY($1::bigint[]) AND outcome ? 'proofs'",
                stop_ids,
            )
    return len(gone)


# -- what the customer adds -------------------------------------------------------------------


async def customer_stop(pool: asyncpg.Pool, stop_id: int) -> asyncpg.Record | None:
    """The columns of the customer page's details."""
    row: asyncpg.Record | None = await pool.fetchrow(
        """
        SELECT s.id, s.status, s.window_start, s.window_end, s.instructions, s.safe_place,
               s.reschedule_windows, s.pickup_points, s.outcome, s.completed_at, s.pin,
               s.proof_required, s.email, s.phone,
               (SELECT row_to_json(q) FROM (SELECT id, window_start, window_end, pickup_point,
                       status, created_at FROM reschedule_requests
                       WHERE stop_id = s.id ORDER BY id DESC LIMIT 1) q) AS request,
               (SELECT row_to_json(x) FROM (SELECT stars, comment, created_at FROM ratings
                       WHERE stop_id = s.id) x) AS rating,
               EXISTS (SELECT 1 FROM message_opt_outs o WHERE o.address IN (s.email, s.phone))
                   AS opted_out
        FROM stops s WHERE s.id = $1
        """,
        stop_id,
    )
    return row


async def set_instructions(
    pool: asyncpg.Pool, stop_id: int, instructions: str, safe_place: str
) -> bool:
    """The customer's delivery instructions; False once the driver arrived (too late)."""
    result: str = await pool.execute(
        "UPDATE stops SET instructions = $2, safe_place = $3 WHERE id = $1 AND status = 'pending'",
        stop_id,
        instructions,
        safe_place,
    )
    return result.endswith(" 1")


async def request_reschedule(
    pool: asyncpg.Pool,
    stop_id: int,
    window: tuple[datetime, datetime] | None,
    pickup_point: JsonDict | None,
) -> int | None:
    """A customer's request; None when one is already waiting for the dispatcher."""
    request_id: int | None = await pool.fetchval(
        "INSERT INTO reschedule_requests (stop_id, window_start, window_end, pickup_point) "
        "VALUES ($1, $2, $3, $4) ON CONFLICT (stop_id) WHERE status = 'pending' DO NOTHING "
        "RETURNING id",
        stop_id,
        None if window is None else window[0],
        None if window is None else window[1],
        pickup_point,
    )
    return request_id


async def reschedule_requests(pool: asyncpg.Pool, status: str | None) -> list[dict[str, Any]]:
    """Requests for the dispatcher, newest first."""
    rows = await pool.fetch(
        "SELECT q.id, q.stop_id, s.route_id, s.name, s.recipient, q.window_start, "
        "q.window_end, q.pickup_point, q.status, q.created_at, q.decided_at "
        "FROM reschedule_requests q JOIN stops s ON s.id = q.stop_id "
        "WHERE ($1::text IS NULL OR q.status = $1) ORDER BY q.id DESC LIMIT 500",
        status,
    )
    return [dict(r) for r in rows]


async def decide_reschedule(
    conn: asyncpg.Connection, request_id: int, confirm: bool
) -> asyncpg.Record | None:
    """Confirm (the stop takes the new window; a pickup point becomes its outcome's next
    step) or decline a pending request. None: no pending request with that id."""
    row: asyncpg.Record | None = await conn.fetchrow(
        "UPDATE reschedule_requests SET status = $2, decided_at = now() "
        "WHERE id = $1 AND status = 'pending' RETURNING id, stop_id, window_start, window_end, "
        "pickup_point, status, (SELECT route_id FROM stops WHERE id = stop_id) AS route_id",
        request_id,
        "confirmed" if confirm else "declined",
    )
    if row is not None and confirm and row["window_start"] is not None:
        await conn.execute(
            "UPDATE stops SET window_start = $2, window_end = $3 WHERE id = $1",
            row["stop_id"],
            row["window_start"],
            row["window_end"],
        )
    return row


async def rate(pool: asyncpg.Pool, stop_id: int, stars: int, comment: str) -> bool:
    """The customer's rating of a delivered stop; False: rated already."""
    result: str = await pool.execute(
        "INSERT INTO ratings (stop_id, stars, comment) VALUES ($1, $2, $3) "
        "ON CONFLICT (stop_id) DO NOTHING",
        stop_id,
        stars,
        comment,
    )
    return result.endswith(" 1")


async def ratings(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    """The customers' ratings, newest first (for the dispatcher)."""
    rows = await pool.fetch(
        "SELECT r.stop_id, s.route_id, s.name, r.stars, r.comment, r.created_at "
        "FROM ratings r JOIN stops s ON s.id = r.stop_id ORDER BY r.created_at DESC LIMIT 500"
    )
    return [dict(r) for r in rows]
