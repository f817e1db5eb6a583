"""Geocoding of orders given by address, against a local server answering as Nominatim does,
real servers and PostGIS: resolved, ambiguous and unresolved verdicts, the dispatcher picking
a candidate, the PostgreSQL cache (shared by instances), the pace, the User-Agent, and a
failing geocoder leaving orders pending until it answers again."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from datetime import date, timedelta
from typing import Any

import asyncpg

from tests.conftest import Server, ServerFactory
from tests.nominatim import FakeNominatim, nominatim, place
from tracker.store import orders as order_store

Json = dict[str, Any]
UNIQUE = "Plaça del Poble 1, Andorra la Vella"
TWO = "Carrer Major 3"
NOWHERE = "Carrer Inexistent 99, Andorra"
COARSE = "Somewhere in Encamp"

ANSWERS = {
    UNIQUE: [
        place(
            42.5063, 1.5218, "1, Plaça del Poble, Andorra la Vella, AD500, Andorra", importance=0.3
        ),
        # The building's outline, a few metres from its entrance node: the same place.
        place(
            42.50635, 1.52186, "Casa, Plaça del Poble, Andorra la Vella, Andorra", importance=0.1
        ),
    ],
    TWO: [
        place(42.5441, 1.5803, "3, Carrer Major, Encamp, Andorra"),
        place(42.4637, 1.4912, "3, Carrer Major, Sant Julià de Lòria, Andorra"),
    ],
    COARSE: [place(42.5347, 1.5830, "Encamp, Andorra", rank=16, kind="town", importance=0.5)],
}


def fresh_day() -> date:
    return date(2040, 1, 1) + timedelta(days=uuid.uuid4().int % 20000)


def by_address(address: str, day: date) -> Json:
    return {
        "address": address,
        "date": day.isoformat(),
        "external_id": f"geo-{uuid.uuid4().hex[:10]}",
    }


async def settled(server: Server, day: date, count: int, timeout: float = 20.0) -> list[Json]:
    """The day's orders once none is pending any more."""
    deadline = time.monotonic() + timeout
    async with server.admin() as client:
        while True:
            r = await client.get("/api/v1/orders", params={"date": day.isoformat()})
            orders: list[Json] = r.json()["orders"]
            if len(orders) == count and all(o["geocode_status"] != "pending" for o in orders):
                return orders
            assert time.monotonic() < deadline, [o["geocode_status"] for o in orders]
            await asyncio.sleep(0.1)


async def geocoded_server(factory: ServerFactory, fake: FakeNominatim, **extra: Any) -> Server:
    return await factory(
        geocoder_url=fake.url,
        geocoder_interval_s=0.4,
        geocoder_user_agent="tracker-tests/1.0 (ops@example.ad)",
        **extra,
    )


async def test_verdicts_cache_and_pace(server_factory: ServerFactory, db: asyncpg.Pool) -> None:
    day = fresh_day()
    async with nominatim(ANSWERS) as fake:
        srv = await geocoded_server(server_factory, fake, geocoder_countries="ad")
        bodies = [
            by_address(UNIQUE, day),
            by_address(TWO, day),
            by_address(NOWHERE, day),
            by_address(COARSE, day),
            # The same address typed differently: answered from the cache.
            by_address("  plaça del poble 1 ,  ANDORRA LA VELLA ", day),
        ]
        async with srv.admin() as client:
            r = await client.post("/api/v1/orders", json={"orders": bodies})
        assert r.status_code == 201, r.text
        assert {o["geocode_status"] for o in r.json()["orders"]} == {"pending"}
        orders = await settled(srv, day, 5)
        unique, two, nowhere, coarse, again = orders
        assert (unique["geocode_status"], unique["lat"], unique["lon"]) == (
            "resolved",
            42.5063,
            1.5218,
        )
        assert (again["geocode_status"], again["lat"]) == ("resolved", 42.5063)
        assert two["geocode_status"] == "ambiguous" and two["lat"] is None
        assert [c["label"] for c in two["geocode_candidates"]] == [
            "3, Carrer Major, Encamp, Andorra",
            "3, Carrer Major, Sant Julià de Lòria, Andorra",
        ]
        assert (nowhere["geocode_status"], nowhere["geocode_candidates"]) == ("unresolved", [])
        assert coarse["geocode_status"] == "ambiguous"
        assert coarse["geocode_candidates"][0]["precise"] is False
        # One request per distinct address, each identified and in the format asked for.
        assert sorted(fake.queries()) == sorted([UNIQUE, TWO, NOWHERE, COARSE])
        for hit in fake.hits:
            assert hit.user_agent == "tracker-tests/1.0 (ops@example.ad)"
            assert (hit.params["format"], hit.params["limit"], hit.params["countrycodes"]) == (
                "jsonv2",
                "5",
                "ad",
            )
        gaps = [b.at - a.at for a, b in zip(fake.hits, fake.hits[1:], strict=False)]
        assert min(gaps) >= 0.25, gaps  # the pace holds (0.4 s, minus generous scheduling slack)
        # The planner sees only the orders it can place on a map.
        planned = await order_store.orders_for_planning(db, day)
        assert [o.id for o in planned] == [unique["id"], again["id"]]

        # The dispatcher settles the ambiguous one by choosing a candidate.
        async with srv.admin() as client:
            url = f"/api/v1/orders/{two['id']}"
            wrong = await client.patch(url, json={"candidate": 2})
            both = await client.patch(url, json={"candidate": 1, "lat": 1, "lon": 1})
            none = await client.patch(f"/api/v1/orders/{nowhere['id']}", json={"candidate": 0})
            picked = await client.patch(url, json={"candidate": 1})
            typed = await client.patch(
                f"/api/v1/orders/{nowhere['id']}", json={"lat": 42.5, "lon": 1.5}
            )
        assert (
            wrong.status_code == 400
            and "candidate: must be between 0 and 1" in wrong.json()["message"]
        )
        assert (
            both.status_code == 400
            and "either a candidate or lat and lon" in both.json()["message"]
        )
        assert none.status_code == 400 and "no geocoding candidates" in none.json()["message"]
        assert picked.status_code == 200
        assert (picked.json()["geocode_status"], picked.json()["lat"], picked.json()["lon"]) == (
            "resolved",
            42.4637,
            1.4912,
        )
        assert (typed.json()["geocode_status"], typed.json()["lat"]) == ("given", 42.5)

        # Another instance on the same endpoint asks nothing it was asked before.
        other = await geocoded_server(server_factory, fake, geocoder_countries="ad")
        day2 = fresh_day()
        async with other.admin() as client:
            r = await client.post("/api/v1/orders", json=by_address(TWO, day2))
        assert r.status_code == 201
        (again_two,) = await settled(other, day2, 1)
        assert again_two["geocode_status"] == "ambiguous"
        assert len(fake.hits) == 4


