"""Planning against real PostGIS + pgRouting (Monaco's roads) and the real VROOM: propose a
day, read it back, dispatch it as live routes with road paths and tracking links, then
re-plan the live routes (insert, re-optimise, move) and watch the ETAs follow."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from tests.conftest import DATA, DeviceCreds, Server, ServerFactory, add_device, own_database
from tracker.core import pathcodec
from tracker.store.db import create_pool
from tracker.tools.roads import import_file

Json = dict[str, Any]
MONACO = DATA / "osm" / "monaco.osm.gz"
DEPOT = (43.7350, 7.4200)  # Fontvieille
# Places around Monaco, on streets.
PLACES = [
    (43.7396, 7.4275),
    (43.7375, 7.4215),
    (43.7310, 7.4190),
    (43.7440, 7.4330),
    (43.7490, 7.4380),
    (43.7330, 7.4160),
    (43.7365, 7.4250),
    (43.7410, 7.4250),
    (43.7455, 7.4290),
    (43.7320, 7.4230),
]


@dataclass
class World:
    server: Server
    db: asyncpg.Pool
    depot: int
    vans: list[Json]
    devices: list[DeviceCreds]


@pytest.fixture(scope="module")
async def monaco_db() -> AsyncIterator[str]:
    async with own_database("plans") as url:
        await import_file(url, MONACO)
        yield url


@pytest.fixture
async def world(monaco_db: str, server_factory: ServerFactory) -> AsyncIterator[World]:
    server = await server_factory(database_url=monaco_db)
    pool = await create_pool(monaco_db, 2)
    devices = [await add_device(server, f"Van {k}") for k in range(2)]
    async with server.admin() as client:
        r = await client.post(
            "/api/v1/depots", json={"name": "Fontvieille", "lat": DEPOT[0], "lon": DEPOT[1]}
        )
        assert r.status_code == 201, r.text
        depot = r.json()["id"]
        vans = []
        for k, dev in enumerate(devices):
            r = await client.post(
                "/api/v1/vehicles",
                json={
                    "name": f"Van {k}",
                    "device": dev.unique_id,
                    "capacity": {"parcels": 20},
                    "shift_start": "08:00",
                    "shift_end": "18:00",
                    "time_zone": "Europe/Monaco",
                    "start_depot_id": depot,
                    "end_depot_id": depot,
                    "skills": ["fridge"] if k == 0 else [],
                },
            )
            assert r.status_code == 201, r.text
            vans.append(r.json())
    try:
        yield World(server, pool, depot, vans, devices)
    finally:
        await pool.close()


def future_day() -> date:
    return date(2031, 1, 1) + timedelta(days=uuid.uuid4().int % 3000)


def window(day: date, start: int, end: int) -> list[str]:
    """[start, end] hours of `day`, UTC."""
    base = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return [(base + timedelta(hours=start)).isoformat(), (base + timedelta(hours=end)).isoformat()]


async def add_orders(client: httpx.AsyncClient, day: date, bodies: list[Json]) -> list[Json]:
    full = [
        {
            "external_id": f"t-{uuid.uuid4().hex[:10]}",
            "recipient": f"Customer {k}",
            "address": f"Rue {k}, Monaco",
            "service_s": 120,
            "size": {"parcels": 1},
            "date": day.isoformat(),
            **b,
        }
        for k, b in enumerate(bodies)
    ]
    r = await client.post("/api/v1/orders", json={"orders": full})
    assert r.status_code == 201, r.text
    orders: list[Json] = r.json()["orders"]
    return orders


async def test_plan_dispatch_and_replan_on_real_roads(world: World) -> None:
    day = future_day()
    async with world.server.admin() as client:
        bodies: list[Json] = [{"lat": lat, "lon": lon} for lat, lon in PLACES[:8]]
        bodies[0]["windows"] = [window(day, 8, 10)]  # 09:00-11:00 in Monaco
        bodies[1]["windows"] = [window(day, 12, 13)]
        bodies[2]["skills"] = ["fridge"]
        bodies[3]["kind"] = "pickup"
        bodies.append({"lat": PLACES[8][0], "lon": PLACES[8][1], "skills": ["crane"]})
        orders = await add_orders(client, day, bodies)
        ids = [o["id"] for o in orders]

        r = await client.post(
            "/api/v1/plans",
            json={"date": day.isoformat(), "vehicles": [v["id"] for v in world.vans]},
        )
        assert r.status_code == 201, r.text
        plan = r.json()
        assert plan["status"] == "proposed" and plan["travel"] == "roads"
        assert plan["straight_line"] is False and plan["note"] is None
        assert plan["summary"]["orders"] == 9 and plan["summary"]["assigned"] == 8
        assert plan["unassigned"] == [
            {
                "order_id": ids[8],
                "external_id": orders[8]["external_id"],
                "reason": "no vehicle has the skills it needs: crane",
            }
        ]
        served = {s["order_id"]: (r_, s) for r_ in plan["routes"] for s in r_["stops"]}
        assert set(served) == set(ids[:8])
        # The fridge order rides with the only van that has a fridge.
        assert served[ids[2]][0]["vehicle_id"] == world.vans[0]["id"]
        for route in plan["routes"]:
            assert route["start"]["depot_id"] == world.depot and route["path"]["precision"] == 6
            assert route["distance_m"] > 500 and route["duration_s"] > 0
            shift = datetime.fromisoformat(route["start"]["time"])
            assert shift >= datetime(day.year, day.month, day.day, 7, tzinfo=UTC)
            times = [datetime.fromisoformat(s["arrival"]) for s in route["stops"]]
            assert times == sorted(times)
            for s in route["stops"]:
                assert s["lateness_s"] == 0 and s["distance_m"] > 0
        first = served[ids[0]][1]
        arrival = datetime.fromisoformat(first["arrival"])
        assert window(day, 8, 10)[0] <= arrival.astimezone(UTC).isoformat() <= window(day, 8, 10)[1]
        assert served[ids[3]][1]["kind"] == "pickup"
        again = await client.get(f"/api/v1/plans/{plan['id']}")
        assert again.status_code == 200 and again.json() == plan

        # Dispatch: one live route per van, road path, planned arrivals, tracking links.
        r = await client.post(f"/api/v1/plans/{plan['id']}/dispatch")
        assert r.status_code == 201, r.text
        out = r.json()
        assert out["plan"]["status"] == "dispatched"
        assert len(out["routes"]) == len(plan["routes"])
        for route, planned in zip(out["routes"], plan["routes"], strict=True):
            assert route["device"] == planned["device"] and route["straight_line"] is False
            assert [s["planned_arrival"] for s in route["stops"]] == [
                datetime.fromisoformat(s["arrival"]).isoformat() for s in planned["stops"]
            ]
            assert all(s["tracking_url"].startswith("http") for s in route["stops"])
            # Before departure the live ETAs are the plan's arrivals (same travel times), up
            # to and including the first stop the van waits at for its window to open (the
            # ETA's profile counts a wait as slow driving for the stops after it).
            waited = next(
                (k for k, s in enumerate(planned["stops"]) if s["waiting_s"] > 0),
                len(planned["stops"]) - 1,
            )
            for stop in route["stops"][: waited + 1]:
                eta = datetime.fromisoformat(stop["eta"])
                gap = eta - datetime.fromisoformat(stop["planned_arrival"])
                assert abs(gap.total_seconds()) < 60, stop
        stored = await world.db.fetch(
            "SELECT id, status, route_id, stop_id FROM orders WHERE id = ANY($1) ORDER BY id", ids
        )
        assert [o["status"] for o in stored[:8]] == ["dispatched"] * 8
        assert all(o["route_id"] and o["stop_id"] for o in stored[:8])
        assert stored[8]["status"] == "unplanned"
        twice = await client.post(f"/api/v1/plans/{plan['id']}/dispatch")
        assert twice.status_code == 409 and "dispatched already" in twice.json()["message"]
        routes = [r_["id"] for r_ in out["routes"]]
        path_len = await world.db.fetchval(
            "SELECT ST_NPoints(path::geometry) FROM routes WHERE id = $1", routes[0]
        )
        assert path_len > len(out["routes"][0]["stops"]) + 2  # road geometry, not stops joined

        # Re-plan: a late order goes into a live route where it costs least.
        (late,) = await add_orders(client, day, [{"lat": PLACES[9][0], "lon": PLACES[9][1]}])
        r = await client.post("/api/v1/replan/insert", json={"order_id": late["id"]})
        assert r.status_code == 200, r.text
        joined = r.json()
        assert joined["inserted"]["order_id"] == late["id"] and joined["id"] in routes
        new_stop = next(s for s in joined["stops"] if s["id"] == joined["inserted"]["stop_id"])
        assert new_stop["eta"] is not None and new_stop["planned_arrival"] is not None
        row = await world.db.fetchrow(
            "SELECT status, stop_id FROM orders WHERE id = $1", late["id"]
        )
        assert (row["status"], row["stop_id"]) == ("dispatched", new_stop["id"])
        again = await client.post("/api/v1/replan/insert", json={"order_id": late["id"]})
        assert again.status_code == 409

        # Re-optimise a route: same stops, planned again from where the van is.
        r = await client.post("/api/v1/replan/reoptimise", json={"route_id": routes[0]})
        assert r.status_code == 200, r.text
        before = next(x for x in out["routes"] if x["id"] == routes[0])
        kept = {s["id"] for s in before["stops"]} | (
            {new_stop["id"]} if joined["id"] == routes[0] else set()
        )
        assert {s["id"] for s in r.json()["stops"]} == kept

        # Move a stop from one van to the other: same stop id, order follows.
        if len(routes) == 2:
            moving = out["routes"][1]["stops"][0]["id"]
            r = await client.post(
                "/api/v1/replan/move", json={"stops": [moving], "route_id": routes[0]}
            )
            assert r.status_code == 200, r.text
            changed = {x["id"]: x for x in r.json()["routes"]}
            assert moving in {s["id"] for s in changed[routes[0]]["stops"]}
            assert moving not in {s["id"] for s in changed[routes[1]]["stops"]}
            follows = await world.db.fetchval(
                "SELECT route_id FROM orders WHERE stop_id = $1", moving
            )
            assert follows == routes[0]

    # The van drives: a ping on the re-planned route advances it with the new plan.
    dev = next(d for d in world.devices if d.unique_id == out["routes"][0]["device"])
    now = datetime.now(UTC)
    async with world.server.client() as phone:
        r = await phone.post(
            "/api/v1/positions",
            headers=dev.headers,
            json={"time": now.isoformat(), "lat": DEPOT[0], "lon": DEPOT[1], "speed": 5.0},
        )
        assert r.status_code == 202, r.text
        r = await phone.get(f"/api/v1/routes/{routes[0]}", headers=dev.headers)
    assert r.status_code == 200
    assert r.json()["status"] == "active"
    assert all(s["eta"] is not None for s in r.json()["stops"] if s["status"] == "pending")


async def test_bad_plan_requests_are_refused(world: World) -> None:
    day = future_day().isoformat()
    cases: list[tuple[Json, str]] = [
        ({"date": day, "colour": "red"}, "colour: unknown field"),
        ({}, "date: required"),
        ({"date": "tomorrow"}, "date: 'tomorrow' is not"),
        ({"date": day, "vehicles": [987654321]}, "vehicles[0]: no vehicle 987654321"),
        ({"date": day, "vehicles": []}, "vehicles: must be a non-empty list"),
        ({"date": day, "vehicles": [{"name": "X", "wheels": 3}]}, "wheels: unknown field"),
        ({"date": day, "vehicles": [{"name": "X", "start_depot_id": 987654}]}, "no depot 987654"),
        ({"date": day, "vehicles": [{"name": "X"}]}, "neither a start nor an end depot"),
        ({"date": day, "orders": [987654321]}, "orders: no order 987654321"),
        ({"date": day, "orders": [1, 1]}, "orders: an id is repeated"),
        ({"date": day, "orders": ["a"]}, "orders[0]: must be a positive integer id"),
    ]
    async with world.server.admin() as client:
        for body, named in cases:
            r = await client.post("/api/v1/plans", json=body)
            assert r.status_code == 400, (body, r.text)
            assert named in r.json()["message"], (body, r.json())
        assert (await client.get("/api/v1/plans/987654321")).status_code == 404
        assert (await client.post("/api/v1/plans/987654321/dispatch")).status_code == 404
        r = await client.post("/api/v1/replan/insert", json={"order_id": 987654321})
        assert r.status_code == 404
        r = await client.post("/api/v1/replan/insert", json={"order_id": 1, "extra": True})
        assert r.status_code == 400 and "extra: unknown field" in r.json()["message"]
        r = await client.post("/api/v1/replan/reoptimise", json={"route_id": 987654321})
        assert r.status_code == 404
        r = await client.post("/api/v1/replan/move", json={"stops": [], "route_id": 1})
        assert r.status_code == 400 and "stops" in r.json()["message"]
        r = await client.post(
            "/api/v1/plans", content=b"{", headers={"content-type": "application/json"}
        )
        assert r.status_code == 400


async def test_inline_vehicle_plan_without_a_device_cannot_dispatch(world: World) -> None:
    day = future_day()
    async with world.server.admin() as client:
        await add_orders(client, day, [{"lat": lat, "lon": lon} for lat, lon in PLACES[:3]])
        r = await client.post(
            "/api/v1/plans",
            json={
                "date": day.isoformat(),
                "vehicles": [
                    {
                        "name": "Hired van",
                        "start_depot_id": world.depot,
                        "shift_start": "09:00",
                        "shift_end": "12:00",
                    }
                ],
            },
        )
        assert r.status_code == 201, r.text
        plan = r.json()
        assert plan["summary"]["assigned"] == 3
        assert (
            plan["routes"][0]["vehicle_id"] is None and plan["routes"][0]["end"]["depot_id"] is None
        )
        assert plan["routes"][0]["return_path"] is None
        r = await client.post(f"/api/v1/plans/{plan['id']}/dispatch")
        assert r.status_code == 409 and "has no device" in r.json()["message"]


async def one_van_plan(
    server: Server,
    client: httpx.AsyncClient,
    day: date,
    name: str,
    depot: tuple[str, float, float],
    places: list[tuple[float, float]],
) -> tuple[httpx.Response, DeviceCreds]:
    """POST /api/v1/plans for `places` (new orders of `day`) with one inline van of a new
    device, 08:00-12:00 from and back to a new depot; the test database has no roads."""
    dev = await add_device(server, name)
    r = await client.post(
        "/api/v1/depots", json={"name": depot[0], "lat": depot[1], "lon": depot[2]}
    )
    depot_id = r.json()["id"]
    orders = await add_orders(client, day, [{"lat": lat, "lon": lon} for lat, lon in places])
    van = {
        "name": name,
        "device": dev.unique_id,
        "start_depot_id": depot_id,
        "end_depot_id": depot_id,
        "shift_start": "08:00",
        "shift_end": "12:00",
    }
    r = await client.post(
        "/api/v1/plans",
        json={"date": day.isoformat(), "vehicles": [van], "orders": [o["id"] for o in orders]},
    )
    return r, dev


async def test_without_roads_plans_on_straight_lines_and_says_so(server: Server) -> None:
    """The shared test database has no road network: planning still works."""
    day = future_day()
    async with server.admin() as client:
        r, dev = await one_van_plan(
            server,
            client,
            day,
            "Straight van",
            ("Andorra", 42.5075, 1.5218),
            [(42.5063, 1.5218), (42.51, 1.53), (42.50, 1.51)],
        )
        assert r.status_code == 201, r.text
        plan = r.json()
        assert plan["travel"] == "straight_line" and plan["straight_line"] is True
        assert "straight-line" in plan["note"] and "tracker roads import" in plan["note"]
        (route,) = plan["routes"]
        assert len(route["stops"]) == 3
        # 30 km/h on straight lines × 1.3: a leg's time follows from its distance.
        leg = route["stops"][1]
        assert leg["travel_s"] == pytest.approx(leg["distance_m"] / (30 / 3.6), abs=2)
        r = await client.post(f"/api/v1/plans/{plan['id']}/dispatch")
        assert r.status_code == 201, r.text
        (live,) = r.json()["routes"]
        assert live["straight_line"] is True and live["device"] == dev.unique_id


async def test_dispatched_road_paths_keep_to_the_path_point_limit(
    monaco_db: str, server_factory: ServerFactory
) -> None:
    server = await server_factory(database_url=monaco_db, max_path_points=12)
    dev = await add_device(server, "Short-path van")
    day = future_day()
    async with server.admin() as client:
        r = await client.post(
            "/api/v1/depots", json={"name": "Port Hercule", "lat": DEPOT[0], "lon": DEPOT[1]}
        )
        van = {
            "name": "Short-path van",
            "device": dev.unique_id,
            "start_depot_id": r.json()["id"],
            "end_depot_id": r.json()["id"],
            "shift_start": "08:00",
            "shift_end": "18:00",
            "time_zone": "Europe/Monaco",
        }
        orders = await add_orders(client, day, [{"lat": a, "lon": b} for a, b in PLACES[:6]])
        r = await client.post(
            "/api/v1/plans",
            json={"date": day.isoformat(), "vehicles": [van], "orders": [o["id"] for o in orders]},
        )
        assert r.status_code == 201, r.text
        plan = r.json()
        assert plan["travel"] == "roads"
        planned = pathcodec.from_polyline(
            plan["routes"][0]["path"]["polyline"], plan["routes"][0]["path"]["precision"]
        )
        assert len(planned) > 12  # the road path as planned is longer than the limit
        r = await client.post(f"/api/v1/plans/{plan['id']}/dispatch")
        assert r.status_code == 201, r.text
        (live,) = r.json()["routes"]
    pool = await create_pool(monaco_db, 1)
    try:
        points = await pool.fetchval(
            "SELECT ST_NPoints(path::geometry) FROM routes WHERE id = $1", live["id"]
        )
    finally:
        await pool.close()
    assert 2 <= points <= 12
