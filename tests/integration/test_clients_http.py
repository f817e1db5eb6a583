"""The phone apps' real payloads through the real HTTP endpoints, read back from PostGIS.

Every request in tests/data/clients/ (copied from Traccar's and Overland's repositories,
see ATTRIBUTION.md there) is sent over a socket to a running server; what PostgreSQL holds
afterwards is compared with `osmand_requests_expected.jsonl` (Traccar's rules; speeds in
knots) and with what the OwnTracks and Overland documentation say their fields mean.
OsmAnd requests go both to /ingest/osmand and, unchanged, to `/` of the second listener,
the URL Traccar Client is configured with out of the box.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest

from tests.conftest import (
    ADMIN_TOKEN,
    DATA,
    Server,
    ServerFactory,
    add_device,
    free_port,
    start_server,
    stored_positions,
)
from tests.osmand_vectors import osmand_vectors

CLIENTS = DATA / "clients"
KNOT = 0.514444  # m/s
OK_BODY = b'{"result":"ok"}'


@dataclass(frozen=True)
class OsmAndCase:
    """One line of osmand_requests.txt as an HTTP request, with Traccar's expected values."""

    line: int
    method: str
    json_body: bytes | None  # the JSON form's body; None for the query form
    uri: str  # "/?id=..." for the query form, exactly as in the file
    expected: dict[str, Any]

    @property
    def query(self) -> str:
        return urlsplit(self.uri).query


def _osmand_cases() -> list[OsmAndCase]:
    return [
        OsmAndCase(v.number, v.method, v.line.encode(), "/", v.expected)
        if v.is_json
        else OsmAndCase(v.number, v.method, None, v.line, v.expected)
        for v in osmand_vectors()
    ]


OSMAND_CASES = _osmand_cases()
OSMAND_IDS = sorted(
    {c.expected["device_unique_id"] for c in OSMAND_CASES if "device_unique_id" in c.expected}
)


# --- helpers -----------------------------------------------------------------------------


async def forget_positions(db: asyncpg.Pool, unique_id: str) -> None:
    """Start a device's history afresh (several real requests share one id and time)."""
    await db.execute(
        "DELETE FROM positions WHERE device_id = (SELECT id FROM devices WHERE unique_id = $1)",
        unique_id,
    )
    await db.execute(
        "DELETE FROM last_positions "
        "WHERE device_id = (SELECT id FROM devices WHERE unique_id = $1)",
        unique_id,
    )


async def register(srv: Server, unique_id: str) -> None:
    """Register a device under a fixed unique id (already registered is fine)."""
    async with srv.admin() as client:
        r = await client.post("/api/v1/devices", json={"name": unique_id, "unique_id": unique_id})
    assert r.status_code in (201, 409), r.text


async def set_enabled(srv: Server, unique_id: str, enabled: bool) -> None:
    async with srv.admin() as client:
        r = await client.patch(f"/api/v1/devices/{unique_id}", json={"enabled": enabled})
    assert r.status_code == 200, r.text


def basic(user: str, password: str) -> dict[str, str]:
    pair = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {pair}", "Content-Type": "application/json"}


def expected_time(exp: dict[str, Any]) -> datetime | None:
    """The fix time Traccar's rules give, or None for "the time the server received it"."""
    if "fix_time_local_server_tz" in exp:
        # Traccar reads "yyyy-MM-dd HH:mm:ss" in the server's zone; this server reads UTC.
        naive = datetime.strptime(exp["fix_time_local_server_tz"], "%Y-%m-%d %H:%M:%S")
        return naive.replace(tzinfo=UTC)
    if exp["fix_time_utc"].startswith("server receive time"):
        return None
    return datetime.fromisoformat(exp["fix_time_utc"])


@pytest.fixture(scope="module")
async def osmand_server(database_url: str) -> AsyncIterator[Server]:
    """A server that also runs the OsmAnd listener, with every payload's device registered."""
    srv = await start_server(database_url, osmand_port=free_port())
    for unique_id in OSMAND_IDS:
        await register(srv, unique_id)
    yield srv
    await srv.stop()


def listener_url(srv: Server) -> str:
    assert srv.settings.osmand_port is not None
    return f"http://127.0.0.1:{srv.settings.osmand_port}"