async def test_a_failing_geocoder_leaves_orders_pending_then_settles_them(
    server_factory: ServerFactory,
) -> None:
    day = fresh_day()
    async with nominatim(ANSWERS) as fake:
        fake.fail_next = 2
        srv = await geocoded_server(server_factory, fake)
        async with srv.admin() as client:
            r = await client.post("/api/v1/orders", json=by_address(UNIQUE, day))
            assert r.status_code == 201
            await asyncio.sleep(0.5)
            mid = (await client.get(f"/api/v1/orders/{r.json()['id']}")).json()
        assert mid["geocode_status"] == "pending"  # a 503 is not "no such address"
        (done,) = await settled(srv, day, 1, timeout=30.0)
        assert done["geocode_status"] == "resolved"
        assert len(fake.hits) == 3  # two refusals, then the answer


async def test_changing_the_address_geocodes_again(server_factory: ServerFactory) -> None:
    day = fresh_day()
    async with nominatim(ANSWERS) as fake:
        srv = await geocoded_server(server_factory, fake)
        async with srv.admin() as client:
            r = await client.post(
                "/api/v1/orders", json={**by_address(NOWHERE, day), "lat": None, "lon": None}
            )
            assert r.status_code == 201, r.text
            (first,) = await settled(srv, day, 1)
            assert first["geocode_status"] == "unresolved"
            # The same address sent again is asked again: from the cache, still nothing.
            again = await client.patch(f"/api/v1/orders/{first['id']}", json={"address": NOWHERE})
            assert again.json()["geocode_status"] == "pending"
            (first,) = await settled(srv, day, 1)
            assert first["geocode_status"] == "unresolved"
            assert fake.queries() == [NOWHERE]
            moved = await client.patch(f"/api/v1/orders/{first['id']}", json={"address": UNIQUE})
            assert moved.json()["geocode_status"] == "pending"
        (second,) = await settled(srv, day, 1)
        assert (second["geocode_status"], second["lat"]) == ("resolved", 42.5063)


async def test_two_instances_take_turns(server_factory: ServerFactory) -> None:
    """Both instances are woken at once by their own new orders; one works the queue at a
    time, so each address is asked once and the pace holds across the two."""
    day = fresh_day()
    addresses = [UNIQUE, TWO, COARSE, NOWHERE]
    async with nominatim(ANSWERS) as fake:
        first = await geocoded_server(server_factory, fake)
        second = await geocoded_server(server_factory, fake)
        async with first.admin() as a, second.admin() as b:
            posted = await asyncio.gather(
                a.post("/api/v1/orders", json={"orders": [by_address(x, day) for x in addresses]}),
                b.post("/api/v1/orders", json={"orders": [by_address(x, day) for x in addresses]}),
            )
        assert [r.status_code for r in posted] == [201, 201]
        orders = await settled(first, day, 8)
        assert sorted(fake.queries()) == sorted(addresses)
        gaps = [b.at - a.at for a, b in itertools.pairwise(fake.hits)]
        assert min(gaps) >= 0.25, gaps
        by_status = sorted(o["geocode_status"] for o in orders)
        assert by_status == ["ambiguous"] * 4 + ["resolved"] * 2 + ["unresolved"] * 2
