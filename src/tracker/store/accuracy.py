"""Live ETA accuracy in PostgreSQL: each arrival scored once, and the sums per horizon.

`record_arrivals` is a route event sink: it runs in the transaction that stores the
`stop.arrived` events, reads the stop's earlier `stop.eta_changed` events from `events`
(the same transaction sees them, whether stored with this fix or long before) and writes
the samples `core.accuracy.score` makes of them into `eta_accuracy`, one row per arrival
(arrays by horizon). A stored event's sinks run once, and the arrival's event id is unique
besides, so an arrival is scored once.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

import asyncpg

from tracker.core import accuracy
from tracker.core.model import Event, EventType


def _epoch(value: str | None) -> float | None:
    return None if value is None else datetime.fromisoformat(value).timestamp()


async def record_arrivals(
    conn: asyncpg.Connection, device: str, stored: list[tuple[int, Event]]
) -> None:
    """Score every stop arrival among `stored` against what its stop was shown before.

    A routing event sink (see `services.route_log.EventSink`)."""
    arrivals = [
        (event_id, e)
        for event_id, e in stored
        if e.type == EventType.ARRIVED and e.stop_id is not None and e.route_id is not None
    ]
    if not arrivals:
        return
    rows = await conn.fetch(
        """
        SELECT id, stop_id, time, data->>'eta' AS eta, data->>'eta_earliest' AS earliest,
               data->>'eta_latest' AS latest
        FROM events
        WHERE stop_id = ANY($2::bigint[]) AND route_id = ANY($1::bigint[])
          AND type = 'stop.eta_changed'  -- a literal: the partial index events_eta_by_stop
          AND id < $3
        ORDER BY id
        """,
        sorted({e.route_id for _, e in arrivals if e.route_id is not None}),
        sorted({e.stop_id for _, e in arrivals if e.stop_id is not None}),
        max(event_id for event_id, _ in arrivals),
    )
    shown: dict[int, list[tuple[int, accuracy.Shown]]] = defaultdict(list)
    for r in rows:
        eta = _epoch(r["eta"])
        if eta is None:
            continue
        s = accuracy.Shown(r["time"].timestamp(), eta, _epoch(r["earliest"]), _epoch(r["latest"]))
        shown[r["stop_id"]].append((r["id"], s))
    out: list[tuple[Any, ...]] = []
    for event_id, e in arrivals:
        assert e.stop_id is not None and e.route_id is not None
        before = [s for i, s in shown.get(e.stop_id, []) if i < event_id]
        samples = accuracy.score(before, e.time.timestamp())
        if not samples:
            continue  # nothing was shown a minute or more before: nothing to score
        out.append(
            (
                event_id,
                e.route_id,
                e.stop_id,
                e.time,
                [x.horizon_s for x in samples],
                [x.error_s for x in samples],
                [x.inside for x in samples],
                [x.accurate for x in samples],
            )
        )
    # One row per arrival; its event's sinks run once, and arrival_event_id is unique.
    if out:
        await conn.executemany(
            """
            INSERT INTO eta_accuracy (arrival_event_id, route_id, stop_id, arrived_at,
                                      horizons_s, errors_s, inside, accurate)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
            ON CONFLICT (arrival_event_id) DO NOTHING
            """,
            out,
        )


async def totals(
    conn: asyncpg.Pool | asyncpg.Connection,
    since: datetime | None = None,
    until: datetime | None = None,
) -> tuple[dict[int, accuracy.Totals], int]:
    """The sums per horizon of the arrivals in [since, until), and how many arrivals."""
    rows = await conn.fetch(
        """
        SELECT u.horizon_s, count(*) AS n, sum(abs(u.error_s)) AS abs_error_s,
               sum(u.error_s) AS error_s, count(u.inside) AS with_interval,
               count(*) FILTER (WHERE u.inside) AS inside, count(u.accurate) AS rated,
               count(*) FILTER (WHERE u.accurate) AS accurate,
               count(DISTINCT a.id) AS arrivals
        FROM eta_accuracy a,
             unnest(a.horizons_s, a.errors_s, a.inside, a.accurate)
                 AS u(horizon_s, error_s, inside, accurate)
        WHERE ($1::timestamptz IS NULL OR a.arrived_at >= $1)
          AND ($2::timestamptz IS NULL OR a.arrived_at < $2)
        GROUP BY GROUPING SETS ((u.horizon_s), ())
        """,
        since,
        until,
    )
    out: dict[int, accuracy.Totals] = {}
    arrivals = 0
    for r in rows:
        if r["horizon_s"] is None:
            arrivals = r["arrivals"]  # the grand total: every arrival has some horizon
            continue
        out[r["horizon_s"]] = accuracy.Totals(
            r["n"],
            r["abs_error_s"],
            r["error_s"],
            r["with_interval"],
            r["inside"],
            r["rated"],
            r["accurate"],
        )
    return out, arrivals
