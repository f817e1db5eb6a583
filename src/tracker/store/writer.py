"""Group commit of positions: many requests share one COPY and one commit.

A request hands its rows to `PositionWriter.write` and awaits the result; the writer
gathers rows for a couple of milliseconds (or until a row limit), COPYs them straight into
`positions`, advances each device's `last_positions` only forward in time, commits, and
only then resolves every waiting request. COPY cannot skip duplicates, so a batch holding
one (a phone's retry) is rolled back and written again through a staging table that does.
A failed commit fails every request of its batch: nothing unacknowledged is reported as
stored and nothing acknowledged is lost. Rows whose values cannot be encoded or stored fail
only their own request (`StoreRefused`): attributes are encoded when a request hands them
in, and a batch the database or an encoder refuses is committed again request by request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import orjson

from tracker import metrics, offload
from tracker.store.db import DB_ERRORS, init_connection

log = logging.getLogger(__name__)

# (device_id, fix_time, received_at, (lon, lat), speed, course, accuracy, altitude,
# attributes): the column order of `positions`, so rows go to COPY as they are.
PositionRow = tuple[
    int,
    datetime,
    datetime,
    tuple[float, float],
    float | None,
    float | None,
    float | None,
    float | None,
    Mapping[str, Any],
]

POSITION_COLUMNS = (
    "device_id",
    "fix_time",
    "received_at",
    "geog",
    "speed",
    "course",
    "accuracy",
    "altitude",
    "attributes",
)

_STAGE_COLUMNS = (
    "seq",
    "device_id",
    "fix_time",
    "received_at",
    "lon",
    "lat",
    "speed",
    "course",
    "accuracy",
    "altitude",
    "attributes",
)

# The slow path, for a batch holding duplicates: staged rows move into `positions`
# skipping keys already stored (and repeats within the batch: the first one wins).
_MOVE = """
INSERT INTO positions (device_id, fix_time, received_at, geog, speed, course, accuracy,
                       altitude, attributes)
SELECT DISTINCT ON (device_id, fix_time)
       device_id, fix_time, received_at,
       ST_SetSRID(ST_MakePoint(lon, lat), 4326)::geography,
       speed, course, accuracy, altitude, attributes
FROM ingest_stage
ORDER BY device_id, fix_time, seq
ON CONFLICT DO NOTHING
RETURNING device_id, fix_time
"""

# The newest row of each device in a batch, as arrays (one statement for any batch size).
# Only a newer fix replaces the last position: a late ping from a phone that was offline
# goes into history but never moves the live position backwards.
_ADVANCE = """
INSERT INTO last_positions (device_id, fix_time, received_at, geog, speed, course, accuracy,
                            altitude, attributes)
SELECT d, t, r, ST_SetSRID(ST_MakePoint(x, y), 4326)::geography, s, c, a, h, j::jsonb
FROM unnest($1::bigint[], $2::timestamptz[], $3::timestamptz[], $4::float8[], $5::float8[],
            $6::real[], $7::real[], $8::real[], $9::real[], $10::text[])
     AS u(d, t, r, x, y, s, c, a, h, j)
ON CONFLICT (device_id) DO UPDATE SET
    fix_time = EXCLUDED.fix_time, received_at = EXCLUDED.received_at, geog = EXCLUDED.geog,
    speed = EXCLUDED.speed, course = EXCLUDED.course, accuracy = EXCLUDED.accuracy,
    altitude = EXCLUDED.altitude, attributes = EXCLUDED.attributes
WHERE last_positions.fix_time < EXCLUDED.fix_time
RETURNING device_id, fix_time
"""

# A PositionRow whose attributes are already JSON text (encoded when the request handed
# them in, so an unencodable value is that request's error alone).
_Row = tuple[
    int,
    datetime,
    datetime,
    tuple[float, float],
    float | None,
    float | None,
    float | None,
    float | None,
    bytes,
]

_EWKB_POINT = struct.Struct("<BIIdd")


def _ewkb_point(lon_lat: tuple[float, float]) -> bytes:
    # Little-endian EWKB point with SRID 4326: what geography's binary input takes, built
    # without a geometry object per row.
    return _EWKB_POINT.pack(1, 0x20000001, 4326, lon_lat[0], lon_lat[1])


def _jsonb_text(data: bytes) -> bytes:
    # jsonb's binary input: a version byte, then the JSON text.
    return b"\x01" + data


def _jsonb_value(data: bytes) -> Any:
    return orjson.loads(data[1:])


async def init_writer_connection(conn: asyncpg.Connection) -> None:
    """The pool's codecs, plus geography encoded from a (lon, lat) tuple for COPY and jsonb
    taken as JSON text already encoded."""
    await init_connection(conn)
    await conn.set_type_codec(
        "jsonb", encoder=_jsonb_text, decoder=_jsonb_value, schema="pg_catalog", format="binary"
    )
    await conn.set_type_codec(
        "geography",
        encoder=_ewkb_point,
        decoder=lambda data: data,
        schema="public",
        format="binary",
    )


def _encoded(rows: Sequence[PositionRow]) -> list[_Row]:
    return [(*row[:8], orjson.dumps(row[8])) for row in rows]


# Rows per COPY call: asyncpg encodes a call's records on the event loop, 10,000 fat rows
# in one go held it for over 100 ms; a batch is several calls in the same transaction.
_COPY_ROWS = 2000


async def _copy(
    conn: asyncpg.Connection, table: str, records: Sequence[tuple[Any, ...]], columns: Sequence[str]
) -> None:
    for start in range(0, len(records), _COPY_ROWS):
        chunk = records[start : start + _COPY_ROWS]
        await conn.copy_records_to_table(table, records=chunk, columns=columns)


class StoreUnavailable(Exception):
    """The database could not commit the rows; the client should retry later."""


class StoreRefused(Exception):
    """The database refused these rows' values; retrying them will not help."""


