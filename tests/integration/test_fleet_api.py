"""Depots and vehicles through a real server and PostGIS: create, list, read, change, delete,
their references (devices, depots) checked, and every bad body a 4xx naming the field."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Any

import pytest

from tests.conftest import Server, add_device
from tracker.store import fleet as fleet_store

Json = dict[str, Any]


async def new_depot(server: Server, **extra: Any) -> Json:
    body = {"name": f"Depot {uuid.uuid4().hex[:6]}", "lat": 42.5078, "lon": 1.5211, **extra}
    async with server.admin() as client:
        r = await client.post("/api/v1/depots", json=body)
    assert r.status_code == 201, r.text
    result: Json = r.json()
    return result


async def test_depot_lifecycle(server: Server) -> None:
    depot = await new_depot(server, address="Carretera de l'Aeroport, Andorra la Vella")
    url = f"/api/v1/depots/{depot['id']}"
    async with server.admin() as client:
        assert (await client.get(url)).json() == depot
        listed = (await client.get("/api/v1/depots")).json()["depots"]
        assert depot in listed
        moved = await client.patch(url, json={"lat": 42.46, "lon": 1.49, "name": "Sant Julià"})
        assert moved.status_code == 200
        assert (moved.json()["lat"], moved.json()["lon"], moved.json()["name"]) == (
            42.46,
            1.49,
            "Sant Julià",
        )
        assert moved.json()["address"] == depot["address"]
        assert (await client.delete(url)).status_code == 204
        assert (await client.get(url)).status_code == 404
        assert (await client.delete(url)).status_code == 404
        assert (await client.patch(url, json={"name": "x"})).status_code == 404


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"lat": 1, "lon": 2}, "name: required"),
        ({"name": "D", "lat": 100, "lon": 2}, "lat: must be between -90 and 90"),
        ({"name": "D", "lat": 1}, "lon: required"),
        ({"name": "D", "lat": 1, "lon": 2, "capacity": 3}, "capacity: unknown field"),
        ({"name": "", "lat": 1, "lon": 2}, "name: must not be empty"),
        ({"name": "D", "lat": "1", "lon": 2}, "lat: must be a number"),
    ],
)
async def test_bad_depot_is_named(server: Server, body: Json, named: str) -> None:
    async with server.admin() as client:
        r = await client.post("/api/v1/depots", json=body)
    assert r.status_code == 400
    assert named in r.json()["message"]


async def test_patch_depot_needs_both_coordinates(server: Server) -> None:
    depot = await new_depot(server)
    async with server.admin() as client:
        r = await client.patch(f"/api/v1/depots/{depot['id']}", json={"lat": 42.0})
    assert r.status_code == 400
    assert "lon: lat and lon go together" in r.json()["message"]


async def test_vehicle_lifecycle_with_device_and_depots(server: Server) -> None:
    start, end = await new_depot(server), await new_depot(server)
    device = await add_device(server, "Van 12")
    body = {
        "name": "Van 12",
        "device": device.unique_id,
        "capacity": {"parcels": 120, "kg": 800},
        "shift_start": "08:00",
        "shift_end": "17:30",
        "time_zone": "Europe/Andorra",
        "start_depot_id": start["id"],
        "end_depot_id": end["id"],
        "skills": ["tail-lift", "fridge"],
        "max_duration_s": 32400,
    }
    async with server.admin() as client:
        r = await client.post("/api/v1/vehicles", json=body)
        assert r.status_code == 201, r.text
        van = r.json()
        assert van["device"] == device.unique_id
        assert (van["shift_start"], van["shift_end"]) == ("08:00:00", "17:30:00")
        assert van["skills"] == ["fridge", "tail-lift"]
        assert van["active"] is True
        url = f"/api/v1/vehicles/{van['id']}"
        assert (await client.get(url)).json() == van
        off = await client.patch(url, json={"active": False, "device": None, "shift_end": None})
        assert off.status_code == 200, off.text
        assert (off.json()["active"], off.json()["device"], off.json()["shift_end"]) == (
            False,
            None,
            None,
        )
        active = (await client.get("/api/v1/vehicles", params={"active": "true"})).json()
        inactive = (await client.get("/api/v1/vehicles", params={"active": "false"})).json()
        assert van["id"] not in [v["id"] for v in active["vehicles"]]
        assert van["id"] in [v["id"] for v in inactive["vehicles"]]
        # The depot is in use: it cannot go while the vehicle starts there.
        busy = await client.delete(f"/api/v1/depots/{start['id']}")
        assert busy.status_code == 409
        assert (await client.delete(url)).status_code == 204
        assert (await client.delete(f"/api/v1/depots/{start['id']}")).status_code == 204
        assert (await client.get(url)).status_code == 404


async def test_planner_reads_the_shift_in_utc(server: Server) -> None:
    depot = await new_depot(server)
    async with server.admin() as client:
        r = await client.post(
            "/api/v1/vehicles",
            json={
                "name": "Night van",
                "shift_start": "22:00",
                "shift_end": "06:00",
                "time_zone": "Europe/Andorra",
                "start_depot_id": depot["id"],
            },
        )
    assert r.status_code == 201, r.text
    vans = await fleet_store.vehicles_by_ids(server.runtime.pool, [r.json()["id"]])
    begin, finish = vans[r.json()["id"]].shift_on(date(2030, 1, 15))
    # Winter: Andorra is UTC+1; a shift ending before it starts ends the next morning.
    assert begin == datetime(2030, 1, 15, 21, 0, tzinfo=UTC)
    assert finish == datetime(2030, 1, 16, 5, 0, tzinfo=UTC)
    depots = await fleet_store.depots_by_ids(server.runtime.pool, [depot["id"]])
    assert depots[depot["id"]].lat == depot["lat"]


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({}, "name: required"),
        ({"name": "V", "device": "no-such-device"}, "device: no such device"),
        ({"name": "V", "start_depot_id": 987654321}, "start_depot_id: no such depot"),
        ({"name": "V", "end_depot_id": 0}, "end_depot_id: must be between 1"),
        ({"name": "V", "capacity": {"kg": "lots"}}, "capacity.kg: must be a number"),
        ({"name": "V", "shift_start": "8am"}, "shift_start: must be a local time"),
        ({"name": "V", "shift_start": "08:00", "shift_end": "08:00"}, "shift_end: must differ"),
        ({"name": "V", "time_zone": "Andorra"}, "time_zone: must be an IANA time zone"),
        ({"name": "V", "skills": ["a b"]}, "skills[0]: must be a name"),
        ({"name": "V", "max_duration_s": 0}, "max_duration_s: must be between 1"),
        ({"name": "V", "active": "yes"}, "active: must be true or false"),
        ({"name": "V", "driver": "Bob"}, "driver: unknown field"),
    ],
)
async def test_bad_vehicle_is_named(server: Server, body: Json, named: str) -> None:
    async with server.admin() as client:
        r = await client.post("/api/v1/vehicles", json=body)
    assert r.status_code == 400, r.text
    assert named in r.json()["message"]


async def test_patch_vehicle_checks_references(server: Server) -> None:
    async with server.admin() as client:
        van = (await client.post("/api/v1/vehicles", json={"name": "Spare"})).json()
        r = await client.patch(f"/api/v1/vehicles/{van['id']}", json={"end_depot_id": 987654321})
        missing = await client.patch("/api/v1/vehicles/999999999", json={"name": "x"})
        unknown = await client.get("/api/v1/vehicles", params={"colour": "red"})
    assert r.status_code == 400 and "end_depot_id: no such depot" in r.json()["message"]
    assert missing.status_code == 404
    assert unknown.status_code == 400
