"""Retention against a real PostgreSQL: whole month partitions of `positions` past the age
are dropped (by `tracker prune`, its dry run, and the server's background loop), recent
months and the month holding the cut-off are untouched, and ingest goes on around it.

Pruning with a 60-day age would drop the months other tests store pings in (2013, 2014,
2015...), so these tests run on a database of their own, made and dropped here."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import pytest

from tests.conftest import (
    DeviceCreds,
    Server,
    ServerFactory,
    add_device,
    own_database,
    stored_positions,
)
from tracker.store import retention
from tracker.store.db import create_pool

DAYS = 60
TRACKER = [sys.executable, "-m", "tracker.tools.cli"]


def month_start(t: datetime) -> datetime:
    return t.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def month_end(t: datetime) -> datetime:
    start = month_start(t)
    return (start + timedelta(days=32)).replace(day=1)


def partition_of(t: datetime) -> str:
    return f"positions_{t:%Y%m}"


@pytest.fixture
async def own_db() -> AsyncIterator[str]:
    """A database of this test alone (pruning it cannot touch other tests' months)."""
    async with own_database("retention") as url:
        yield url


@pytest.fixture
async def pool(own_db: str) -> AsyncIterator[asyncpg.Pool]:
    p = await create_pool(own_db, 2)
    yield p
    await p.close()


async def partitions(pool: asyncpg.Pool) -> set[str]:
    rows = await pool.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'positions'::regclass"
    )
    return {r["relname"] for r in rows}


async def post(srv: Server, dev: DeviceCreds, times: list[datetime]) -> None:
    body = {"positions": [{"time": t.isoformat(), "lat": 48.1, "lon": 11.5} for t in times]}
    async with httpx.AsyncClient(base_url=srv.base_url) as client:
        r = await client.post("/api/v1/positions", json=body, headers=dev.headers)
    assert r.status_code == 202 and r.json()["stored"] == len(times), r.text