async def send_osmand(srv: Server, case: OsmAndCase, where: str) -> httpx.Response:
    """Send one real request to /ingest/osmand or, unchanged, to the listener's `/`."""
    base = srv.base_url if where == "ingest" else listener_url(srv)
    async with httpx.AsyncClient(base_url=base, timeout=30.0) as client:
        if case.json_body is not None:
            path = "/ingest/osmand" if where == "ingest" else "/"
            return await client.post(
                path, content=case.json_body, headers={"Content-Type": "application/json"}
            )
        path = f"/ingest/osmand?{case.query}" if where == "ingest" else case.uri
        return await client.request(case.method, path)


# --- OsmAnd / Traccar Client ---------------------------------------------------------------


@pytest.mark.parametrize("where", ["ingest", "listener"])
@pytest.mark.parametrize("case", OSMAND_CASES, ids=[f"line{c.line}" for c in OSMAND_CASES])
async def test_every_real_osmand_request_stores_what_traccars_rules_say(
    osmand_server: Server, db: asyncpg.Pool, case: OsmAndCase, where: str
) -> None:
    exp = case.expected
    if "HTTP 400" in exp.get("result", ""):
        before = await db.fetchval("SELECT count(*) FROM positions")
        r = await send_osmand(osmand_server, case, where)
        assert r.status_code == 400
        assert r.json()["error"] == "invalid_request"
        assert await db.fetchval("SELECT count(*) FROM positions") == before
        return
    unique_id = exp["device_unique_id"]
    await forget_positions(db, unique_id)
    sent_at = datetime.now(UTC)
    r = await send_osmand(osmand_server, case, where)
    received_by = datetime.now(UTC)
    # Traccar Client deletes a point only on 200; both client generations accept an empty body.
    assert r.status_code == 200, r.text
    assert r.content == b""
    rows = await stored_positions(db, unique_id)
    if "position_note" in exp:
        # Traccar would copy the device's last known location; nothing is invented here.
        assert rows == []
        return
    [row] = rows
    when = expected_time(exp)
    if when is None:
        assert sent_at - timedelta(seconds=1) <= row["fix_time"] <= received_by
    else:
        assert row["fix_time"] == when
    assert row["lat"] == pytest.approx(exp["lat"], abs=1e-9)
    assert row["lon"] == pytest.approx(exp["lon"], abs=1e-9)
    knots = exp.get("speed_knots")
    if knots is None:
        assert row["speed"] is None
    else:
        # The expected file rounds knots to 5 decimals; the column is a float4.
        assert row["speed"] == pytest.approx(knots * KNOT, rel=1e-5, abs=1e-6)
    course = exp.get("course_deg")
    assert row["course"] == (None if course is None else pytest.approx(course, rel=1e-6))
    altitude = exp.get("altitude_m")
    assert row["altitude"] == (None if altitude is None else pytest.approx(altitude, rel=1e-6))
    if case.json_body is not None:
        # Stored whatever it is (Traccar drops it below 10 m): geofences need it.
        sent = json.loads(case.json_body)["location"]["coords"]["accuracy"]
        assert row["accuracy"] == pytest.approx(sent)
    else:
        assert row["accuracy"] is None
    assert row["attributes"] == exp["attributes"]


async def test_traccar_client_post_with_the_query_in_the_url(
    osmand_server: Server, db: asyncpg.Pool
) -> None:
    # What Traccar Client sends by default: POST to http://server:5055/?id=...&lat=...
    unique_id = OSMAND_IDS[0]
    await forget_positions(db, unique_id)
    async with httpx.AsyncClient(base_url=listener_url(osmand_server)) as client:
        r = await client.post(
            f"/?id={unique_id}&timestamp=1700000000&lat=52.0116&lon=4.3571&speed=10"
            "&bearing=270&altitude=2&accuracy=6.5&batt=55.0&charge=false"
        )
    assert r.status_code == 200
    [row] = await stored_positions(db, unique_id)
    assert row["fix_time"] == datetime.fromtimestamp(1700000000, UTC)
    assert (row["lat"], row["lon"]) == pytest.approx((52.0116, 4.3571))
    assert row["speed"] == pytest.approx(10 * KNOT, rel=1e-6)
    assert (row["course"], row["altitude"], row["accuracy"]) == (270, 2, 6.5)
    assert row["attributes"] == {"batteryLevel": 55.0, "charge": False}


