"""Retention: dropping whole months of `positions` once they are older than a set age.

`positions` is range-partitioned by calendar month (UTC; `tracker_ensure_partition` in
sql/001_ingest.sql), so retention is month-granular: a partition goes only once its upper
bound is at or before the cut-off (now minus the age), and the partition holding the
cut-off stays whole, so positions live up to a month longer than the age. Dropping a
partition is instant and leaves no dead rows behind, unlike DELETE.

How it avoids blocking ingest: each partition is detached with
``ALTER TABLE positions DETACH PARTITION … CONCURRENTLY``, which never holds a lock that
stops inserts into `positions`; the detached table is counted and then dropped on its own.
A session-level advisory lock lets only one instance prune at a time (the others skip the
round), and `lock_timeout` bounds every lock wait: a partition whose lock did not come in
time is left for the next round (a detach interrupted half-way is finished then with
``DETACH … FINALIZE``, and a table left detached but not dropped is dropped then).

`last_positions` is left alone: the live position of a device idle for longer than the
retention stays until the device moves again.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import asyncpg

from tracker.store.db import DB_ERRORS

log = logging.getLogger(__name__)

# Any constant: the advisory lock that makes one instance at a time prune.
LOCK_KEY = 0x7472_6574  # "tret"
# What tracker_ensure_partition names a month's partition.
PARTITION_NAME = re.compile(r"positions_(\d{4})(\d{2})")

# Partitions of `positions` with their bounds (read back from the catalog's own rendering of
# them, cast in the same session, so time zones cannot shift them).
_PARTITIONS = r"""
SELECT c.relname AS name, b[1]::timestamptz AS lower, b[2]::timestamptz AS upper,
       i.inhdetachpending AS pending
FROM pg_inherits i
JOIN pg_class c ON c.oid = i.inhrelid
CROSS JOIN LATERAL regexp_match(
    pg_get_expr(c.relpartbound, c.oid), 'FROM \(''([^'']+)''\) TO \(''([^'']+)''\)'
) AS b
WHERE i.inhparent = 'positions'::regclass AND b[2]::timestamptz <= $1
ORDER BY lower
"""

# Month tables left detached (an earlier run stopped between DETACH and DROP).
_ORPHANS = r"""
SELECT c.relname AS name
FROM pg_class c
WHERE c.relkind = 'r' AND NOT c.relispartition AND c.relname ~ '^positions_[0-9]{6}$'
  AND c.relnamespace = (SELECT relnamespace FROM pg_class WHERE oid = 'positions'::regclass)