class Fleet:
    """Pings in old months, in the cut-off's month and now, stored through the API."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self.cutoff = retention.cutoff_for(DAYS, now)
        self.ancient = [datetime(2014, 1, 15, 8, tzinfo=UTC), datetime(2014, 1, 16, 8, tzinfo=UTC)]
        self.ancient += [datetime(2014, 1, 17, 8, tzinfo=UTC)]
        self.months_ago = [now - timedelta(days=120), now - timedelta(days=119)]
        # Past the age but in the month holding the cut-off (unless the cut-off is the very
        # first hours of a month): month-granular retention keeps it.
        self.near = [self.cutoff - timedelta(hours=1)]
        self.recent = [now - timedelta(hours=2), now - timedelta(hours=1)]

    @property
    def all(self) -> list[datetime]:
        return self.ancient + self.months_ago + self.near + self.recent

    def expired(self, t: datetime) -> bool:
        return month_end(t) <= self.cutoff

    def expected_drops(self) -> dict[str, int]:
        drops: dict[str, int] = {}
        for t in self.all:
            if self.expired(t):
                drops[partition_of(t)] = drops.get(partition_of(t), 0) + 1
        return drops


async def store_fleet(srv: Server) -> tuple[DeviceCreds, Fleet]:
    dev = await add_device(srv)
    fleet = Fleet(datetime.now(UTC))
    await post(srv, dev, fleet.all)
    return dev, fleet


def run_cli(url: str, *args: str, days: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKER_")}
    env["DATABASE_URL"] = url
    if days is not None:
        env["TRACKER_RETENTION_DAYS"] = days
    return subprocess.run(
        [*TRACKER, "prune", *args], env=env, capture_output=True, text=True, timeout=60
    )


def printed_drops(stdout: str, verb: str) -> dict[str, int]:
    found = re.findall(rf"^{verb} (positions_\d{{6}}): \S+ to \S+, (\d+) row\(s\)$", stdout, re.M)
    return {name: int(rows) for name, rows in found}


async def test_prune_drops_whole_expired_months_and_nothing_else(
    own_db: str, pool: asyncpg.Pool, server_factory: ServerFactory
) -> None:
    srv = await server_factory(database_url=own_db)
    dev, fleet = await store_fleet(srv)
    expected = fleet.expected_drops()
    assert partition_of(fleet.ancient[0]) in expected
    assert partition_of(fleet.months_ago[0]) in expected
    before = await partitions(pool)
    assert set(expected) <= before

    # Dry run: lists and counts, drops nothing.
    dry = run_cli(own_db, "--older-than-days", str(DAYS), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert printed_drops(dry.stdout, "would drop") == expected
    assert await partitions(pool) == before
    assert len(await stored_positions(pool, dev.unique_id)) == len(fleet.all)

    done = run_cli(own_db, "--older-than-days", str(DAYS))
    assert done.returncode == 0, done.stderr
    assert printed_drops(done.stdout, "dropped") == expected
    total = sum(expected.values())
    assert f"dropped {len(expected)} partition(s), {total} row(s)" in done.stdout

    after = await partitions(pool)
    assert after == before - set(expected)
    # The month holding the cut-off stays whole, and so do the recent months.
    assert partition_of(fleet.cutoff) in after
    assert partition_of(fleet.now) in after
    kept = [t for t in fleet.all if not fleet.expired(t)]
    stored = [r["fix_time"] for r in await stored_positions(pool, dev.unique_id)]
    assert stored == sorted(kept)
    # Past the age, but its month holds the cut-off: kept (unless the cut-off falls in the
    # first hour of a month, when the ping belongs to the month before).
    assert (fleet.near[0] in stored) != fleet.expired(fleet.near[0])
    # The live position is not history: it stays.
    assert await pool.fetchval("SELECT count(*) FROM last_positions") == 1

    # Nothing left to do; a late ping for a dropped month is still taken (its month is made
    # again), and the next prune takes it away.
    again = run_cli(own_db, "--older-than-days", str(DAYS))
    assert "dropped 0 partition(s), 0 row(s)" in again.stdout
    late = datetime(2014, 1, 20, 8, tzinfo=UTC)
    await post(srv, dev, [late])
    assert partition_of(late) in await partitions(pool)
    result = await retention.prune(own_db, DAYS)
    assert [(p.name, p.rows) for p in result.dropped] == [(partition_of(late), 1)]


async def test_the_cli_takes_the_age_from_the_environment_or_refuses(own_db: str) -> None:
    refused = run_cli(own_db)
    assert refused.returncode == 2
    assert refused.stderr.strip().count("\n") == 0 and "--older-than-days" in refused.stderr
    assert run_cli(own_db, "--older-than-days", "0").returncode == 2
    from_env = run_cli(own_db, "--dry-run", days="30")
    assert from_env.returncode == 0, from_env.stderr
    assert "would drop 0 partition(s), 0 row(s)" in from_env.stdout
    assert "(30 days ago)" in from_env.stdout


async def test_one_instance_prunes_at_a_time(
    own_db: str, pool: asyncpg.Pool, server_factory: ServerFactory
) -> None:
    srv = await server_factory(database_url=own_db)
    _, fleet = await store_fleet(srv)
    async with pool.acquire() as holder:
        await holder.execute("SELECT pg_advisory_lock($1)", retention.LOCK_KEY)
        try:
            busy = await retention.prune(own_db, DAYS)
        finally:
            await holder.execute("SELECT pg_advisory_unlock($1)", retention.LOCK_KEY)
    assert busy.busy and busy.dropped == []
    assert set(fleet.expected_drops()) <= await partitions(pool)
    done = await retention.prune(own_db, DAYS)
    assert {p.name: p.rows for p in done.dropped} == fleet.expected_drops()


async def test_a_month_left_detached_by_an_interrupted_run_is_dropped(
    own_db: str, pool: asyncpg.Pool, server_factory: ServerFactory
) -> None:
    srv = await server_factory(database_url=own_db)
    _, fleet = await store_fleet(srv)
    name = partition_of(fleet.ancient[0])
    await pool.execute(f"ALTER TABLE positions DETACH PARTITION {name}")
    result = await retention.prune(own_db, DAYS)
    assert {p.name: p.rows for p in result.dropped} == fleet.expected_drops()
    assert await pool.fetchval("SELECT to_regclass($1)", name) is None


async def test_the_server_prunes_in_the_background_when_retention_is_set(
    own_db: str, pool: asyncpg.Pool, server_factory: ServerFactory
) -> None:
    srv = await server_factory(database_url=own_db)
    dev, fleet = await store_fleet(srv)
    expected = fleet.expected_drops()
    assert set(expected) <= await partitions(pool)
    await server_factory(database_url=own_db, retention_days=DAYS, retention_check_s=0.2)
    for _ in range(150):
        if not set(expected) & await partitions(pool):
            break
        await asyncio.sleep(0.1)
    assert not set(expected) & await partitions(pool)
    stored = [r["fix_time"] for r in await stored_positions(pool, dev.unique_id)]
    assert stored == sorted(t for t in fleet.all if not fleet.expired(t))


async def test_a_ping_past_the_retention_is_rejected_at_ingest(
    own_db: str, pool: asyncpg.Pool, server_factory: ServerFactory
) -> None:
    # Stored, it would bring back a month the last prune dropped.
    srv = await server_factory(database_url=own_db, retention_days=DAYS)
    dev = await add_device(srv)
    now = datetime.now(UTC)
    old, fresh = now - timedelta(days=DAYS + 1), now - timedelta(days=DAYS - 1)
    body = {"positions": [{"time": t.isoformat(), "lat": 48.1, "lon": 11.5} for t in (old, fresh)]}
    async with srv.client() as client:
        r = await client.post("/api/v1/positions", json=body, headers=dev.headers)
    assert r.status_code == 202, r.text
    answer = r.json()
    assert (answer["stored"], answer["rejected"]) == (1, 1)
    assert answer["rejects"][0]["index"] == 0
    assert "past the retention" in answer["rejects"][0]["reason"]
    stored = [row["fix_time"] for row in await stored_positions(pool, dev.unique_id)]
    assert stored == [fresh]
