"""The routes API against real servers and PostGIS: creating routes in every path form,
reading them, stop status changes, progress and ETAs from pings (timed by the fixes, not the
server clock), events stored and published, and two instances behaving as one."""

from __future__ import annotations

import asyncio
import itertools
import math
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import polyline
import pytest

from tests.conftest import TEST_REDIS_URL, DeviceCreds, Server, ServerFactory, add_device
from tracker.core.model import Fix, Route, Stop
from tracker.core.route import progress
from tracker.core.route.history import Snapshot
from tracker.live.bus import RedisBus
from tracker.store import learning

Json = dict[str, Any]

# A straight east-west street in Munich: metres east of its start map to longitude.
LAT = 48.137
LON0 = 11.560
M_PER_DEG_LON = 111_320.0 * math.cos(math.radians(LAT))
STREET_M = 2200.0
STOP_AT_M = (600.0, 1250.0, 1900.0)
ROUTE_KEYS = {
    "id",
    "device",
    "planned_start",
    "status",
    "straight_line",
    "off_route",
    "next_stop",
    "stops",
}
STOP_KEYS = {
    "id",
    "seq",
    "name",
    "recipient",
    "lat",
    "lon",
    "radius_m",
    "service_s",
    "planned_arrival",
    "window_start",
    "window_end",
    "status",
    "eta",
    "eta_earliest",
    "eta_latest",
    "deferred",
    "arrived_at",
    "completed_at",
    "reason",
    # The doorstep (issue 16): contact, hand-over and proof details, the customer's own.
    "address",
    "phone",
    "email",
    "notes",
    "language",
    "parcels",
    "proof_required",
    "reschedule_windows",
    "pickup_points",
    "instructions",
    "safe_place",
    "outcome",
}


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def lon_at(m: float) -> float:
    return LON0 + m / M_PER_DEG_LON


def street_path() -> Json:
    return {"type": "LineString", "coordinates": [[LON0, LAT], [lon_at(STREET_M), LAT]]}


def street_stops(service_s: float = 60.0) -> list[Json]:
    return [
        {
            "lat": LAT,
            "lon": lon_at(m),
            "name": f"Stop {k + 1}",
            "recipient": f"Customer {k + 1}",
            "service_s": service_s,
            "radius_m": 40.0,
            "planned_arrival": None,
            "window_start": None,
            "window_end": None,
        }
        for k, m in enumerate(STOP_AT_M)
    ]


def route_body(
    dev: DeviceCreds, start: datetime, stops: list[Json] | None = None, path: Any = "street"
) -> Json:
    return {
        "device": dev.unique_id,
        "planned_start": iso(start),
        "stops": street_stops() if stops is None else stops,
        "path": street_path() if path == "street" else path,
    }


async def create_route(srv: Server, body: Json) -> Json:
    async with srv.admin() as client:
        r = await client.post("/api/v1/routes", json=body)
    assert r.status_code == 201, r.text
    route: Json = r.json()
    # Only the creating reply can show the customer links (the tokens are stored hashed);
    # every later read carries null, so compare in that form.
    assert all(s["tracking_url"].startswith("http") for s in route["stops"])
    for stop in route["stops"]:
        stop["tracking_url"] = None
    return route


async def get_route(srv: Server, route_id: int, headers: dict[str, str] | None = None) -> Json:
    async with srv.client() as client:
        r = await client.get(f"/api/v1/routes/{route_id}", headers=headers or admin_headers())
    assert r.status_code == 200, r.text
    route: Json = r.json()
    return route


def admin_headers() -> dict[str, str]:
    from tests.conftest import ADMIN_TOKEN

    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def post_fixes(
    srv: Server, dev: DeviceCreds, fixes: Sequence[Fix], batch: int = 1, strict: bool = True
) -> list[Fix]:
    """Post `fixes` in batches; returns those stored (with `strict`, all must be)."""
    stored: list[Fix] = []
    async with srv.client() as client:
        for i in range(0, len(fixes), batch):
            chunk = fixes[i : i + batch]
            r = await client.post(
                "/api/v1/positions",
                json={"positions": [ping_json(f) for f in chunk]},
                headers=dev.headers,
            )
            assert r.status_code == 202, r.text
            rejected = {x["index"] for x in r.json()["rejects"]}
            assert not (strict and rejected), r.text
            stored.extend(f for k, f in enumerate(chunk) if k not in rejected)
    await srv.settled()
    return stored


