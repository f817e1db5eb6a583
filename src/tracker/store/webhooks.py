"""Webhook subscriptions, the delivery outbox and its attempt log in PostgreSQL.

Deliveries are queued by `enqueue`, which runs inside the transaction that stores the
route events (a routing event sink): an event is queued exactly once, and only if it was
stored. Workers on any number of instances `claim` due deliveries with `FOR UPDATE SKIP
LOCKED`, which also moves them a lease into the future, so no two workers send the same
delivery at once and one that dies mid-attempt leaves it to be retried when the lease ends.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from tracker.core import webhooks
from tracker.core.model import Event, EventType

PENDING = "pending"
DELIVERED = "delivered"
FAILED = "failed"
CANCELLED = "cancelled"
STATUSES = frozenset({PENDING, DELIVERED, FAILED, CANCELLED})

_WEBHOOK_COLUMNS = "id, url, events, eta_threshold_s, description, active, created_at"


# -- subscriptions ----------------------------------------------------------------------------


async def create(
    pool: asyncpg.Pool,
    url: str,
    secret: str,
    events: Sequence[str],
    eta_threshold_s: float,
    description: str,
) -> asyncpg.Record:
    """A new active subscription."""
    row: asyncpg.Record = await pool.fetchrow(
        "INSERT INTO webhooks (url, secret, events, eta_threshold_s, description) "
        f"VALUES ($1, $2, $3, $4, $5) RETURNING {_WEBHOOK_COLUMNS}",
        url,
        secret,
        list(events),
        eta_threshold_s,
        description,
    )
    return row


async def active(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    """Every active subscription, oldest first."""
    return list(
        await pool.fetch(f"SELECT {_WEBHOOK_COLUMNS} FROM webhooks WHERE active ORDER BY id")
    )


async def find(pool: asyncpg.Pool, webhook_id: int) -> asyncpg.Record | None:
    """One subscription, deleted or not."""
    row: asyncpg.Record | None = await pool.fetchrow(
        f"SELECT {_WEBHOOK_COLUMNS} FROM webhooks WHERE id = $1", webhook_id
    )
    return row


async def delete(pool: asyncpg.Pool, webhook_id: int) -> bool:
    """Stop a subscription; its waiting deliveries are cancelled, its log is kept."""
    async with pool.acquire() as conn, conn.transaction():
        done: str = await conn.execute(
            "UPDATE webhooks SET active = false, deleted_at = now() WHERE id = $1 AND active",
            webhook_id,
        )
        if not done.endswith(" 1"):
            return False
        await conn.execute(
            "UPDATE webhook_deliveries SET status = 'cancelled', "
            "last_error = 'subscription deleted' WHERE webhook_id = $1 AND status = 'pending'",
            webhook_id,
        )
    return True


# -- the outbox -------------------------------------------------------------------------------


def _eta(event: Event) -> datetime | None:
    raw = event.data.get("eta")
    if not isinstance(raw, str):
        return None
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        return None
    return value if value.tzinfo is not None else None


async def enqueue(
    conn: asyncpg.Connection, batch: Sequence[tuple[str, list[tuple[int, Event]]]]
) -> None:
    """Queue one delivery per (subscription, event) it asked for.

    A routing event sink: runs in the transaction that stored the events (of a whole round
    of devices: the subscriptions are read once). ETA changes go out only when they moved
    past the subscription's threshold from the last one it was told (the per-device route
    lock serialises this per stop).
    """
    types = sorted({e.type for _, stored in batch for _, e in stored} & webhooks.SUBSCRIBABLE)
    if not types:
        return
    subs = await conn.fetch(
        "SELECT id, events, eta_threshold_s FROM webhooks WHERE active AND events && $1::text[]",
        types,
    )
    if not subs:
        return
    for device, stored in batch:
        await _enqueue_device(conn, device, stored, subs)


async def _enqueue_device(
    conn: asyncpg.Connection,
    device: str,
    stored: list[tuple[int, Event]],
    subs: Sequence[asyncpg.Record],
) -> None:
    stop_ids = sorted({e.stop_id for _, e in stored if e.stop_id is not None})
    stops = {
        r["id"]: r
        for r in await conn.fetch(
            "SELECT id, seq, name, recipient, status, eta FROM stops WHERE id = ANY($1::bigint[])",
            stop_ids,
        )
    }
    eta_subs = [s["id"] for s in subs if EventType.ETA_CHANGED in s["events"]]
    marks: dict[tuple[int, int], datetime] = {}
    if eta_subs and any(e.type == EventType.ETA_CHANGED for _, e in stored):
        for r in await conn.fetch(
            "SELECT webhook_id, stop_id, eta FROM webhook_eta_marks "
            "WHERE webhook_id = ANY($1::bigint[]) AND stop_id = ANY($2::bigint[])",
            eta_subs,
            stop_ids,
        ):
            marks[(r["webhook_id"], r["stop_id"])] = r["eta"]
    moved: dict[tuple[int, int], datetime] = {}
    rows: list[tuple[uuid.UUID, int, int, str, bytes]] = []
    for event_id, event in stored:
        for sub in subs:
            if event.type not in sub["events"]:
                continue
            data: dict[str, Any] | None = None
            if event.type == EventType.ETA_CHANGED:
                eta = _eta(event)
                if eta is None or event.stop_id is None:
                    continue
                key = (sub["id"], event.stop_id)
                told = marks.get(key)
                if not webhooks.eta_worth_telling(told, eta, sub["eta_threshold_s"]):
                    continue
                marks[key] = moved[key] = eta
                # "previous" is what this subscriber was told last, not the core's last ETA.
                data = {**event.data, "previous": None if told is None else told.isoformat()}
            public_id = uuid.uuid4()
            stop = stops.get(event.stop_id) if event.stop_id is not None else None
            payload = webhooks.body(str(public_id), event_id, event, device, stop, data)
            rows.append((public_id, sub["id"], event_id, event.type, payload))
    if rows:
        await conn.execute(
            "INSERT INTO webhook_deliveries (public_id, webhook_id, event_id, event_type, body) "
            "SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::bigint[], $4::text[], "
            "$5::bytea[])",
            *(list(column) for column in zip(*rows, strict=True)),
        )
    if moved:
        await conn.execute(
            "INSERT INTO webhook_eta_marks (webhook_id, stop_id, eta) "
            "SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::timestamptz[]) "
            "ON CONFLICT (webhook_id, stop_id) DO UPDATE SET eta = EXCLUDED.eta",
            [k[0] for k in moved],
            [k[1] for k in moved],
            list(moved.values()),
        )


@dataclass(frozen=True, slots=True)
class Claimed:
    """A delivery a worker now holds for one attempt."""

    id: int
    public_id: str
    event_type: str
    body: bytes
    attempt: int  # this attempt's number, from 1
    url: str
    secret: str
    active: bool  # false: the subscription was deleted meanwhile; do not send


async def claim(pool: asyncpg.Pool, limit: int, lease_s: float) -> list[Claimed]:
    """Up to `limit` due deliveries, locked against other workers for `lease_s` seconds."""
    rows = await pool.fetch(
        """
        WITH due AS (
            SELECT id FROM webhook_deliveries
            WHERE status = 'pending' AND next_attempt_at <= now()
            ORDER BY next_attempt_at, id
            LIMIT $1
            FOR UPDATE SKIP LOCKED
        )
        UPDATE webhook_deliveries d
        SET attempts = d.attempts + 1, next_attempt_at = now() + make_interval(secs => $2)
        FROM due, webhooks w
        WHERE d.id = due.id AND w.id = d.webhook_id
        RETURNING d.id, d.public_id, d.event_type, d.body, d.attempts, w.url, w.secret, w.active
        """,
        limit,
        lease_s,
    )
    return [
        Claimed(
            r["id"],
            str(r["public_id"]),
            r["event_type"],
            bytes(r["body"]),
            r["attempts"],
            r["url"],
            r["secret"],
            r["active"],
        )
        for r in rows
    ]


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one attempt did."""

    started_at: datetime
    duration_ms: float
    status_code: int | None
    error: str | None


