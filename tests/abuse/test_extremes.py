"""Values at the edges of what the server's types hold, each of which once answered 500
(found by schemathesis, the decoder fuzz tests, or probing next to what they found): now a
clear 4xx with the JSON error body, and the server keeps answering."""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.abuse.conftest import OWNER_ID, Fleet

TWO_STOPS = [{"lat": 48.137, "lon": 11.575}, {"lat": 48.139, "lon": 11.58}]


def route(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "device": OWNER_ID,
        "planned_start": "2026-11-25T08:00:00Z",
        "stops": [dict(stop) for stop in TWO_STOPS],
        "path": None,
    }
    for key, value in changes.items():
        if key.startswith("stop_"):
            body["stops"][0][key.removeprefix("stop_")] = value
        else:
            body[key] = value
    return body


def assert_error(r: httpx.Response, status: int) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert isinstance(body["error"], str) and isinstance(body["message"], str)


@pytest.mark.parametrize(
    "body",
    [
        route(stop_service_s=1e300),  # ETAs past what datetime holds
        route(stop_window_start="9999-12-31T23:59:59Z"),
        route(stop_window_end="9999-12-31T23:59:59-23:59"),  # past year 9999 in UTC
        route(planned_start="0001-01-01T00:00:00+01:00"),  # before year 1 in UTC
        route(stop_planned_arrival=1e15),
    ],
    ids=["service", "window-9999", "window-tz-overflow", "start-year-0", "epoch-huge"],
)
async def test_route_times_out_of_range(fleet: Fleet, body: dict[str, Any]) -> None:
    async with fleet.server.admin() as client:
        assert_error(await client.post("/api/v1/routes", json=body), 400)


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/routes/{big}",
        "/api/v1/routes/{route}/stops/{big}",
        "/api/v1/webhooks/{big}",
        "/api/v1/webhooks/{big}/deliveries",
    ],
)
async def test_ids_past_bigint_are_unknown(fleet: Fleet, path: str) -> None:
    url = path.format(big="9" * 25, route=fleet.route_id)
    async with fleet.server.admin() as client:
        r = await client.get(url)
        if r.status_code == 405:  # the stop path has PATCH and POST only
            r = await client.patch(url, json={"status": "arrived"})
    assert_error(r, 404)


async def test_stop_status_and_webhook_events_of_the_wrong_type(fleet: Fleet) -> None:
    async with fleet.server.admin() as client:
        r = await client.patch(
            f"/api/v1/routes/{fleet.route_id}/stops/{fleet.stop_id}", json={"status": {"a": 1}}
        )
        assert_error(r, 400)
        for events in ([{"a": 1}], [["stop.arrived"]]):
            r = await client.post(
                "/api/v1/webhooks", json={"url": "https://example.com/h", "events": events}
            )
            assert_error(r, 400)
        r = await client.post("/api/v1/webhooks", json={"url": "http://[::1", "events": []})
        assert_error(r, 400)
        r = await client.post(
            "/api/v1/webhooks", json={"url": "http://[::1/h", "events": ["stop.arrived"]}
        )
        assert_error(r, 400)


async def test_phone_protocol_edge_values(fleet: Fleet) -> None:
    async with fleet.server.client() as client:
        # A control character that Unicode calls whitespace but float() does not.
        r = await client.get(
            "/ingest/osmand", params={"id": OWNER_ID, "lat": "48.1", "lon": "11.5", "x": "0\x1f"}
        )
        assert r.status_code == 200, r.text
        # A Basic header with bytes outside ASCII (headers arrive as latin-1).
        r = await client.post(
            "/ingest/owntracks",
            content=b"{}",
            headers={b"Authorization": b"Basic \x80\xff", b"Content-Type": b"application/json"},
        )
        assert_error(r, 401)
        creds = base64.b64encode(f"{OWNER_ID}:{fleet.owner.token}".encode()).decode()
        r = await client.post(
            "/ingest/owntracks",
            json={
                "_type": "location",
                "lat": 48.1,
                "lon": 11.5,
                "tst": "9999-12-31T23:59:59-01:00",
            },
            headers={"Authorization": f"Basic {creds}"},
        )
        assert r.status_code == 200, r.text  # a bad point is reported in the log, not retried
        r = await client.post(
            "/api/v1/positions",
            json={"time": "9999-12-31T23:59:59-23:59", "lat": 48.1, "lon": 11.5},
            headers={"Authorization": f"Bearer {fleet.owner.token}"},
        )
        assert_error(r, 422)
        assert "out of range" in r.json()["message"]
        # Every answer above came from a server that is still fine.
        assert (await client.get("/readyz")).status_code == 200


async def test_numbers_too_large_for_their_columns_fail_only_their_ping(fleet: Fleet) -> None:
    """speed/course/accuracy/altitude are `real` columns: 1e300 cannot be encoded. Such a
    ping once failed its whole group commit (503 for everyone in it)."""
    when = datetime.now(UTC) - timedelta(seconds=30)
    huge = {"time": when.isoformat(), "lat": 48.137, "lon": 11.575, "altitude": -3.2e76}
    fine = {"time": when.isoformat(), "lat": 48.137, "lon": 11.575, "altitude": 520.0}
    async with fleet.server.client() as client:
        rounds = [
            asyncio.gather(
                client.post("/api/v1/positions", json=huge, headers=fleet.owner.headers),
                client.post("/api/v1/positions", json=fine, headers=fleet.other.headers),
            )
            for _ in range(5)
        ]
        for bad, good in await asyncio.gather(*rounds):
            assert_error(bad, 422)
            assert "altitude" in bad.json()["rejects"][0]["reason"]
            assert good.status_code == 202, good.text
        # The OsmAnd app is answered 200 (it would resend a refused point forever); nothing
        # of it is stored.
        params = {"id": OWNER_ID, "lat": "48.137", "lon": "11.575", "altitude": "1e300"}
        r = await client.get("/ingest/osmand", params={**params, "timestamp": "1764000000"})
        assert r.status_code == 200, r.text
    stored = await fleet.server.runtime.pool.fetchval(
        "SELECT count(*) FROM positions p JOIN devices d ON d.id = p.device_id "
        "WHERE d.unique_id = $1 AND p.fix_time = to_timestamp(1764000000)",
        OWNER_ID,
    )
    assert stored == 0
