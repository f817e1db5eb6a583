"""The customer message outbox, templates and opt-outs in PostgreSQL.

One row per (stop, kind, channel): queuing is `INSERT ... ON CONFLICT DO NOTHING`, so a
repeated event, a retried request or two instances never queue a message twice. Messages
for route events are queued by `enqueue_events`, a routing event sink that runs in the
transaction storing the events. Workers `claim` due rows with `FOR UPDATE SKIP LOCKED`
and a lease, exactly like the webhook outbox (store/webhooks.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from tracker.core import notices
from tracker.core.model import Event, EventType

PENDING = "pending"
SENT = "sent"
FAILED = "failed"
SUPPRESSED = "suppressed"
CANCELLED = "cancelled"
STATUSES = frozenset({PENDING, SENT, FAILED, SUPPRESSED, CANCELLED})

_EVENT_KINDS = {
    EventType.ARRIVING: notices.ARRIVING,
    EventType.COMPLETED: notices.DELIVERED,
    EventType.FAILED: notices.FAILED,
}

# Queue a kind for stops (by id) on each channel the stop has a contact for; addresses that
# opted out are recorded as suppressed (the dispatcher sees why nothing went out).
_ENQUEUE = """
INSERT INTO messages (stop_id, kind, channel, recipient, language, link, status,
                      next_attempt_at, last_error)
SELECT s.id, q.kind, c.channel, c.recipient, COALESCE(NULLIF(s.language, ''), $4),
       CASE WHEN o.address IS NULL THEN q.link END,
       CASE WHEN o.address IS NULL THEN 'pending' ELSE 'suppressed' END,
       GREATEST(now(), COALESCE(q.due, now())),
       CASE WHEN o.address IS NULL THEN NULL ELSE 'the customer opted out' END
FROM unnest($1::bigint[], $2::text[], $3::text[], $5::timestamptz[])
     AS q(stop_id, kind, link, due)
JOIN stops s ON s.id = q.stop_id
CROSS JOIN LATERAL (VALUES ('email', s.email), ('sms', s.phone)) AS c(channel, recipient)
LEFT JOIN message_opt_outs o ON o.address = c.recipient
WHERE c.recipient <> '' AND c.channel = ANY($6::text[])
ON CONFLICT (stop_id, kind, channel) DO NOTHING
"""


async def enqueue(
    conn: asyncpg.Connection | asyncpg.Pool,
    items: Sequence[tuple[int, str, str | None, datetime | None]],
    language: str,
    channels: Sequence[str],
) -> None:
    """Queue (stop id, kind, tracking link or None, due time or None) on `channels`."""
    if not items or not channels:
        return
    await conn.execute(
        _ENQUEUE,
        [i[0] for i in items],
        [i[1] for i in items],
        [i[2] for i in items],
        language,
        [i[3] for i in items],
        list(channels),
    )


def event_sink(language: str, channels: Sequence[str]) -> Any:
    """A routing event sink queuing arriving / delivered / failed messages."""

    async def enqueue_events(
        conn: asyncpg.Connection, batch: Sequence[tuple[str, list[tuple[int, Event]]]]
    ) -> None:
        items = [
            (e.stop_id, _EVENT_KINDS[e.type], None, None)
            for _, stored in batch
            for _, e in stored
            if e.type in _EVENT_KINDS and e.stop_id is not None
        ]
        await enqueue(conn, items, language, channels)

    return enqueue_events


@dataclass(frozen=True, slots=True)
class Claimed:
    """A message a worker holds for one attempt, with what its template needs."""

    id: int
    stop_id: int
    kind: str
    channel: str
    recipient: str
    language: str
    link: str | None
    attempt: int
    stop: dict[str, Any]


async def claim(pool: asyncpg.Pool, limit: int, lease_s: float) -> list[Claimed]:
    """Up to `limit` due messages, locked against other workers for `lease_s` seconds."""
    rows = await pool.fetch(
        """
        WITH due AS (
            SELECT id FROM messages
            WHERE status = 'pending' AND next_attempt_at <= now()
            ORDER BY next_attempt_at, id LIMIT $1 FOR UPDATE SKIP LOCKED
        )
        UPDATE messages m
        SET attempts = m.attempts + 1, next_attempt_at = now() + make_interval(secs => $2)
        FROM due, stops s
        WHERE m.id = due.id AND s.id = m.stop_id
        RETURNING m.id, m.stop_id, m.kind, m.channel, m.recipient, m.language, m.link,
                  m.attempts, s.name, s.recipient AS person, s.address, s.window_start,
                  s.window_end, s.eta, s.status, s.completed_at, s.outcome, s.pin
        """,
        limit,
        lease_s,
    )
    return [
        Claimed(
            r["id"],
            r["stop_id"],
            r["kind"],
            r["channel"],
            r["recipient"],
            r["language"],
            r["link"],
            r["attempts"],
            {
                "name": r["name"],
                "recipient": r["person"],
                "address": r["address"],
                "window_start": r["window_start"],
                "window_end": r["window_end"],
                "eta": r["eta"],
                "status": r["status"],
                "completed_at": r["completed_at"],
                "outcome": r["outcome"] or {},
                "pin": r["pin"],
            },
        )
        for r in rows
    ]


async def finish(
    pool: asyncpg.Pool,
    message: Claimed,
    status: str,
    *,
    subject: str = "",
    body: str = "",
    error: str | None = None,
    provider_id: str | None = None,
    retry_in_s: float | None = None,
    due: datetime | None = None,
) -> None:
    """Settle an attempt: sent, failed, suppressed or cancelled, or pending again (in
    `retry_in_s` seconds, or at `due`). A sent or final message forgets its link."""
    await pool.execute(
        """
        UPDATE messages
        SET status = $3, subject = $4, body = $5, last_error = $6,
            provider_id = COALESCE($7, provider_id),
            sent_at = CASE WHEN $3 = 'sent' THEN now() ELSE sent_at END,
            next_attempt_at = CASE
                WHEN $3 <> 'pending' THEN next_attempt_at
                WHEN $9::timestamptz IS NOT NULL THEN $9::timestamptz
                ELSE now() + make_interval(secs => $8::float8) END,
            link = CASE WHEN $3 = 'pending' THEN link END
        WHERE id = $1 AND status = 'pending' AND attempts = $2
        """,
        message.id,
        message.attempt,
        status,
        subject,
        body,
        error,
        provider_id,
        retry_in_s or 0.0,
        due,
    )


async def listing(
    pool: asyncpg.Pool,
    route_id: int | None,
    stop_id: int | None,
    status: str | None,
    limit: int,
) -> list[dict[str, Any]]:
    """Messages newest first, for the dispatcher (never the tracking link)."""
    rows = await pool.fetch(
        """
        SELECT m.id, m.stop_id, s.route_id, m.kind, m.channel, m.recipient, m.language,
               m.status, m.attempts, m.created_at, m.next_attempt_at, m.sent_at, m.subject,
               m.body, m.provider_id, m.last_error
        FROM messages m JOIN stops s ON s.id = m.stop_id
        WHERE ($1::bigint IS NULL OR s.route_id = $1) AND ($2::bigint IS NULL OR m.stop_id = $2)
          AND ($3::text IS NULL OR m.status = $3)
        ORDER BY m.id DESC LIMIT $4
        """,
        route_id,
        stop_id,
        status,
        limit,
    )
    return [dict(r) for r in rows]


# -- templates and opt-outs -------------------------------------------------------------------


async def template(
    pool: asyncpg.Pool, kind: str, channel: str, language: str
) -> notices.Template | None:
    """The company's template for (kind, channel, language), if it wrote one."""
    row = await pool.fetchrow(
        "SELECT subject, body FROM message_templates "
        "WHERE kind = $1 AND channel = $2 AND language = $3",
        kind,
        channel,
        language,
    )
    return None if row is None else notices.Template(row["subject"], row["body"])


