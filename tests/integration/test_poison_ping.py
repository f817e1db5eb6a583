"""A poison ping (attributes nested hundreds deep, or too large) is refused on its own:
it never fails the group commit that other devices' pings share (finding 2 of issue 15)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from tests.conftest import ServerFactory, add_device, stored_positions
from tracker.core.filters import MAX_ATTRIBUTES_BYTES, MAX_ATTRIBUTES_DEPTH


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def body(t: datetime, attributes: Any) -> dict[str, Any]:
    return {"time": t.isoformat(), "lat": 48.1, "lon": 11.5, "attributes": attributes}


def deep_text(t: datetime, depth: int) -> str:
    """A ping whose attributes are nested `depth` deep, as JSON text (no JSON library
    encodes that deep)."""
    attributes = '{"a": ' * (depth - 1) + '{"leaf": 1}' + "}" * (depth - 1)
    return f'{{"time": "{t.isoformat()}", "lat": 48.1, "lon": 11.5, "attributes": {attributes}}}'


async def test_a_deep_ping_fails_only_itself(
    server_factory: ServerFactory, db: asyncpg.Pool
) -> None:
    # A long gathering window puts the poison into the same group commit as the others.
    srv = await server_factory(commit_interval_ms=50.0)
    poison = await add_device(srv, "poison")
    others = [await add_device(srv, f"good {k}") for k in range(10)]
    now = datetime.now(UTC).replace(microsecond=0)
    async with srv.client() as client:

        async def good(k: int, n: int) -> int:
            dev = others[k]
            t = now - timedelta(seconds=200 - n)
            r = await client.post("/api/v1/positions", json=body(t, {"n": n}), headers=dev.headers)
            return r.status_code

        async def bad(depth: int, n: int) -> httpx.Response:
            t = now - timedelta(seconds=100 - n)
            return await client.post(
                "/api/v1/positions", content=deep_text(t, depth), headers=poison.headers
            )

        tasks = [good(k, n) for n in range(20) for k in range(10)]
        poisons = [bad(depth, n) for n, depth in enumerate((300, 400, 700, 1000))]
        results = await asyncio.gather(*tasks, *poisons)
    statuses = results[: len(tasks)]
    answers: list[httpx.Response] = list(results[len(tasks) :])  # type: ignore[arg-type]
    assert statuses.count(202) == 200, {s: statuses.count(s) for s in set(statuses)}
    for r in answers:
        assert r.status_code == 422, r.text
        assert r.json()["error"] == "invalid_ping"
        assert "attributes" in r.json()["message"]
        assert f"deeper than {MAX_ATTRIBUTES_DEPTH}" in r.json()["message"]
    for dev in others:
        assert len(await stored_positions(db, dev.unique_id)) == 20
    assert await stored_positions(db, poison.unique_id) == []


async def test_depth_and_size_limits(server_factory: ServerFactory, db: asyncpg.Pool) -> None:
    srv = await server_factory()
    dev = await add_device(srv)
    now = datetime.now(UTC).replace(microsecond=0)
    big = {"blob": "x" * (MAX_ATTRIBUTES_BYTES + 1)}
    wide = {"list": [[k] for k in range(MAX_ATTRIBUTES_BYTES // 3)]}
    batch = {
        "positions": [
            body(now - timedelta(seconds=5), nested(MAX_ATTRIBUTES_DEPTH)),
            body(now - timedelta(seconds=4), nested(MAX_ATTRIBUTES_DEPTH + 1)),
            body(now - timedelta(seconds=3), big),
            body(now - timedelta(seconds=2), wide),
            {**body(now - timedelta(seconds=1), None), "extra": nested(200)},
        ]
    }
    async with srv.client() as client:
        r = await client.post("/api/v1/positions", json=batch, headers=dev.headers)
    assert r.status_code == 202, r.text
    answer = r.json()
    assert answer["stored"] == 1
    reasons = {item["index"]: item["reason"] for item in answer["rejects"]}
    assert set(reasons) == {1, 2, 3, 4}
    assert "deeper than" in reasons[1] and "deeper than" in reasons[4]
    assert "larger than" in reasons[2] and "larger than" in reasons[3]
    rows = await stored_positions(db, dev.unique_id)
    assert [row["attributes"] for row in rows] == [nested(MAX_ATTRIBUTES_DEPTH)]
    # The metrics count them under their own reject code.
    async with srv.admin() as client:
        text = (await client.get("/metrics")).text
    assert 'tracker_pings_rejected_total{reason="oversized"}' in text


@pytest.mark.parametrize("depth", [1100, 5000])
async def test_deeper_than_json_parses_is_a_400(server_factory: ServerFactory, depth: int) -> None:
    srv = await server_factory()
    dev = await add_device(srv)
    text = '{"time": 1700000000, "lat": 1, "lon": 2, "attributes": ' + '{"a": ' * depth
    text += "1" + "}" * depth + "}"
    async with srv.client() as client:
        r = await client.post("/api/v1/positions", content=text, headers=dev.headers)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "invalid_request"


async def test_rows_no_encoder_takes_fail_only_their_own_request(
    database_url: str, db: asyncpg.Pool
) -> None:
    """Past the filters (the writer called directly): attributes too deep for jsonb's
    encoder, an integer past 64 bits, a number `real` cannot hold, a value of the wrong
    type. Each fails its own write; the good request in the same batch is stored."""
    from tracker.store import devices
    from tracker.store.db import create_pool
    from tracker.store.writer import PositionRow, PositionWriter, StoreRefused

    pool = await create_pool(database_url, 1)
    try:
        device, _ = await devices.add_device(pool, "writer poison")
    finally:
        await pool.close()
    now = datetime.now(UTC).replace(microsecond=0)

    def row(k: int, speed: Any = None, attributes: Any = None) -> PositionRow:
        t = now - timedelta(seconds=k)
        return (device.id, t, now, (11.0, 48.0), speed, None, None, None, attributes or {})

    writer = PositionWriter(database_url, interval_ms=50.0)
    writer.start()
    try:
        outcomes = await asyncio.gather(
            writer.write([row(1, attributes={"ok": 1})]),
            writer.write([row(2, attributes=nested(300))]),
            writer.write([row(3, attributes={"n": 2**70})]),
            writer.write([row(4, speed=1e39)]),
            writer.write([row(5, speed="fast")]),
            writer.write([row(6, attributes={"ok": 2})]),
            return_exceptions=True,
        )
    finally:
        await writer.close()
    good = [outcomes[0], outcomes[5]]
    assert all(not isinstance(o, BaseException) and o.stored == [True] for o in good), outcomes
    assert all(isinstance(o, StoreRefused) for o in outcomes[1:5]), outcomes
    rows = await db.fetch(
        "SELECT attributes FROM positions WHERE device_id = $1 ORDER BY fix_time", device.id
    )
    assert [r["attributes"] for r in rows] == [{"ok": 2}, {"ok": 1}]
