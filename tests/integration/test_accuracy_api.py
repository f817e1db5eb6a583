"""Live ETA accuracy through the API: a van drives a route, its arrivals score the ETAs the
events showed, once each, and GET /api/v1/accuracy and /metrics say what the stored events
imply (worked out here from the events table, independently of the server's code)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from tests.conftest import DeviceCreds, Server
from tests.integration.test_routes_api import (
    LAT,
    STOP_AT_M,
    admin_headers,
    create_route,
    iso,
    lon_at,
    post_fixes,
    route_body,
)
from tracker.core.model import Fix

Json = dict[str, Any]
# TransitApp: (low s, high s, may come early s, may come late s), written out again here.
BANDS = ((0, 180, 30, 90), (180, 360, 60, 150), (360, 600, 60, 210), (600, 900, 90, 270))
BUCKETS = ((0, 300), (300, 900), (900, 1800), (1800, 10**9))


def van(start: datetime, speed: float = 3.0, dwell_s: float = 60.0) -> list[Fix]:
    """Every 5 s along the street, standing `dwell_s` at each stop, to its end."""
    fixes: list[Fix] = []
    t, m = start, 0.0
    stops = list(STOP_AT_M)
    while m <= STOP_AT_M[-1] + 100.0:
        if stops and m >= stops[0]:
            for _ in range(int(dwell_s / 5)):
                fixes.append(Fix(0, t, LAT, lon_at(stops[0]), speed=0.0))
                t += timedelta(seconds=5)
            stops.pop(0)
        fixes.append(Fix(0, t, LAT, lon_at(m), speed=speed))
        t += timedelta(seconds=5)
        m += speed * 5
    return fixes


async def expected(db: asyncpg.Pool, route_id: int) -> tuple[list[tuple[int, float, Any]], int]:
    """(horizon, error, inside) of every sample the stored events imply, and arrivals."""
    rows = await db.fetch(
        "SELECT id, type, time, stop_id, data FROM events WHERE route_id = $1 ORDER BY id",
        route_id,
    )
    samples = []
    arrivals = 0
    for a in rows:
        if a["type"] != "stop.arrived":
            continue
        arrivals += 1
        at = a["time"].timestamp()
        shown = [
            r
            for r in rows
            if r["type"] == "stop.eta_changed"
            and r["stop_id"] == a["stop_id"]
            and r["id"] < a["id"]
        ]
        for h in range(60, 5401, 60):
            before = [r for r in shown if r["time"].timestamp() <= at - h]
            if not before:
                continue
            d = before[-1]["data"]
            eta = datetime.fromisoformat(d["eta"]).timestamp()
            lo = datetime.fromisoformat(d["eta_earliest"]).timestamp()
            hi = datetime.fromisoformat(d["eta_latest"]).timestamp()
            samples.append((h, eta - at, lo <= at <= hi))
    return samples, arrivals


def accurate(h: int, error: float) -> bool | None:
    for lo, hi, early, late in BANDS:
        if lo <= h < hi:
            return -late <= error <= early
    return None


async def get_accuracy(srv: Server, **query: str) -> Any:
    async with srv.client() as client:
        return await client.get("/api/v1/accuracy", params=query, headers=admin_headers())


async def test_arrivals_score_the_etas_shown_before_them(
    server: Server, device: DeviceCreds, db: asyncpg.Pool
) -> None:
    start = datetime(2019, 6, 3, 9, tzinfo=UTC)  # a window of its own in the shared database
    route = await create_route(server, route_body(device, start))
    fixes = van(start)
    await post_fixes(server, device, fixes, batch=4)
    samples, arrivals = await expected(db, route["id"])
    assert arrivals == 3
    assert len(samples) > 15  # 3 stops, the last one about 12 min out
    rows = await db.fetch(
        "SELECT cardinality(horizons_s) AS n FROM eta_accuracy WHERE route_id = $1", route["id"]
    )
    assert len(rows) == arrivals  # one row per arrival
    assert sum(r["n"] for r in rows) == len(samples)

    since, until = iso(start), iso(fixes[-1].time + timedelta(seconds=1))
    r = await get_accuracy(server, since=since, until=until)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["arrivals"] == 3
    assert body["horizons_s"][:2] == [60, 120]
    for bucket, (lo, hi) in zip(body["buckets"], BUCKETS, strict=True):
        group = [s for s in samples if lo <= s[0] < hi]
        assert bucket["count"] == len(group), bucket
        if not group:
            assert bucket["mae_s"] is None
            continue
        assert bucket["mae_s"] == pytest.approx(sum(abs(e) for _, e, _ in group) / len(group))
        assert bucket["bias_s"] == pytest.approx(sum(e for _, e, _ in group) / len(group))
        assert bucket["coverage"] == pytest.approx(sum(i for *_, i in group) / len(group))
        rated = [bool(accurate(h, e)) for h, e, _ in group if accurate(h, e) is not None]
        if rated:
            assert bucket["accurate"] == pytest.approx(sum(rated) / len(rated))
    shares = []
    for lo, hi, _, _ in BANDS:
        band = [accurate(h, e) for h, e, _ in samples if lo <= h < hi]
        if band:
            shares.append(sum(bool(v) for v in band) / len(band))
    assert body["score"] == pytest.approx(sum(shares) / len(shares))
    assert body["all"]["count"] == len(samples)

    # A window without these arrivals has nothing; a retried batch scores nothing again.
    r = await get_accuracy(server, since=iso(start - timedelta(days=1)), until=since)
    assert r.json()["arrivals"] == 0 and r.json()["score"] is None
    await post_fixes(server, device, fixes[-8:], batch=4)
    assert (
        await db.fetchval("SELECT count(*) FROM eta_accuracy WHERE route_id = $1", route["id"])
        == arrivals
    )


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"since": "yesterday"}, "since"),
        ({"until": "2020-13-01T00:00:00Z"}, "until"),
        ({"since": "2020-01-02T00:00:00Z", "until": "2020-01-01T00:00:00Z"}, "until"),
        ({"horizon": "5"}, "horizon"),
    ],
)
async def test_bad_queries_are_refused_naming_the_field(
    server: Server, query: dict[str, str], field: str
) -> None:
    r = await get_accuracy(server, **query)
    assert r.status_code == 400
    assert r.json()["error"] == "invalid_request"
    assert field in r.json()["message"]


async def test_metrics_show_the_last_day(
    server: Server, device: DeviceCreds, db: asyncpg.Pool
) -> None:
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    route = await create_route(server, route_body(device, start))
    await post_fixes(server, device, van(start), batch=4)
    assert await db.fetchval("SELECT count(*) FROM eta_accuracy WHERE route_id = $1", route["id"])
    await server.runtime.refresh_accuracy_metrics()
    day = await get_accuracy(server, since=iso(datetime.now(UTC) - timedelta(days=1)))
    async with server.admin() as client:
        text = (await client.get("/metrics")).text
    found = re.search(r'^tracker_eta_accuracy_samples\{horizon="all"\} (\S+)$', text, re.M)
    assert found and float(found.group(1)) == day.json()["all"]["count"] > 0
    mae = re.search(r'^tracker_eta_accuracy_mae_seconds\{horizon="0-5"\} (\S+)$', text, re.M)
    assert mae and float(mae.group(1)) == pytest.approx(day.json()["buckets"][0]["mae_s"])
    assert re.search(r"^tracker_eta_accuracy_score_ratio \S+$", text, re.M)
