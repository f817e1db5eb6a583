"""The orders API against a real server and PostGIS: create one or a batch, read, list with
every filter and cursor paging, change, cancel, and every bad body refused with a 4xx that
names the problem (nothing stored)."""

from __future__ import annotations

import uuid
from datetime import date, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from tests.conftest import Server

Json = dict[str, Any]

ORDER_KEYS = {
    "id",
    "external_id",
    "kind",
    "lat",
    "lon",
    "address",
    "recipient",
    "phone",
    "email",
    "windows",
    "service_s",
    "size",
    "skills",
    "priority",
    "notes",
    "date",
    "status",
    "geocode_status",
    "geocode_candidates",
    "route_id",
    "stop_id",
    "created_at",
    "updated_at",
}


def fresh_day() -> date:
    """A delivery day no other test uses, so list filters see only this test's orders."""
    return date(2030, 1, 1) + timedelta(days=uuid.uuid4().int % 20000)


def order(day: date, **extra: Any) -> Json:
    body: Json = {
        "external_id": f"ext-{uuid.uuid4().hex[:10]}",
        "lat": 42.5063,
        "lon": 1.5218,
        "address": "Plaça del Poble 1, Andorra la Vella",
        "recipient": "Ana Puig",
        "phone": "+376 800 100",
        "email": "ana@example.ad",
        "windows": [[f"{day}T09:00:00+01:00", f"{day}T12:00:00+01:00"]],
        "service_s": 120,
        "size": {"parcels": 2, "kg": 7.5},
        "skills": ["fridge"],
        "priority": 40,
        "notes": "ring twice",
        "date": day.isoformat(),
    }
    body.update(extra)
    return body


async def test_create_one_then_read_it(server: Server, db: asyncpg.Pool) -> None:
    day = fresh_day()
    body = order(day)
    async with server.admin() as client:
        r = await client.post("/api/v1/orders", json=body)
        assert r.status_code == 201, r.text
        created = r.json()
        assert set(created) == ORDER_KEYS
        got = await client.get(f"/api/v1/orders/{created['id']}")
    assert got.status_code == 200
    assert got.json() == created
    assert created["status"] == "unplanned"
    assert created["geocode_status"] == "given"
    assert created["windows"] == [[f"{day}T08:00:00+00:00", f"{day}T11:00:00+00:00"]]
    assert created["size"] == {"parcels": 2, "kg": 7.5}
    row = await db.fetchrow(
        "SELECT ST_Y(location::geometry) AS lat, ST_X(location::geometry) AS lon, date "
        "FROM orders WHERE id = $1",
        created["id"],
    )
    assert (row["lat"], row["lon"], row["date"]) == (42.5063, 1.5218, day)


async def test_date_comes_from_the_first_window_in_its_own_offset(server: Server) -> None:
    # 00:30 at +02:00 is the 5th locally but the 4th in UTC: the delivery day is the 5th.
    body = order(
        date(2031, 3, 5), windows=[["2031-03-05T00:30:00+02:00", "2031-03-05T02:00:00+02:00"]]
    )
    del body["date"]
    async with server.admin() as client:
        r = await client.post("/api/v1/orders", json=body)
    assert r.status_code == 201, r.text
    assert r.json()["date"] == "2031-03-05"


async def test_address_only_order_is_flagged_without_a_geocoder(server: Server) -> None:
    body = order(fresh_day())
    del body["lat"], body["lon"]
    async with server.admin() as client:
        r = await client.post("/api/v1/orders", json=body)
    assert r.status_code == 201, r.text
    assert (r.json()["lat"], r.json()["geocode_status"]) == (None, "unresolved")


async def test_batch_is_stored_together_or_not_at_all(server: Server, db: asyncpg.Pool) -> None:
    day = fresh_day()
    good = [order(day), order(day, kind="pickup")]
    async with server.admin() as client:
        bad = await client.post(
            "/api/v1/orders", json={"orders": [*good, order(day, priority=101, kind="parcel")]}
        )
        assert bad.status_code == 400
        message = bad.json()["message"]
        assert "orders[2].priority: must be between 0 and 100" in message
        assert "orders[2].kind: must be one of delivery, pickup" in message
        assert await db.fetchval("SELECT count(*) FROM orders WHERE date = $1", day) == 0
        r = await client.post("/api/v1/orders", json={"orders": good})
    assert r.status_code == 201, r.text
    kinds = [o["kind"] for o in r.json()["orders"]]
    assert kinds == ["delivery", "pickup"]
    assert await db.fetchval("SELECT count(*) FROM orders WHERE date = $1", day) == 2