async def finish(
    pool: asyncpg.Pool,
    delivery: Claimed,
    attempt: Attempt | None,
    status: str,
    retry_in_s: float | None = None,
) -> None:
    """Log an attempt and settle the delivery: delivered, failed for good, cancelled, or
    pending again in `retry_in_s` seconds."""
    async with pool.acquire() as conn, conn.transaction():
        if attempt is not None:
            await conn.execute(
                "INSERT INTO webhook_attempts (delivery_id, attempt, started_at, duration_ms, "
                "status_code, error) VALUES ($1, $2, $3, $4, $5, $6) "
                "ON CONFLICT (delivery_id, attempt) DO NOTHING",
                delivery.id,
                delivery.attempt,
                attempt.started_at,
                attempt.duration_ms,
                attempt.status_code,
                attempt.error,
            )
        error = None if attempt is None else attempt.error
        if error is None and attempt is not None and status != DELIVERED:
            error = f"HTTP {attempt.status_code}"
        # A success always counts; a failure only if no later attempt took over meanwhile
        # (this one outlived its lease).
        await conn.execute(
            """
            UPDATE webhook_deliveries
            SET status = $3,
                delivered_at = CASE WHEN $3 = 'delivered' THEN now() ELSE delivered_at END,
                next_attempt_at = CASE WHEN $3 = 'pending'
                                       THEN now() + make_interval(secs => $4::float8)
                                       ELSE next_attempt_at END,
                last_error = CASE WHEN $3 = 'delivered' THEN last_error ELSE $5 END
            WHERE id = $1 AND status = 'pending' AND ($3 = 'delivered' OR attempts = $2)
            """,
            delivery.id,
            delivery.attempt,
            status,
            retry_in_s or 0.0,
            error,
        )


# -- reading the log --------------------------------------------------------------------------


async def deliveries(
    pool: asyncpg.Pool, webhook_id: int, status: str | None, limit: int
) -> list[dict[str, Any]]:
    """A subscription's deliveries, newest first, each with its attempts in order."""
    rows = await pool.fetch(
        "SELECT id, public_id, event_type, status, attempts, created_at, next_attempt_at, "
        "delivered_at, last_error, body FROM webhook_deliveries "
        "WHERE webhook_id = $1 AND ($2::text IS NULL OR status = $2) ORDER BY id DESC LIMIT $3",
        webhook_id,
        status,
        limit,
    )
    attempts: dict[int, list[asyncpg.Record]] = {}
    if rows:
        for a in await pool.fetch(
            "SELECT delivery_id, attempt, started_at, duration_ms, status_code, error "
            "FROM webhook_attempts WHERE delivery_id = ANY($1::bigint[]) "
            "ORDER BY delivery_id, attempt",
            [r["id"] for r in rows],
        ):
            attempts.setdefault(a["delivery_id"], []).append(a)
    return [{**dict(r), "attempt_log": attempts.get(r["id"], [])} for r in rows]