def ping_json(f: Fix) -> Json:
    out: Json = {"time": iso(f.time), "lat": f.lat, "lon": f.lon}
    if f.speed is not None:
        out["speed"] = f.speed
    return out


async def patch_stop(
    srv: Server, route_id: int, stop_id: int, body: Json, headers: dict[str, str] | None = None
) -> httpx.Response:
    async with srv.client() as client:
        return await client.patch(
            f"/api/v1/routes/{route_id}/stops/{stop_id}",
            json=body,
            headers=headers or admin_headers(),
        )


async def stored_events(db: asyncpg.Pool, route_id: int) -> list[Json]:
    rows = await db.fetch(
        "SELECT type, time, stop_id, data FROM events WHERE route_id = $1 ORDER BY id",
        route_id,
    )
    return [dict(r) for r in rows]


class BusRecorder:
    """Every `routes`/`events` message about one device that reaches an instance's bus."""

    def __init__(self, srv: Server, device: str) -> None:
        self.device = device
        self.events: list[Json] = []
        self.routes: list[Json] = []
        srv.runtime.bus.subscribe(self._on)

    def _on(self, channel: str, message: Json) -> None:
        if message.get("device") != self.device:
            return
        if channel == "events":
            self.events.append(message)
        elif channel == "routes":
            self.routes.append(message)


def drive(
    start: datetime,
    until_m: float,
    speed: float = 10.0,
    every_s: float = 5.0,
    dwell_at_m: float | None = None,
    dwell_s: float = 0.0,
) -> list[Fix]:
    """Fixes along the street at `speed`, optionally standing still for a while."""
    fixes: list[Fix] = []
    t, m = start, 0.0
    dwelled = 0.0
    while m <= until_m:
        standing = dwell_at_m is not None and m >= dwell_at_m and dwelled < dwell_s
        fixes.append(Fix(0, t, LAT, lon_at(m), speed=0.0 if standing else speed))
        t += timedelta(seconds=every_s)
        if standing:
            dwelled += every_s
        else:
            m += speed * every_s
    return fixes


def offline_events(
    route: Json,
    path: list[tuple[float, float]],
    fixes: Sequence[Fix],
    commands: dict[int, tuple[int, str, datetime]] | None = None,
    cfg: progress.EtaConfig | None = None,
    history: Snapshot | None = None,
) -> list[Json]:
    """The events the pure core produces for `fixes` in one uninterrupted replay, with
    stop status changes `commands[k] = (stop_id, status, time)` made before fix k.

    `history`: what the server had learned about the path when it planned the route (other
    tests' drives on the same street are learned too, when they share the database)."""
    stops = tuple(
        Stop(
            s["id"],
            s["seq"],
            s["lat"],
            s["lon"],
            s["name"],
            s["recipient"],
            s["service_s"],
            s["radius_m"],
        )
        for s in route["stops"]
    )
    plan = progress.plan(
        Route(
            route["id"],
            0,
            datetime.fromisoformat(route["planned_start"]),
            stops,
            tuple(path),
            route["straight_line"],
        ),
        history,
    )
    state = progress.start(plan)
    out: list[Json] = []
    for k, fix in enumerate(fixes):
        if commands and k in commands:
            stop_id, status, when = commands[k]
            state, events = progress.set_status(plan, state, stop_id, status, when)
            out.extend(
                {"type": e.type, "time": e.time, "stop_id": e.stop_id, "data": e.data}
                for e in events
            )
        state, events, _ = progress.step(plan, state, fix, cfg or progress.EtaConfig())
        out.extend(
            {"type": e.type, "time": e.time, "stop_id": e.stop_id, "data": e.data} for e in events
        )
    return out