async def test_a_taken_external_id_is_a_conflict(server: Server, db: asyncpg.Pool) -> None:
    day = fresh_day()
    first = order(day)
    async with server.admin() as client:
        assert (await client.post("/api/v1/orders", json=first)).status_code == 201
        again = await client.post("/api/v1/orders", json={"orders": [order(day), first]})
        twice = await client.post(
            "/api/v1/orders",
            json={"orders": [order(day, external_id="x-1"), order(day, external_id="x-1")]},
        )
    assert again.status_code == 409
    assert first["external_id"] in again.json()["message"]
    assert twice.status_code == 400
    assert "orders[1].external_id" in twice.json()["message"]
    assert await db.fetchval("SELECT count(*) FROM orders WHERE date = $1", day) == 1


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"colour": "red"}, "colour: unknown field"),
        ({"lat": 91}, "lat: must be between -90 and 90"),
        ({"lon": None}, "lat and lon go together"),
        ({"windows": [["2030-01-01T12:00:00Z", "2030-01-01T09:00:00Z"]]}, "end must be after"),
        ({"windows": [["2030-01-01T12:00:00", "2030-01-01T13:00:00"]]}, "has no time zone"),
        (
            {
                "windows": [
                    ["2030-01-01T09:00Z", "2030-01-01T12:00Z"],
                    ["2030-01-01T11:00Z", "2030-01-01T13:00Z"],
                ]
            },
            "windows[1]: overlaps",
        ),
        ({"windows": "9-12"}, "windows: must be a list"),
        ({"service_s": -1}, "service_s: must be between 0"),
        ({"size": {"kg": -2}}, "size.kg: must be a number between 0"),
        ({"size": {"big box": 1}}, "size.big box: unit names"),
        ({"skills": "fridge"}, "skills: must be a list"),
        ({"priority": 2.5}, "priority: must be an integer"),
        ({"priority": True}, "priority: must be an integer"),
        ({"email": "not-an-address"}, "email: must be an e-mail address"),
        ({"date": "05/12/2030"}, "date: must be a date YYYY-MM-DD"),
        ({"recipient": "x" * 501}, "recipient: at most 500 characters"),
        ({"notes": "a\x00b"}, "notes: must not contain NUL"),
        ({"kind": "parcel"}, "kind: must be one of delivery, pickup"),
        ({"lat": None, "lon": None, "address": ""}, "address: an order needs lat and lon"),
    ],
)
async def test_bad_order_is_refused_naming_the_field(
    server: Server, change: Json, named: str
) -> None:
    body = order(fresh_day())
    body.update(change)
    async with server.admin() as client:
        r = await client.post("/api/v1/orders", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "invalid_request"
    assert named in r.json()["message"]


@pytest.mark.parametrize(
    ("content", "ctype", "status"),
    [
        (b"[1, 2]", "application/json", 400),
        (b"{nope", "application/json", 400),
        (b'{"orders": []}', "application/json", 400),
        (b'{"orders": [1]}', "application/json", 400),
        (b'{"orders": [], "x": 1}', "application/json", 400),
        (b"lat,lon\n1,2\n", "text/csv", 415),
    ],
)
async def test_bad_bodies_are_4xx_json(
    server: Server, content: bytes, ctype: str, status: int
) -> None:
    async with server.admin() as client:
        r = await client.post("/api/v1/orders", content=content, headers={"Content-Type": ctype})
    assert r.status_code == status
    assert r.json()["error"] and r.json()["message"]


async def test_list_filters_and_pages_with_a_cursor(server: Server) -> None:
    day = fresh_day()
    bodies = [order(day, recipient=f"Client {i}", priority=i) for i in range(7)]
    bodies[3]["kind"] = "pickup"
    bodies[5]["notes"] = "Leave at the Kiosk"
    async with server.admin() as client:
        r = await client.post("/api/v1/orders", json={"orders": bodies})
        ids = [o["id"] for o in r.json()["orders"]]
        await client.post(f"/api/v1/orders/{ids[6]}/cancel")
        seen: list[int] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"date": day.isoformat(), "limit": 3}
            if cursor:
                params["cursor"] = cursor
            page = (await client.get("/api/v1/orders", params=params)).json()
            assert page["total"] == 7
            seen += [o["id"] for o in page["orders"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == ids

        async def found(**params: Any) -> list[int]:
            r = await client.get("/api/v1/orders", params={"date": day.isoformat(), **params})
            assert r.status_code == 200, r.text
            return [o["id"] for o in r.json()["orders"]]

        assert await found(kind="pickup") == [ids[3]]
        assert await found(status="cancelled") == [ids[6]]
        assert await found(status="unplanned") == ids[:6]
        assert await found(q="kiosk") == [ids[5]]
        assert await found(q="CLIENT 2") == [ids[2]]
        assert await found(q="100%") == []  # literal text, no wildcards
        assert await found(geocode_status="given") == ids
        assert await found(geocode_status="pending") == []


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"status": "lost"}, "status: must be one of"),
        ({"kind": "x"}, "kind: must be one of"),
        ({"geocode_status": "x"}, "geocode_status: must be one of"),
        ({"date": "tomorrow"}, "date: must be YYYY-MM-DD"),
        ({"limit": "0"}, "limit: must be between 1 and 1000"),
        ({"limit": "ten"}, "limit: must be an integer"),
        ({"cursor": "-4"}, "cursor: must be between"),
        ({"sort": "id"}, "unknown query parameter: sort"),
    ],
)
async def test_bad_list_parameters_are_named(server: Server, params: Json, named: str) -> None:
    async with server.admin() as client:
        r = await client.get("/api/v1/orders", params=params)
    assert r.status_code == 400
    assert named in r.json()["message"]