async def templates(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    """Every template the company wrote."""
    rows = await pool.fetch(
        "SELECT kind, channel, language, subject, body, updated_at FROM message_templates "
        "ORDER BY kind, channel, language"
    )
    return [dict(r) for r in rows]


async def put_template(
    pool: asyncpg.Pool, kind: str, channel: str, language: str, subject: str, body: str
) -> None:
    """Create or replace a template."""
    await pool.execute(
        "INSERT INTO message_templates (kind, channel, language, subject, body) "
        "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (kind, channel, language) "
        "DO UPDATE SET subject = EXCLUDED.subject, body = EXCLUDED.body, updated_at = now()",
        kind,
        channel,
        language,
        subject,
        body,
    )


async def delete_template(pool: asyncpg.Pool, kind: str, channel: str, language: str) -> bool:
    """Back to the built-in template. False: there was none."""
    result: str = await pool.execute(
        "DELETE FROM message_templates WHERE kind = $1 AND channel = $2 AND language = $3",
        kind,
        channel,
        language,
    )
    return result.endswith(" 1")


async def opt_out(pool: asyncpg.Pool, stop_id: int) -> None:
    """No more messages to this stop's e-mail address and phone number (any stop)."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO message_opt_outs (address) "
            "SELECT a FROM stops, unnest(ARRAY[email, phone]) AS a "
            "WHERE id = $1 AND a <> '' ON CONFLICT DO NOTHING",
            stop_id,
        )
        await conn.execute(
            "UPDATE messages SET status = 'suppressed', last_error = 'the customer opted out', "
            "link = NULL WHERE status = 'pending' AND recipient IN "
            "(SELECT address FROM message_opt_outs)"
        )


async def opted_out(pool: asyncpg.Pool, stop_id: int) -> bool:
    """Whether the stop's contact asked for no messages."""
    found: bool = await pool.fetchval(
        "SELECT EXISTS (SELECT 1 FROM stops s JOIN message_opt_outs o "
        "ON o.address IN (s.email, s.phone) WHERE s.id = $1)",
        stop_id,
    )
    return found


async def proofs_of(pool: asyncpg.Pool, stop_id: int) -> list[asyncpg.Record]:
    """The stop's proof images (for the delivered e-mail's attachments)."""
    return list(
        await pool.fetch(
            "SELECT id, kind, media_type, data FROM proofs WHERE stop_id = $1 ORDER BY id",
            stop_id,
        )
    )