STREET = [(LAT, LON0), (LAT, lon_at(STREET_M))]


# -- creating and reading -----------------------------------------------------------------


async def test_create_route_returns_the_contract_shape(
    server: Server, device: DeviceCreds, db: asyncpg.Pool
) -> None:
    bus = BusRecorder(server, device.unique_id)
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
    route = await create_route(server, route_body(device, start))
    assert set(route) == ROUTE_KEYS
    assert isinstance(route["id"], int)
    assert route["device"] == device.unique_id
    assert datetime.fromisoformat(route["planned_start"]) == start
    assert (route["status"], route["straight_line"], route["off_route"]) == (
        "active",
        False,
        False,
    )
    stops = route["stops"]
    assert [s["seq"] for s in stops] == [1, 2, 3]
    # Issue 6 adds each stop's customer tracking link.
    assert all(set(s) - {"tracking_url"} == STOP_KEYS for s in stops)
    assert len({s["id"] for s in stops}) == 3
    assert route["next_stop"] == stops[0]["id"]
    assert [s["name"] for s in stops] == ["Stop 1", "Stop 2", "Stop 3"]
    assert all(s["status"] == "pending" and s["arrived_at"] is None for s in stops)
    # Every ETA comes with its 80 % interval around it.
    for s in stops:
        assert s["eta_earliest"] < s["eta"] < s["eta_latest"]
    for s, m in zip(stops, STOP_AT_M, strict=True):
        assert s["lat"] == pytest.approx(LAT) and s["lon"] == pytest.approx(lon_at(m))
        assert (s["radius_m"], s["service_s"]) == (40.0, 60.0)
    # Before the first ping the drive starts at the planned start, so the ETAs lie after it,
    # in stop order, at least a service time apart.
    etas = [datetime.fromisoformat(s["eta"]) for s in stops]
    assert etas[0] > start
    assert all(b - a >= timedelta(seconds=60) for a, b in itertools.pairwise(etas))
    # Stored, and announced to the live maps.
    assert await get_route(server, route["id"]) == route
    assert bus.routes == [{"type": "route", **route}]
    rows = await db.fetch("SELECT eta FROM stops WHERE route_id = $1 ORDER BY seq", route["id"])
    assert [r["eta"] for r in rows] == etas


async def test_path_forms(server: Server, device: DeviceCreds, db: asyncpg.Pool) -> None:
    start = datetime(2024, 5, 1, 8, tzinfo=UTC)
    bent = [(LAT, LON0), (LAT + 0.002, lon_at(900)), (LAT, lon_at(STREET_M))]
    # Each form with the rounding its encoding allows.
    forms: list[tuple[Any, list[tuple[float, float]] | None, bool, float]] = [
        ({"polyline": polyline.encode(bent, 5)}, bent, False, 5.1e-6),
        ({"polyline": polyline.encode(bent, 6), "precision": 6}, bent, False, 5.1e-7),
        (polyline.encode(bent, 5), bent, False, 5.1e-6),
        ({"type": "Feature", "geometry": street_path(), "properties": {}}, STREET, False, 1e-12),
        (None, None, True, 1e-12),
    ]
    for path, expected, straight, tolerance in forms:
        route = await create_route(server, route_body(device, start, path=path))
        assert route["straight_line"] is straight
        stored = await db.fetch(
            "SELECT ST_Y(g.geom) AS lat, ST_X(g.geom) AS lon FROM routes r, "
            "ST_DumpPoints(r.path::geometry) AS g WHERE r.id = $1 ORDER BY g.path",
            route["id"],
        )
        points = [c for r in stored for c in (r["lat"], r["lon"])]
        if expected is None:  # the stops joined in order
            expected = [(s["lat"], s["lon"]) for s in route["stops"]]
        assert points == pytest.approx([c for p in expected for c in p], abs=tolerance)