async def test_patch_changes_fields_and_refuses_finished_orders(
    server: Server, db: asyncpg.Pool
) -> None:
    day = fresh_day()
    async with server.admin() as client:
        created = (await client.post("/api/v1/orders", json=order(day))).json()
        url = f"/api/v1/orders/{created['id']}"
        r = await client.patch(url, json={"priority": 90, "lat": 42.51, "lon": 1.53, "skills": []})
        assert r.status_code == 200, r.text
        assert (r.json()["priority"], r.json()["lat"], r.json()["skills"]) == (90, 42.51, [])
        assert r.json()["updated_at"] > created["updated_at"]
        bad = await client.patch(url, json={"priority": "high", "status": "delivered"})
        assert bad.status_code == 400
        assert "priority: must be an integer" in bad.json()["message"]
        assert "status: unknown field" in bad.json()["message"]
        # A new address without coordinates means: geocode again (no geocoder here: flagged).
        moved = await client.patch(url, json={"address": "Carrer Major 3, Encamp"})
        assert (moved.json()["lat"], moved.json()["geocode_status"]) == (None, "unresolved")
        await db.execute("UPDATE orders SET status = 'delivered' WHERE id = $1", created["id"])
        late = await client.patch(url, json={"priority": 1})
        cancel = await client.post(f"{url}/cancel")
        missing = await client.patch("/api/v1/orders/999999999", json={"priority": 1})
    assert late.status_code == 409 and "delivered" in late.json()["message"]
    assert cancel.status_code == 409
    assert missing.status_code == 404


async def test_cancel_is_repeatable(server: Server) -> None:
    async with server.admin() as client:
        created = (await client.post("/api/v1/orders", json=order(fresh_day()))).json()
        first = await client.post(f"/api/v1/orders/{created['id']}/cancel")
        second = await client.post(f"/api/v1/orders/{created['id']}/cancel")
        missing = await client.post("/api/v1/orders/999999999/cancel")
        patch = await client.patch(f"/api/v1/orders/{created['id']}", json={"notes": "x"})
    assert first.status_code == second.status_code == 200
    assert first.json()["status"] == second.json()["status"] == "cancelled"
    assert missing.status_code == 404
    assert patch.status_code == 409


async def test_dispatcher_key_works_and_nobody_else(server: Server) -> None:
    from tracker.store import devices as device_store

    key = await device_store.add_key(server.runtime.pool, "orders test", "dispatcher")
    body = order(fresh_day())
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        ok = await client.post(
            "/api/v1/orders", json=body, headers={"Authorization": f"Bearer {key}"}
        )
        nobody = await client.get("/api/v1/orders")
    assert ok.status_code == 201
    assert nobody.status_code == 401


async def test_dispatched_orders_follow_their_stops(server: Server, db: asyncpg.Pool) -> None:
    """The planner links orders to stops; the stop's outcome then finishes the order."""
    from datetime import UTC, datetime

    from tests.conftest import add_device
    from tracker.store import orders as order_store

    van = await add_device(server, "Order van")
    day = fresh_day()
    async with server.admin() as client:
        made = await client.post("/api/v1/orders", json={"orders": [order(day) for _ in range(3)]})
        ids = [o["id"] for o in made.json()["orders"]]
        stops = [{"lat": 42.5063 + i / 1000, "lon": 1.5218, "name": f"S{i}"} for i in range(3)]
        r = await client.post(
            "/api/v1/routes",
            json={
                "device": van.unique_id,
                "planned_start": datetime.now(UTC).isoformat(),
                "stops": stops,
                "path": None,
            },
        )
        assert r.status_code == 201, r.text
        route = r.json()
        links = [(i, route["id"], s["id"]) for i, s in zip(ids, route["stops"], strict=True)]
        await order_store.link_orders(db, links, "dispatched")
        await client.post(f"/api/v1/orders/{ids[2]}/cancel")
        base = f"/api/v1/routes/{route['id']}/stops"
        first, second, third = (s["id"] for s in route["stops"])
        for stop in (first, second, third):
            assert (
                await client.patch(f"{base}/{stop}", json={"status": "arrived"})
            ).status_code == 200
        assert (
            await client.patch(f"{base}/{first}", json={"status": "completed"})
        ).status_code == 200
        failed = await client.patch(
            f"{base}/{second}", json={"status": "failed", "reason": "nobody home"}
        )
        assert failed.status_code == 200, failed.text
        assert (
            await client.patch(f"{base}/{third}", json={"status": "completed"})
        ).status_code == 200
        got = [(await client.get(f"/api/v1/orders/{i}")).json() for i in ids]
    assert [o["status"] for o in got] == ["delivered", "failed", "cancelled"]
    assert got[0]["route_id"] == route["id"] and got[0]["stop_id"] == first