# Errors about the data of a request, not the database's health: refused by PostgreSQL, or
# by asyncpg's encoders before anything was sent (a float too large for `real`, a value of
# the wrong type); the connection stays usable after either.
_REFUSED = (
    asyncpg.DataError,
    asyncpg.IntegrityConstraintViolationError,
    TypeError,
    ValueError,
    OverflowError,
)


@dataclass(frozen=True, slots=True)
class WriteResult:
    """Per row of one `write` call: whether it was newly stored (False = duplicate), and
    whether it became its device's last position."""

    stored: list[bool]
    advanced: list[bool]


@dataclass(slots=True)
class _Pending:
    rows: Sequence[_Row]
    future: asyncio.Future[WriteResult]


class PositionWriter:
    """Batches rows from concurrent requests into group commits."""

    def __init__(
        self,
        database_url: str,
        interval_ms: float = 2.0,
        max_rows: int = 5000,
        max_inflight: int = 2,
    ) -> None:
        self._url = database_url
        self._interval = interval_ms / 1000.0
        self._max_rows = max_rows
        self._pending: deque[_Pending] = deque()
        self._pending_rows = 0
        self._wakeup = asyncio.Event()
        # Dedicated connections, one per batch in flight: a pool's acquire/release resets
        # the session each time, an extra round trip per batch on the hot path.
        self._conns: asyncio.Queue[asyncpg.Connection | None] = asyncio.Queue()
        for _ in range(max_inflight):
            self._conns.put_nowait(None)
        self._inflight: set[asyncio.Task[None]] = set()
        self._known_months: set[tuple[int, int]] = set()
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the batching loop on the running event loop."""
        self._task = asyncio.create_task(self._run(), name="position-writer")

    async def close(self) -> None:
        """Stop taking rows, flush everything pending, wait for in-flight commits."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)
        while not self._conns.empty():
            conn = self._conns.get_nowait()
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close(timeout=2)

    async def write(self, rows: Sequence[PositionRow]) -> WriteResult:
        """Store `rows`; returns once they are committed. Raises StoreUnavailable, or
        StoreRefused when these rows (and only these) cannot be stored."""
        if self._closing:
            raise StoreUnavailable("server is shutting down")
        if not rows:
            return WriteResult([], [])
        try:
            encoded = await offload.run(len(rows) >= offload.HEAVY_ITEMS, _encoded, rows)
        except orjson.JSONEncodeError as exc:
            # Too deep, an integer past 64 bits, a value JSON cannot hold: this request's
            # problem alone, found before its rows can join (and fail) a shared batch.
            log.warning("refused positions whose attributes cannot be encoded: %s", exc)
            raise StoreRefused(f"attributes cannot be stored: {exc}") from exc
        future: asyncio.Future[WriteResult] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(encoded, future))
        self._pending_rows += len(encoded)
        self._wakeup.set()
        return await future

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if not self._pending:
                if self._closing:
                    return
                continue
            if self._pending_rows < self._max_rows and not self._closing:
                # Let concurrent requests join this batch: the heart of group commit.
                await asyncio.sleep(self._interval)
            conn = await self._conns.get()
            batch = self._take()
            task = asyncio.create_task(self._flush(batch, conn))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)
            if self._pending:
                self._wakeup.set()

    def _take(self) -> list[_Pending]:
        batch: list[_Pending] = []
        count = 0
        while self._pending and (
            count == 0 or count + len(self._pending[0].rows) <= self._max_rows
        ):
            item = self._pending.popleft()
            count += len(item.rows)
            batch.append(item)
        self._pending_rows -= count
        return batch

    async def _flush(self, batch: list[_Pending], conn: asyncpg.Connection | None) -> None:
        try:
            if conn is None or conn.is_closed():
                conn = await asyncpg.connect(self._url, timeout=5.0)
                await init_writer_connection(conn)
            started = time.perf_counter()
            try:
                results = await self._commit_retrying(batch, conn)
            except _REFUSED:
                if len(batch) == 1:
                    raise
                # One request's rows are refused by the database (the filters should have
                # caught them): commit each request alone so the others still land.
                for item in batch:
                    await self._flush_alone(item, conn)
                return
            metrics.COMMIT_SECONDS.observe(time.perf_counter() - started)
            metrics.COMMIT_ROWS.observe(sum(len(item.rows) for item in batch))
            for item, result in zip(batch, results, strict=True):
                if not item.future.done():
                    item.future.set_result(result)
        except _REFUSED as exc:
            metrics.COMMITS_FAILED.labels("refused").inc()
            # An encoder's TypeError could also be a bug of ours: keep its traceback.
            bug = not isinstance(exc, asyncpg.PostgresError)
            log.warning("database refused a request's positions: %s", exc, exc_info=bug)
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(StoreRefused(type(exc).__name__))
        except Exception as exc:
            metrics.COMMITS_FAILED.labels("unavailable").inc()
            if not isinstance(exc, DB_ERRORS):
                log.exception("position batch failed")
            error = StoreUnavailable(f"database unavailable: {type(exc).__name__}")
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(error)
            if conn is not None:
                conn.terminate()
            conn = None
        finally:
            self._conns.put_nowait(conn)

    async def _flush_alone(self, item: _Pending, conn: asyncpg.Connection) -> None:
        try:
            [result] = await self._commit_retrying([item], conn)
        except _REFUSED as exc:
            metrics.COMMITS_FAILED.labels("refused").inc()
            bug = not isinstance(exc, asyncpg.PostgresError)
            log.warning("database refused a request's positions: %s", exc, exc_info=bug)
            item.future.set_exception(StoreRefused(type(exc).__name__))
        else:
            metrics.COMMIT_ROWS.observe(len(item.rows))
            item.future.set_result(result)

    async def _commit_retrying(
        self, batch: list[_Pending], conn: asyncpg.Connection
    ) -> list[WriteResult]:
        for attempt in range(3):
            try:
                return await self._commit(batch, conn)
            except (asyncpg.DeadlockDetectedError, asyncpg.SerializationError):
                # Two instances advancing the same devices' last positions; retry.
                if attempt == 2:
                    raise
            except asyncpg.CheckViolationError:
                # "No partition for row": a month seen before was dropped since (retention,
                # `tracker prune`); make the batch's months again. `positions` has no other
                # check that could fail here.
                if attempt == 2 or not self._known_months:
                    raise
                self._known_months.clear()
        raise AssertionError("unreachable")

    async def _commit(self, batch: list[_Pending], conn: asyncpg.Connection) -> list[WriteResult]:
        rows = [row for item in batch for row in item.rows]
        months = {(row[1].year, row[1].month) for row in rows}
        for year, month in months - self._known_months:
            await conn.execute(
                "SELECT tracker_ensure_partition($1)", datetime(year, month, 1, tzinfo=UTC)
            )
            self._known_months.add((year, month))
        newest: dict[int, _Row] = {}
        for row in rows:
            current = newest.get(row[0])
            if current is None or row[1] > current[1]:
                newest[row[0]] = row
        inserted: set[tuple[int, datetime]] | None = None
        try:
            async with conn.transaction():
                await _copy(conn, "positions", rows, POSITION_COLUMNS)
                advanced = await self._advance(conn, newest)
        except asyncpg.UniqueViolationError:
            async with conn.transaction():
                staged = [
                    (seq, r[0], r[1], r[2], r[3][0], r[3][1], *r[4:]) for seq, r in enumerate(rows)
                ]
                await _copy(conn, "ingest_stage", staged, _STAGE_COLUMNS)
                inserted = {(r[0], r[1]) for r in await conn.fetch(_MOVE)}
                advanced = await self._advance(conn, newest)
        results: list[WriteResult] = []
        for item in batch:
            stored: list[bool] = []
            moved: list[bool] = []
            for row in item.rows:
                key = (row[0], row[1])
                if inserted is None:
                    stored.append(True)
                elif key in inserted:
                    # The first occurrence of a key in the batch is the one that was stored.
                    inserted.discard(key)
                    stored.append(True)
                else:
                    stored.append(False)
                if key in advanced:
                    advanced.discard(key)
                    moved.append(True)
                else:
                    moved.append(False)
            results.append(WriteResult(stored, moved))
        return results

    @staticmethod
    async def _advance(
        conn: asyncpg.Connection, newest: dict[int, _Row]
    ) -> set[tuple[int, datetime]]:
        # Lock the devices' rows in one global order: concurrent batches (other writer
        # connections, other workers) then wait for each other instead of deadlocking.
        rows = [newest[device] for device in sorted(newest)]
        returned = await conn.fetch(
            _ADVANCE,
            [r[0] for r in rows],
            [r[1] for r in rows],
            [r[2] for r in rows],
            [r[3][0] for r in rows],
            [r[3][1] for r in rows],
            [r[4] for r in rows],
            [r[5] for r in rows],
            [r[6] for r in rows],
            [r[7] for r in rows],
            [r[8].decode() for r in rows],
        )
        return {(r[0], r[1]) for r in returned}