@pytest.mark.parametrize(
    ("change", "status", "needle"),
    [
        ({"device": None}, 400, "device"),
        ({"planned_start": "tomorrow"}, 400, "planned_start"),
        ({"planned_start": None}, 400, "planned_start"),
        ({"stops": []}, 400, "stops"),
        ({"stops": [{"lat": 48.1}]}, 400, "stops[0].lon"),
        ({"stops": [{"lat": 91.0, "lon": 11.5}]}, 400, "stops[0]"),
        ({"stops": [{"lat": 48.1, "lon": 11.5, "radius_m": 0}]}, 400, "radius_m"),
        ({"stops": [{"lat": 48.1, "lon": 11.5, "service_s": -1}]}, 400, "service_s"),
        (
            {
                "stops": [
                    {
                        "lat": 48.1,
                        "lon": 11.5,
                        "window_start": "2024-05-01T10:00:00Z",
                        "window_end": "2024-05-01T09:00:00Z",
                    }
                ]
            },
            400,
            "window_end",
        ),
        ({"stops": [{"lat": 48.1, "lon": 11.5, "name": 7}]}, 400, "stops[0].name"),
        ({"path": {"type": "Point", "coordinates": [11.5, 48.1]}}, 400, "path"),
        ({"path": {"polyline": "@@@@@"}}, 400, "path"),
        ({"path": {"polyline": "_p~iF~ps|U", "precision": 7}}, 400, "precision"),
        ({"path": 42}, 400, "path"),
        # One stop and no path: nothing to measure progress along.
        ({"path": None, "stops": [{"lat": 48.1, "lon": 11.5}]}, 400, "path"),
        ({"device": "no-such-device"}, 404, "no-such-device"),
    ],
)
async def test_invalid_route_bodies_are_refused(
    server: Server,
    device: DeviceCreds,
    change: Json,
    status: int,
    needle: str,
    db: asyncpg.Pool,
) -> None:
    before = await db.fetchval("SELECT count(*) FROM routes")
    body = {**route_body(device, datetime(2024, 5, 1, 8, tzinfo=UTC)), **change}
    async with server.admin() as client:
        r = await client.post("/api/v1/routes", json=body)
    assert r.status_code == status, r.text
    assert r.json()["error"] in {"invalid_request", "not_found"}
    assert needle in r.json()["message"]
    assert await db.fetchval("SELECT count(*) FROM routes") == before


async def test_only_dispatchers_create_routes(server: Server, device: DeviceCreds) -> None:
    body = route_body(device, datetime(2024, 5, 1, 8, tzinfo=UTC))
    async with server.client() as client:
        anonymous = await client.post("/api/v1/routes", json=body)
        as_device = await client.post("/api/v1/routes", json=body, headers=device.headers)
        not_json = await client.post(
            "/api/v1/routes",
            content=b"{}",
            headers={**admin_headers(), "Content-Type": "text/plain"},
        )
    assert anonymous.status_code == 401 and as_device.status_code == 401
    assert not_json.status_code == 415


async def test_who_may_read_a_route(server: Server, device: DeviceCreds) -> None:
    other = await add_device(server)
    route = await create_route(server, route_body(device, datetime(2024, 5, 1, 8, tzinfo=UTC)))
    path = f"/api/v1/routes/{route['id']}"
    async with server.client() as client:
        assert (await client.get(path, headers=admin_headers())).json() == route
        assert (await client.get(path, headers=device.headers)).json() == route
        foreign = await client.get(path, headers=other.headers)
        anonymous = await client.get(path)
        bad_token = await client.get(path, headers={"Authorization": "Bearer nope"})
        missing = await client.get("/api/v1/routes/987654321", headers=admin_headers())
    assert foreign.status_code == 403 and foreign.json()["error"] == "forbidden"
    assert anonymous.status_code == 401 and bad_token.status_code == 401
    assert missing.status_code == 404


async def test_current_route_is_the_newest_active_one(server: Server, device: DeviceCreds) -> None:
    async with server.client() as client:
        r = await client.get("/api/v1/routes/current", headers=device.headers)
        assert r.status_code == 404 and r.json()["error"] == "no_active_route"
        assert (await client.get("/api/v1/routes/current")).status_code == 401
    start = datetime(2024, 5, 1, 8, tzinfo=UTC)
    await create_route(server, route_body(device, start))
    newer = await create_route(server, route_body(device, start + timedelta(hours=2)))
    async with server.client() as client:
        r = await client.get("/api/v1/routes/current", headers=device.headers)
    assert r.status_code == 200 and r.json() == newer