"""


@dataclass(frozen=True)
class Partition:
    """One month of positions: [lower, upper), and its rows when counted."""

    name: str
    lower: datetime
    upper: datetime
    rows: int = 0
    attached: bool = True
    detach_pending: bool = False


@dataclass
class Pruned:
    """What a prune did (or, dry run, would do)."""

    cutoff: datetime
    dry_run: bool = False
    dropped: list[Partition] = field(default_factory=list)
    # Expired but their lock did not come within lock_timeout: the next round retries.
    deferred: list[Partition] = field(default_factory=list)
    # Another instance holds the prune lock: nothing was done.
    busy: bool = False

    @property
    def rows(self) -> int:
        """Rows in the dropped partitions."""
        return sum(p.rows for p in self.dropped)


def cutoff_for(older_than_days: float, now: datetime | None = None) -> datetime:
    """The cut-off instant: positions before it are past the retention."""
    return (now or datetime.now(UTC)) - timedelta(days=older_than_days)


def _month_bounds(name: str) -> tuple[datetime, datetime] | None:
    match = PARTITION_NAME.fullmatch(name)
    if match is None:
        return None
    year, month = int(match[1]), int(match[2])
    if not (1 <= month <= 12 and 1 <= year < 9999):
        return None
    lower = datetime(year, month, 1, tzinfo=UTC)
    upper = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
    return lower, upper


def _quoted(name: str) -> str:
    # Only names tracker_ensure_partition makes get here; quoting keeps it that way.
    if PARTITION_NAME.fullmatch(name) is None:
        raise ValueError(f"not a positions partition: {name!r}")
    return f'"{name}"'


async def expired(conn: asyncpg.Connection, cutoff: datetime) -> list[Partition]:
    """Partitions (and leftover detached month tables) wholly before `cutoff`, oldest first."""
    found = [
        Partition(r["name"], r["lower"], r["upper"], detach_pending=r["pending"])
        for r in await conn.fetch(_PARTITIONS, cutoff)
    ]
    for r in await conn.fetch(_ORPHANS):
        bounds = _month_bounds(r["name"])
        if bounds is not None and bounds[1] <= cutoff:
            found.append(Partition(r["name"], *bounds, attached=False))
    return sorted(found, key=lambda p: p.lower)


async def _count(conn: asyncpg.Connection, part: Partition) -> int:
    rows: int = await conn.fetchval(f"SELECT count(*) FROM {_quoted(part.name)}")
    return rows


async def _drop(conn: asyncpg.Connection, part: Partition) -> Partition:
    table = _quoted(part.name)
    if part.attached:
        how = "FINALIZE" if part.detach_pending else "CONCURRENTLY"
        # Not in a transaction: DETACH CONCURRENTLY commits in steps of its own.
        await conn.execute(f"ALTER TABLE positions DETACH PARTITION {table} {how}")
    counted = replace(part, rows=await _count(conn, part), attached=False)
    await conn.execute(f"DROP TABLE {table}")
    return counted


async def prune(
    database_url: str,
    older_than_days: float,
    *,
    dry_run: bool = False,
    now: datetime | None = None,
    lock_timeout_s: float = 5.0,
) -> Pruned:
    """Drop every month partition of `positions` whose end is `older_than_days` or more
    ago (dry run: count them only). Opens its own connection: no command timeout applies,
    since DETACH CONCURRENTLY waits for the transactions reading `positions`."""
    if older_than_days <= 0:
        raise ValueError("older_than_days must be positive")
    result = Pruned(cutoff_for(older_than_days, now), dry_run)
    conn = await asyncpg.connect(database_url, timeout=10.0)
    try:
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", LOCK_KEY):
            result.busy = True
            return result
        try:
            await conn.execute(f"SET lock_timeout = {max(1, int(lock_timeout_s * 1000))}")
            for part in await expired(conn, result.cutoff):
                if dry_run:
                    result.dropped.append(replace(part, rows=await _count(conn, part)))
                    continue
                try:
                    result.dropped.append(await _drop(conn, part))
                except asyncpg.LockNotAvailableError:
                    result.deferred.append(part)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", LOCK_KEY)
    finally:
        await conn.close()
    return result


def describe(part: Partition, dry_run: bool = False) -> str:
    """One line about a dropped partition."""
    verb = "would drop" if dry_run else "dropped"
    return (
        f"{verb} {part.name}: {part.lower.date().isoformat()} to {part.upper.date().isoformat()},"
        f" {part.rows} row(s)"
    )


def report(result: Pruned, older_than_days: float) -> list[str]:
    """The lines `tracker prune` prints (and the retention loop logs)."""
    cutoff = result.cutoff.isoformat(timespec="seconds")
    if result.busy:
        return ["another instance is pruning right now; nothing done"]
    lines = [describe(p, result.dry_run) for p in result.dropped]
    lines += [
        f"deferred {p.name}: its lock did not come in time; next run" for p in result.deferred
    ]
    verb = "would drop" if result.dry_run else "dropped"
    lines.append(
        f"{verb} {len(result.dropped)} partition(s), {result.rows} row(s): months ending by "
        f"{cutoff} ({older_than_days:g} days ago)"
    )
    return lines


async def keep_pruning(database_url: str, older_than_days: float, every_s: float) -> None:
    """The server's retention loop: prune now and every `every_s` seconds, logging drops."""
    while True:
        try:
            result = await prune(database_url, older_than_days)
        except (*DB_ERRORS, asyncpg.PostgresError) as exc:
            log.warning("retention: could not prune: %s", exc)
        else:
            if result.dropped or result.deferred:
                for line in report(result, older_than_days):
                    log.info("retention: %s", line)
        await asyncio.sleep(max(every_s, 0.1))