async def test_the_listener_serves_nothing_but_osmand(osmand_server: Server) -> None:
    async with httpx.AsyncClient(base_url=listener_url(osmand_server)) as client:
        for path in ("/healthz", "/api/v1/devices", "/ingest/osmand", "/driver"):
            r = await client.get(path, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
            assert r.status_code == 404, path
        assert (await client.put("/?id=x")).status_code == 405


@pytest.mark.parametrize(
    ("where", "json_form", "status"),
    [
        ("ingest", False, 400),
        ("ingest", True, 404),
        ("listener", False, 400),
        ("listener", True, 404),
    ],
)
async def test_an_unregistered_id_is_refused_as_traccar_does(
    osmand_server: Server, db: asyncpg.Pool, where: str, json_form: bool, status: int
) -> None:
    before = await db.fetchval("SELECT count(*) FROM positions")
    unknown = "not-registered-42"
    if json_form:
        body = {"device_id": unknown, "location": {"coords": {"latitude": 1.5, "longitude": 2.5}}}
        case = OsmAndCase(0, "POST", json.dumps(body).encode(), "/", {})
    else:
        case = OsmAndCase(0, "GET", None, f"/?id={unknown}&lat=1.5&lon=2.5", {})
    r = await send_osmand(osmand_server, case, where)
    assert r.status_code == status
    assert r.json()["error"] == "unknown_device"
    assert await db.fetchval("SELECT count(*) FROM positions") == before


async def test_a_disabled_device_is_refused(osmand_server: Server, db: asyncpg.Pool) -> None:
    dev = await add_device(osmand_server)
    await set_enabled(osmand_server, dev.unique_id, False)
    async with osmand_server.client() as client:
        r = await client.get(f"/ingest/osmand?id={dev.unique_id}&lat=1.5&lon=2.5")
    assert r.status_code == 403
    assert r.json()["error"] == "device_disabled"
    assert await stored_positions(db, dev.unique_id) == []
    await set_enabled(osmand_server, dev.unique_id, True)
    async with osmand_server.client() as client:
        r = await client.get(f"/ingest/osmand?id={dev.unique_id}&lat=1.5&lon=2.5")
    assert r.status_code == 200
    assert len(await stored_positions(db, dev.unique_id)) == 1


async def test_a_repeated_ping_is_acknowledged_and_stored_once(
    osmand_server: Server, db: asyncpg.Pool
) -> None:
    # Traccar Client resends a point whose reply it did not get.
    dev = await add_device(osmand_server)
    query = f"/ingest/osmand?id={dev.unique_id}&timestamp=1700000100&lat=1.5&lon=2.5"
    async with osmand_server.client() as client:
        replies = [await client.post(query) for _ in range(3)]
    assert [r.status_code for r in replies] == [200, 200, 200]
    assert len(await stored_positions(db, dev.unique_id)) == 1


# --- OwnTracks ---------------------------------------------------------------------------

OWNTRACKS = [
    json.loads(line) for line in (CLIENTS / "owntracks_payloads.jsonl").read_text().splitlines()
]


async def post_owntracks(
    srv: Server, body: bytes, headers: dict[str, str], query: str = ""
) -> httpx.Response:
    async with srv.client() as client:
        return await client.post(f"/ingest/owntracks{query}", content=body, headers=headers)


@pytest.mark.parametrize(
    "message", OWNTRACKS, ids=[f"payload{i + 1}" for i in range(len(OWNTRACKS))]
)
async def test_every_real_owntracks_payload_is_stored_with_its_documented_meaning(
    server: Server, db: asyncpg.Pool, message: dict[str, Any]
) -> None:
    dev = await add_device(server)
    headers = {**basic(dev.unique_id, dev.token), "X-Limit-U": dev.unique_id, "X-Limit-D": "phone"}
    r = await post_owntracks(server, json.dumps(message).encode(), headers)
    assert r.status_code == 200
    assert r.content == b"[]"  # the app reads the reply as a list of messages
    assert r.headers["content-type"].startswith("application/json")
    [row] = await stored_positions(db, dev.unique_id)
    # Booklet "JSON": tst epoch seconds, lat/lon degrees, vel km/h, cog degrees, acc/alt m.
    assert row["fix_time"] == datetime.fromtimestamp(message["tst"], UTC)
    assert (row["lat"], row["lon"]) == (
        pytest.approx(message["lat"]),
        pytest.approx(message["lon"]),
    )
    if "vel" in message:
        assert row["speed"] == pytest.approx(message["vel"] / 3.6, rel=1e-6)
    else:
        assert row["speed"] is None
    assert row["course"] == message.get("cog")
    assert row["accuracy"] == message.get("acc")
    assert row["altitude"] == message.get("alt")
    attributes = row["attributes"]
    assert attributes["tid"] == message["tid"]
    assert attributes.get("batteryLevel") == message.get("batt")
    assert attributes.get("event") == message.get("t")
    # When the message was built and the MQTT topic are not facts about the fix.
    assert "created_at" not in attributes and "topic" not in attributes
    for key in ("_type", "lat", "lon", "tst", "vel", "cog", "acc", "alt", "batt", "t"):
        assert key not in attributes


async def test_a_qtripp_trackers_owntracks_fields(server: Server, db: asyncpg.Pool) -> None:
    message = OWNTRACKS[5]
    assert message["topic"].startswith("owntracks/qtripp/")
    dev = await add_device(server)
    r = await post_owntracks(server, json.dumps(message).encode(), basic(dev.unique_id, dev.token))
    assert r.status_code == 200
    [row] = await stored_positions(db, dev.unique_id)
    assert row["attributes"] == {
        "tid": "CS",
        "mcc": 232,
        "mnc": 1,
        "lac": "4F4D",
        "cid": "673A",
        "don": 105,
        "event": "I",
        "ignition": False,  # trigger I = ignition off, as Traccar reads it
    }


async def test_owntracks_requires_the_device_token_as_basic_password(
    server: Server, db: asyncpg.Pool
) -> None:
    dev = await add_device(server)
    other = await add_device(server)
    body = json.dumps(OWNTRACKS[0]).encode()
    json_ct = {"Content-Type": "application/json"}
    refused = [
        # X-Limit headers and ?u= only name a device: anyone could send them.
        await post_owntracks(
            server, body, {**json_ct, "X-Limit-U": dev.unique_id, "X-Limit-D": "p"}
        ),
        await post_owntracks(server, body, json_ct, f"?u={dev.unique_id}&d=phone"),
        await post_owntracks(
            server, body, {**basic(dev.unique_id, "wrong"), "X-Limit-U": dev.unique_id}
        ),
        await post_owntracks(server, body, basic(dev.unique_id, other.token)),
        await post_owntracks(server, body, basic(dev.unique_id, "")),
        await post_owntracks(server, body, {**json_ct, "Authorization": "Basic !!!not-base64"}),
        await post_owntracks(server, body, {**json_ct, "Authorization": f"Bearer {dev.token}"}),
    ]
    for r in refused:
        assert r.status_code == 401, r.text
        assert r.headers["www-authenticate"].startswith("Basic")
        assert r.json()["error"] == "unauthorized"
    assert await stored_positions(db, dev.unique_id) == []
    assert await stored_positions(db, other.unique_id) == []
    # The Basic username decides the device, whatever X-Limit-U says.
    r = await post_owntracks(
        server, body, {**basic(dev.unique_id, dev.token), "X-Limit-U": other.unique_id}
    )
    assert r.status_code == 200
    assert len(await stored_positions(db, dev.unique_id)) == 1
    assert await stored_positions(db, other.unique_id) == []


async def test_owntracks_disabled_device_is_refused(server: Server, db: asyncpg.Pool) -> None:
    dev = await add_device(server)
    await set_enabled(server, dev.unique_id, False)
    r = await post_owntracks(
        server, json.dumps(OWNTRACKS[1]).encode(), basic(dev.unique_id, dev.token)
    )
    assert r.status_code == 403
    assert await stored_positions(db, dev.unique_id) == []


async def test_owntracks_messages_without_a_fix_are_acknowledged_and_not_stored(
    server: Server, db: asyncpg.Pool
) -> None:
    dev = await add_device(server)
    headers = basic(dev.unique_id, dev.token)
    others = [
        b"",  # posted when a friend is deleted
        json.dumps({"_type": "lwt", "tst": 1736161169}).encode(),
        json.dumps(
            {"_type": "transition", "event": "enter", "tst": 1736161169, "lat": 1, "lon": 2}
        ).encode(),
        json.dumps({"_type": "encrypted", "data": "c2VjcmV0"}).encode(),
    ]
    for body in others:
        r = await post_owntracks(server, body, headers)
        assert (r.status_code, r.content) == (200, b"[]")
    assert await stored_positions(db, dev.unique_id) == []
    r = await post_owntracks(server, b"{not json", headers)
    assert r.status_code == 400


async def test_owntracks_resent_message_is_stored_once(server: Server, db: asyncpg.Pool) -> None:
    dev = await add_device(server)
    body = json.dumps(OWNTRACKS[2]).encode()
    for _ in range(2):
        r = await post_owntracks(server, body, basic(dev.unique_id, dev.token))
        assert r.status_code == 200
    assert len(await stored_positions(db, dev.unique_id)) == 1


# --- Overland ----------------------------------------------------------------------------

OVERLAND_BODY = (CLIENTS / "overland_batch.json").read_bytes()


async def post_overland(
    srv: Server, body: bytes, headers: dict[str, str] | None = None, query: str = ""
) -> httpx.Response:
    async with srv.client() as client:
        return await client.post(
            f"/ingest/overland{query}",
            content=body,
            headers={"Content-Type": "application/json", **(headers or {})},
        )


def assert_not_ok(r: httpx.Response) -> None:
    # Overland deletes its queued batch only on {"result":"ok"}.
    assert r.status_code >= 400
    assert r.json().get("result") != "ok"
    assert "error" in r.json()


async def test_the_real_overland_batch_is_stored_and_acknowledged_exactly(
    server: Server, db: asyncpg.Pool
) -> None:
    dev = await add_device(server)
    r = await post_overland(server, OVERLAND_BODY, {"Authorization": f"Bearer {dev.token}"})
    assert r.status_code == 200
    assert r.content == OK_BODY
    assert r.headers["content-type"].startswith("application/json")
    [row] = await stored_positions(db, dev.unique_id)
    # "2015-10-01T08:00:00-0700"; coordinates [lon, lat]; speed m/s; accuracy m.
    assert row["fix_time"] == datetime(2015, 10, 1, 15, 0, 0, tzinfo=UTC)
    assert (row["lat"], row["lon"]) == (pytest.approx(37.3318), pytest.approx(-122.030581))
    assert row["speed"] == 4
    assert row["accuracy"] == 30
    assert row["course"] is None
    # vertical_accuracy -1: CoreLocation says the altitude is invalid.
    assert row["altitude"] is None
    assert row["attributes"] == {
        "batteryLevel": 80,
        "charge": True,
        "motionStates": ["driving", "stationary"],
    }


async def test_overland_token_in_the_receiver_url(server: Server, db: asyncpg.Pool) -> None:
    dev = await add_device(server)
    r = await post_overland(server, OVERLAND_BODY, query=f"?token={dev.token}")
    assert (r.status_code, r.content) == (200, OK_BODY)
    assert len(await stored_positions(db, dev.unique_id)) == 1
    # A retried batch (the reply was lost) is acknowledged again and stored once.
    r = await post_overland(server, OVERLAND_BODY, query=f"?token={dev.token}")
    assert (r.status_code, r.content) == (200, OK_BODY)
    assert len(await stored_positions(db, dev.unique_id)) == 1


async def test_overland_without_a_valid_token_keeps_its_batch(server: Server) -> None:
    assert_not_ok(await post_overland(server, OVERLAND_BODY))
    r = await post_overland(server, OVERLAND_BODY, {"Authorization": "Bearer nope"})
    assert r.status_code == 401
    assert_not_ok(r)
    dev = await add_device(server)
    r = await post_overland(server, b'{"locations": 5}', {"Authorization": f"Bearer {dev.token}"})
    assert r.status_code == 400
    assert_not_ok(r)


async def test_overland_backlog_with_current(server: Server, db: asyncpg.Pool) -> None:
    # A queue flushed in batches: several locations plus `current`, the newest point.
    dev = await add_device(server)
    base = json.loads(OVERLAND_BODY)["locations"][0]
    start = datetime(2015, 10, 1, 15, 0, 0, tzinfo=UTC)

    def feature(seconds: int, lon_shift: float) -> dict[str, Any]:
        lon, lat = base["geometry"]["coordinates"]
        props = {
            **base["properties"],
            "timestamp": (start + timedelta(seconds=seconds)).isoformat(),
        }
        return {
            **base,
            "geometry": {"type": "Point", "coordinates": [lon + lon_shift, lat]},
            "properties": props,
        }

    body = {
        "locations": [feature(i * 10, i * 0.0005) for i in range(5)],
        "current": feature(120, 0.004),
    }
    r = await post_overland(
        server, json.dumps(body).encode(), {"Authorization": f"Bearer {dev.token}"}
    )
    assert (r.status_code, r.content) == (200, OK_BODY)
    rows = await stored_positions(db, dev.unique_id)
    assert [row["fix_time"] for row in rows] == [
        start + timedelta(seconds=s) for s in (0, 10, 20, 30, 40, 120)
    ]
    last = await db.fetchval(
        "SELECT l.fix_time FROM last_positions l JOIN devices d ON d.id = l.device_id "
        "WHERE d.unique_id = $1",
        dev.unique_id,
    )
    assert last == start + timedelta(seconds=120)


# --- nothing acknowledged that was not committed -----------------------------------------


@pytest.mark.parametrize("protocol", ["osmand", "owntracks", "overland"])
async def test_no_success_reply_when_the_store_cannot_commit(
    server_factory: ServerFactory, db: asyncpg.Pool, protocol: str
) -> None:
    srv = await server_factory(retry_after_s=7)
    dev = await add_device(srv)
    # The writer refuses from now on, as while the server shuts down.
    await srv.runtime.writer.close()
    async with srv.client() as client:
        if protocol == "osmand":
            r = await client.get(f"/ingest/osmand?id={dev.unique_id}&lat=1.5&lon=2.5")
        elif protocol == "owntracks":
            r = await client.post(
                "/ingest/owntracks",
                content=json.dumps(OWNTRACKS[0]).encode(),
                headers=basic(dev.unique_id, dev.token),
            )
        else:
            r = await client.post(
                "/ingest/overland",
                content=OVERLAND_BODY,
                headers={
                    "Authorization": f"Bearer {dev.token}",
                    "Content-Type": "application/json",
                },
            )
    assert r.status_code == 503
    assert r.headers["retry-after"] == "7"
    assert r.content not in (b"", b"[]", OK_BODY)
    assert await stored_positions(db, dev.unique_id) == []


# --- `tracker serve --osmand-port` -------------------------------------------------------


async def _wait_until_up(url: str, proc: subprocess.Popen[bytes]) -> None:
    async with httpx.AsyncClient(timeout=1.0) as client:
        for _ in range(300):
            assert proc.poll() is None, "tracker serve exited early"
            try:
                if (await client.get(url)).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError(f"{url} did not come up")


async def test_tracker_serve_opens_the_osmand_port_and_shuts_it_down(
    database_url: str, db: asyncpg.Pool, server: Server
) -> None:
    unique_id = "serve-osmand-check"
    await register(server, unique_id)
    port, osmand_port = free_port(), free_port()
    env = {**os.environ, "DATABASE_URL": database_url}
    env.pop("TRACKER_OSMAND_PORT", None)
    env.pop("TRACKER_OSMAND_HOST", None)
    tracker = Path(sys.executable).with_name("tracker")
    proc = subprocess.Popen(
        [
            str(tracker),
            "serve",
            "--port",
            str(port),
            "--osmand-port",
            str(osmand_port),
            "--log-level",
            "info",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        await _wait_until_up(f"http://127.0.0.1:{port}/healthz", proc)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{osmand_port}") as client:
            r = await client.get(f"/?id={unique_id}&timestamp=1377177267&lat=60.0&lon=30.0")
        assert r.status_code == 200
        [row] = await stored_positions(db, unique_id)
        assert row["fix_time"] == datetime(2013, 8, 22, 13, 14, 27, tzinfo=UTC)
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 20)
        log = proc.stderr.read().decode() if proc.stderr else ""
        # uvicorn finishes a graceful shutdown, then re-raises the signal it caught.
        assert code in (0, -signal.SIGTERM), log
        assert "Finished server process" in log and "Traceback" not in log, log
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{osmand_port}") as client:
            with pytest.raises(httpx.ConnectError):
                await client.get("/")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