# -- stop statuses ------------------------------------------------------------------------


async def test_stop_status_changes_and_route_completion(
    server: Server, device: DeviceCreds, db: asyncpg.Pool
) -> None:
    stops = street_stops()
    stops.append({**stops[-1], "lon": lon_at(2100.0), "name": "Stop 4"})
    route = await create_route(
        server, route_body(device, datetime(2024, 5, 1, 8, tzinfo=UTC), stops=stops)
    )
    rid = route["id"]
    s1, s2, s3, s4 = (s["id"] for s in route["stops"])
    bus = BusRecorder(server, device.unique_id)

    r = await patch_stop(server, rid, s1, {"status": "completed"}, headers=device.headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["stops"][0]["status"] == "completed" and body["stops"][0]["completed_at"]
    assert body["stops"][0]["eta"] is None  # done: no ETA any more
    assert body["next_stop"] == s2
    # Repeating it changes nothing (a retried request is harmless).
    again = await patch_stop(server, rid, s1, {"status": "completed"})
    assert again.status_code == 200 and again.json() == body
    # A done stop stays done.
    refused = await patch_stop(server, rid, s1, {"status": "failed", "reason": "dog"})
    assert refused.status_code == 409 and refused.json()["error"] == "invalid_transition"

    no_reason = await patch_stop(server, rid, s2, {"status": "failed"})
    assert no_reason.status_code == 400 and "reason" in no_reason.json()["message"]
    failed = await patch_stop(server, rid, s2, {"status": "failed", "reason": " nobody home "})
    assert failed.status_code == 200
    assert failed.json()["stops"][1]["status"] == "failed"
    assert failed.json()["stops"][1]["reason"] == "nobody home"

    arrived = await patch_stop(server, rid, s3, {"status": "arrived"})
    assert arrived.status_code == 200
    assert arrived.json()["stops"][2]["status"] == "arrived"
    assert arrived.json()["stops"][2]["arrived_at"] is not None
    assert arrived.json()["next_stop"] == s3
    assert (await patch_stop(server, rid, s3, {"status": "completed"})).status_code == 200

    assert (await patch_stop(server, rid, s4, {"status": "lost"})).status_code == 400
    assert (await patch_stop(server, rid, 987654321, {"status": "skipped"})).status_code == 404
    assert (await patch_stop(server, 987654321, s4, {"status": "skipped"})).status_code == 404
    other = await add_device(server)
    foreign = await patch_stop(server, rid, s4, {"status": "skipped"}, headers=other.headers)
    assert foreign.status_code == 403

    done = await patch_stop(server, rid, s4, {"status": "skipped"})
    assert done.status_code == 200
    final = done.json()
    assert final["status"] == "completed"
    assert [s["status"] for s in final["stops"]] == ["completed", "failed", "completed", "skipped"]
    assert final["next_stop"] is None
    async with server.client() as client:
        current = await client.get("/api/v1/routes/current", headers=device.headers)
    assert current.status_code == 404

    events = await stored_events(db, rid)
    assert [(e["type"], e["stop_id"]) for e in events] == [
        ("stop.completed", s1),
        ("stop.failed", s2),
        ("stop.arrived", s3),
        ("stop.completed", s3),
        ("stop.skipped", s4),
        ("route.completed", None),
    ]
    assert events[1]["data"] == {"explicit": True, "reason": "nobody home"}
    # Every stored event was published, in order, and each change republished the route.
    assert [m["event"]["type"] for m in bus.events] == [e["type"] for e in events]
    assert [m["event"]["stop_id"] for m in bus.events] == [e["stop_id"] for e in events]
    assert bus.routes[-1] == {"type": "route", **final}


# -- progress from pings ------------------------------------------------------------------


async def test_pings_drive_arrival_departure_and_etas_timed_by_the_fixes(
    server: Server, device: DeviceCreds, db: asyncpg.Pool
) -> None:
    start = datetime(2020, 1, 1, 8, tzinfo=UTC)  # long past: the server clock must not matter
    route = await create_route(server, route_body(device, start))
    history = await learning.snapshot(db, STREET)  # what the plan knew
    bus = BusRecorder(server, device.unique_id)
    fixes = drive(start, until_m=900.0, dwell_at_m=STOP_AT_M[0], dwell_s=90.0)
    await post_fixes(server, device, fixes, batch=3)

    final = await get_route(server, route["id"])
    s1, s2, s3 = final["stops"]
    # Arrived, then departed: a visit, which the driver (not the geofence) completes.
    assert s1["status"] == "visited"
    arrived_at = datetime.fromisoformat(s1["arrived_at"])
    standing = [f.time for f in fixes if f.speed == 0.0]
    assert standing[0] <= arrived_at <= standing[-1]
    assert s1["completed_at"] is None
    # Later stops: ETAs after the last fix, from the fixes' own 2020 clock.
    last = fixes[-1].time
    for s in (s2, s3):
        assert s["status"] == "pending"
        eta = datetime.fromisoformat(s["eta"])
        assert last < eta < last + timedelta(minutes=30)
    assert final["next_stop"] == s2["id"]

    events = await stored_events(db, route["id"])
    kinds = [e["type"] for e in events]
    for kind in ("stop.arrived", "stop.departed", "stop.visited", "stop.eta_changed"):
        assert kind in kinds
    assert "stop.completed" not in kinds
    assert kinds.count("stop.arrived") == 1
    assert all(fixes[0].time <= e["time"] <= last for e in events)
    # Exactly what one uninterrupted replay of the same fixes yields.
    assert events == offline_events(final, STREET, fixes, history=history)
    # Stored = published, and the last route message is what GET returns.
    assert [(m["event"]["type"], m["event"]["time"]) for m in bus.events] == [
        (e["type"], e["time"].isoformat()) for e in events
    ]
    assert bus.routes[-1] == {"type": "route", **final}
    state = await db.fetchval("SELECT route_state FROM routes WHERE id = $1", route["id"])
    assert progress.RouteState.from_json(state).last_fix_time == last

    # A late ping (older than the state) is stored but changes nothing.
    late = Fix(0, fixes[5].time + timedelta(seconds=1), LAT, lon_at(2000.0), speed=10.0)
    await post_fixes(server, device, [late])
    assert await get_route(server, route["id"]) == final
    assert len(await stored_events(db, route["id"])) == len(events)

    # The driver completes the visited stop.
    done = await patch_stop(server, route["id"], s1["id"], {"status": "completed"})
    assert done.status_code == 200
    assert done.json()["stops"][0]["status"] == "completed"


async def test_devices_without_a_route_are_untouched(
    server: Server, device: DeviceCreds, db: asyncpg.Pool
) -> None:
    bus = BusRecorder(server, device.unique_id)
    await post_fixes(server, device, drive(datetime(2021, 3, 1, 9, tzinfo=UTC), 300.0))
    assert bus.events == [] and bus.routes == []
    device_id = await db.fetchval("SELECT id FROM devices WHERE unique_id = $1", device.unique_id)
    assert await db.fetchval("SELECT count(*) FROM events WHERE device_id = $1", device_id) == 0


# -- several instances --------------------------------------------------------------------


async def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.02)


async def test_two_instances_act_as_one(server_factory: ServerFactory, db: asyncpg.Pool) -> None:
    channel = f"tracker:test:{uuid.uuid4().hex}"
    a = await server_factory(redis_url=TEST_REDIS_URL, bus_channel=channel)
    b = await server_factory(redis_url=TEST_REDIS_URL, bus_channel=channel)
    buses = [srv.runtime.bus for srv in (a, b)]
    assert all(isinstance(bus, RedisBus) for bus in buses)
    await wait_for(
        lambda: all(bus.connected.is_set() for bus in buses if isinstance(bus, RedisBus))
    )
    dev = await add_device(a)
    start = datetime(2020, 2, 1, 8, tzinfo=UTC)
    route = await create_route(a, route_body(dev, start))
    history = await learning.snapshot(db, STREET)  # what the plan knew
    on_b = BusRecorder(b, dev.unique_id)
    fixes = drive(start, until_m=1400.0, dwell_at_m=STOP_AT_M[0], dwell_s=60.0)
    # Alternate instances, two pings at a time: every instance takes its turn.
    for i in range(0, len(fixes), 2):
        await post_fixes(a if (i // 2) % 2 == 0 else b, dev, fixes[i : i + 2], batch=2)

    from_a = await get_route(a, route["id"])
    from_b = await get_route(b, route["id"])
    assert from_a == from_b
    assert from_a["stops"][0]["status"] == "visited"
    # A map on B got every change, including those computed on A, ending with the same ETAs.
    await wait_for(lambda: bool(on_b.routes) and on_b.routes[-1] == {"type": "route", **from_a})
    events = await stored_events(db, route["id"])
    await wait_for(lambda: len(on_b.events) == len(events))
    assert events == offline_events(from_a, STREET, fixes, history=history)


async def test_concurrent_pings_on_two_instances_are_serialised(
    server_factory: ServerFactory, db: asyncpg.Pool
) -> None:
    a = await server_factory()
    b = await server_factory()
    dev = await add_device(a)
    start = datetime(2020, 3, 1, 8, tzinfo=UTC)
    route = await create_route(a, route_body(dev, start))
    fixes = drive(start, until_m=1400.0, every_s=2.0, dwell_at_m=STOP_AT_M[0], dwell_s=60.0)
    half = len(fixes) // 2
    # Both halves at once on both instances: pings of one half may arrive after newer ones
    # and count as late, but the route never goes backward or counts a visit twice.
    await asyncio.gather(
        post_fixes(a, dev, fixes[:half], batch=4), post_fixes(b, dev, fixes[half:], batch=4)
    )
    events = await stored_events(db, route["id"])
    times = [e["time"] for e in events]
    assert times == sorted(times)
    for kind in ("stop.arrived", "stop.departed", "stop.completed"):
        per_stop = [e["stop_id"] for e in events if e["type"] == kind]
        assert len(per_stop) == len(set(per_stop))
    state = progress.RouteState.from_json(
        await db.fetchval("SELECT route_state FROM routes WHERE id = $1", route["id"])
    )
    assert state.last_fix_time == fixes[-1].time


async def test_route_created_on_another_instance_is_picked_up_without_another_ping(
    server_factory: ServerFactory, db: asyncpg.Pool
) -> None:
    a = await server_factory()
    b = await server_factory()
    dev = await add_device(a)
    now = datetime.now(UTC).replace(microsecond=0)
    # B learns the device has no route ...
    await post_fixes(b, dev, [Fix(0, now - timedelta(seconds=30), LAT, LON0, speed=8.0)])
    route = await create_route(a, route_body(dev, now))
    # ... and hears of the new one on the bus (or, had that message been lost, finds the
    # route behind its stored fixes in its next sweep): nothing waits for a later ping.
    at_stop = lon_at(STOP_AT_M[0])
    t1 = datetime.now(UTC) + timedelta(seconds=1)
    await post_fixes(
        b,
        dev,
        [
            Fix(0, t1, LAT, at_stop, speed=0.0),
            Fix(0, t1 + timedelta(seconds=5), LAT, at_stop, speed=0.0),
        ],
    )
    deadline = asyncio.get_running_loop().time() + 8.0
    while True:
        events = await stored_events(db, route["id"])
        arrived = [e for e in events if e["type"] == "stop.arrived"]
        if arrived or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.05)
    # The arrival is timed by the first ping at the stop: nothing stored was skipped.
    assert [(e["stop_id"], e["time"]) for e in arrived] == [(route["stops"][0]["id"], t1)]


async def test_explicit_arrival_completes_on_departure_only_at_the_stop(
    server: Server, db: asyncpg.Pool
) -> None:
    start = datetime(2020, 4, 1, 8, tzinfo=UTC)
    outcomes: dict[float, tuple[str, list[str]]] = {}
    for where_m in (300.0, STOP_AT_M[0]):  # far from stop 1, then right at it
        dev = await add_device(server)
        route = await create_route(server, route_body(dev, start))
        stop1 = route["stops"][0]["id"]
        # Driving through at speed: the geofence alone is no arrival.
        await post_fixes(server, dev, drive(start, until_m=where_m))
        assert (await get_route(server, route["id"]))["stops"][0]["status"] == "pending"
        r = await patch_stop(server, route["id"], stop1, {"status": "arrived"}, dev.headers)
        assert r.status_code == 200 and r.json()["stops"][0]["status"] == "arrived"
        later = start + timedelta(minutes=5)
        await post_fixes(
            server,
            dev,
            [
                Fix(
                    0,
                    later + timedelta(seconds=5 * k),
                    LAT,
                    lon_at(where_m + 100.0 * (k + 1)),
                    speed=10.0,
                )
                for k in range(4)
            ],
        )
        final = await get_route(server, route["id"])
        kinds = [e["type"] for e in await stored_events(db, route["id"]) if e["stop_id"] == stop1]
        outcomes[where_m] = (final["stops"][0]["status"], kinds)
    # Tapped "arrived" away from the pin: driving on does not deliver it by itself.
    status, kinds = outcomes[300.0]
    assert status == "arrived"
    assert "stop.arrived" in kinds
    assert "stop.departed" not in kinds and "stop.completed" not in kinds
    # Tapped at the stop: leaving its geofence records the visit, as an automatic arrival's.
    status, kinds = outcomes[STOP_AT_M[0]]
    assert status == "visited"
    assert kinds[kinds.index("stop.arrived") :][:3] == [
        "stop.arrived",
        "stop.departed",
        "stop.visited",
    ]


async def test_event_sinks_run_in_the_storing_transaction(
    server: Server, device: DeviceCreds, db: asyncpg.Pool
) -> None:
    from tracker.services.route_log import per_device
    from tracker.services.routing import RoutingService

    service = server.runtime.routing
    assert isinstance(service, RoutingService)
    seen: list[tuple[str, list[tuple[int, str]]]] = []
    fail = False

    async def sink(conn: asyncpg.Connection, dev: str, events: list[tuple[int, Any]]) -> None:
        # The events are visible here, uncommitted, on the same connection.
        ids = [i for i, _ in events]
        assert await conn.fetchval("SELECT count(*) FROM events WHERE id = ANY($1)", ids) == len(
            ids
        )
        seen.append((dev, [(i, e.type) for i, e in events]))
        if fail:
            raise RuntimeError("outbox unavailable")

    start = datetime(2020, 5, 1, 8, tzinfo=UTC)
    route = await create_route(server, route_body(device, start))
    batch_sink = per_device(sink)
    service.event_sinks.append(batch_sink)
    try:
        await post_fixes(
            server, device, drive(start, until_m=900.0, dwell_at_m=600.0, dwell_s=60.0)
        )
        stored = await stored_events(db, route["id"])
        rows = await db.fetch(
            "SELECT id, type FROM events WHERE route_id = $1 ORDER BY id", route["id"]
        )
        assert "stop.arrived" in [r["type"] for r in rows]
        assert [x for _, batch in seen for x in batch] == [(r["id"], r["type"]) for r in rows]
        assert {dev for dev, _ in seen} == {device.unique_id}
        # A sink that fails undoes the change it was told about: all or nothing.
        fail = True
        stop2 = route["stops"][1]["id"]
        async with server.client() as client:
            r = await client.patch(
                f"/api/v1/routes/{route['id']}/stops/{stop2}",
                json={"status": "skipped"},
                headers=admin_headers(),
            )
        assert r.status_code == 500
        assert await stored_events(db, route["id"]) == stored
        assert (await get_route(server, route["id"]))["stops"][1]["status"] == "pending"
    finally:
        service.event_sinks.remove(batch_sink)
