"""Editing a proposal before dispatch, against real PostGIS + pgRouting (Monaco's roads) and
the real VROOM (plan mode): reorder a route, move an order to another van, force an order
where it breaks constraints and see them reported, unassign it, then dispatch exactly the
edited proposal; refusals name the field."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from tests.conftest import Server
from tests.integration import test_plans_api as plans
from tests.integration.test_plans_api import PLACES, World, add_orders, future_day, window

# The planning tests' world: Monaco's roads, a depot and two registered vans.
monaco_db = plans.monaco_db
world = plans.world

Json = dict[str, Any]


def route_of(plan: Json, vehicle_id: int) -> Json | None:
    return next((r for r in plan["routes"] if r["vehicle_id"] == vehicle_id), None)


def order_ids(route: Json | None) -> list[int]:
    return [] if route is None else [s["order_id"] for s in route["stops"]]


def causes(items: list[Json]) -> set[str]:
    return {v["cause"] for v in items}


async def test_edit_a_proposal_then_dispatch_it(world: World) -> None:
    day = future_day()
    van0, van1 = (v["id"] for v in world.vans)
    async with world.server.admin() as client:
        bodies: list[Json] = [
            {"lat": lat, "lon": lon, "service_s": 1800} for lat, lon in PLACES[:6]
        ]
        bodies[0]["windows"] = [window(day, 7, 8)]  # 08:00-09:00 in Monaco, shift from 08:00
        bodies[0]["service_s"] = 120
        bodies[1]["skills"] = ["fridge"]  # only van 0 has a fridge
        bodies.append({"lat": PLACES[6][0], "lon": PLACES[6][1], "size": {"parcels": 25}})
        orders = await add_orders(client, day, bodies)
        ids = [o["id"] for o in orders]
        early, fridge, big = ids[0], ids[1], ids[6]
        (elsewhere,) = await add_orders(client, future_day(), [{"lat": 43.74, "lon": 7.42}])
        r = await client.post(
            "/api/v1/plans", json={"date": day.isoformat(), "vehicles": [van0, van1]}
        )
        assert r.status_code == 201, r.text
        plan = r.json()
        pid = plan["id"]
        assert [v["vehicle_id"] for v in plan["vehicles"]] == [van0, van1]
        assert plan["summary"]["violations"] == 0
        assert [u["order_id"] for u in plan["unassigned"]] == [big]
        assert all(s["violations"] == [] for r_ in plan["routes"] for s in r_["stops"])

        async def move(body: Json) -> Json:
            r = await client.post(f"/api/v1/plans/{pid}/move", json=body)
            assert r.status_code == 200, (body, r.text)
            edited: Json = r.json()
            again = await client.get(f"/api/v1/plans/{pid}")
            assert again.json() == edited  # stored as answered
            return edited

        # Bring every planned order onto van 0 in a known order, then reorder it.
        for oid in ids[:6]:
            plan = await move({"order_id": oid, "vehicle": van0, "position": 0})
        route = route_of(plan, van0)
        assert route is not None and route_of(plan, van1) is None
        assert order_ids(route) == list(reversed(ids[:6]))
        assert plan["summary"]["vehicles_used"] == 1 and plan["summary"]["assigned"] == 6
        # The early order is served last: late for its window, and said so.
        late = route["stops"][-1]
        assert late["order_id"] == early and late["lateness_s"] > 0
        assert causes(late["violations"]) == {"time_window"}
        assert late["violations"][0]["late_s"] == late["lateness_s"]
        assert "time_window" in causes(route["violations"])
        arrivals = [datetime.fromisoformat(s["arrival"]) for s in route["stops"]]
        assert arrivals == sorted(arrivals)

        # Reorder: the early order first. Arrivals, distance and the road path follow.
        before = route
        plan = await move({"order_id": early, "vehicle": van0, "position": 0})
        route = route_of(plan, van0)
        assert route is not None
        assert order_ids(route) == [early, *reversed(ids[1:6])]
        first = route["stops"][0]
        assert first["lateness_s"] == 0 and first["violations"] == []
        # (Served within its window instead of after it closed.)
        opens, closes = (datetime.fromisoformat(t) for t in late["windows"][0])
        assert opens <= datetime.fromisoformat(first["arrival"]) <= closes
        assert datetime.fromisoformat(first["arrival"]) < datetime.fromisoformat(late["arrival"])
        assert route["distance_m"] != before["distance_m"]
        assert route["path"]["polyline"] != before["path"]["polyline"]
        assert route["lateness_s"] == 0 and plan["summary"]["lateness_s"] == 0
        assert [s["seq"] for s in route["stops"]] == [1, 2, 3, 4, 5, 6]

        # Move to the other van at its cheapest place: a new route for van 1.
        plan = await move({"order_id": ids[5], "vehicle": van1})
        assert order_ids(route_of(plan, van1)) == [ids[5]]
        assert ids[5] not in order_ids(route_of(plan, van0))
        assert plan["summary"]["vehicles_used"] == 2
        # ...and a second one: the server picks its position.
        plan = await move({"order_id": ids[4], "vehicle": van1})
        assert sorted(order_ids(route_of(plan, van1))) == sorted([ids[4], ids[5]])

        # Forced where it breaks constraints: reported, not refused.
        plan = await move({"order_id": fridge, "vehicle": van1, "position": 0})
        van1_route = route_of(plan, van1)
        assert van1_route is not None
        stop = van1_route["stops"][0]
        assert stop["order_id"] == fridge
        (skill,) = stop["violations"]
        assert skill["cause"] == "skills" and skill["missing"] == ["fridge"]
        assert "skills" in causes(van1_route["violations"])
        plan = await move({"order_id": big, "vehicle": van1})
        van1_route = route_of(plan, van1)
        assert van1_route is not None and big in order_ids(van1_route)
        over = next(v for v in van1_route["violations"] if v["cause"] == "capacity")
        assert over["load"] == {"parcels": 28.0} and over["capacity"] == {"parcels": 20.0}
        assert plan["unassigned"] == []
        assert plan["summary"]["violations"] == 2  # the skill (a stop), the load (the route)

        # Unassign the big order: back in the list, the capacity violation gone.
        plan = await move({"order_id": big, "vehicle": None})
        assert [(u["order_id"], u["reason"]) for u in plan["unassigned"]] == [
            (big, "unassigned by the dispatcher")
        ]
        van1_route = route_of(plan, van1)
        assert van1_route is not None and "capacity" not in causes(van1_route["violations"])
        assert plan["summary"]["assigned"] == 6 and plan["summary"]["unassigned"] == 1

        # Refused: each names the field.
        cases: list[tuple[Json, int, str]] = [
            ({"order_id": early, "vehicle": van0, "colour": 1}, 400, "colour: unknown field"),
            ({"order_id": early}, 400, "vehicle: required"),
            ({"vehicle": van0}, 400, "order_id:"),
            ({"order_id": 987654321, "vehicle": van0}, 400, "order_id: no order 987654321"),
            ({"order_id": elsewhere["id"], "vehicle": van0}, 400, "order_id: order"),
            ({"order_id": early, "vehicle": 987654321}, 400, "vehicle: no vehicle 987654321"),
            ({"order_id": early, "vehicle": "Nobody"}, 400, "vehicle: no vehicle 'Nobody'"),
            ({"order_id": early, "vehicle": van0, "position": 99}, 400, "position: must be"),
            ({"order_id": early, "vehicle": van0, "position": -1}, 400, "position:"),
            ({"order_id": early, "vehicle": None, "position": 0}, 400, "position:"),
            ({"order_id": early, "vehicle": True}, 400, "vehicle:"),
        ]
        for body, status, named in cases:
            r = await client.post(f"/api/v1/plans/{pid}/move", json=body)
            assert r.status_code == status, (body, r.text)
            assert named in r.json()["message"], (body, r.json())
        r = await client.post("/api/v1/plans/987654321/move", json={"order_id": 1, "vehicle": 1})
        assert r.status_code == 404
        unchanged = await client.get(f"/api/v1/plans/{pid}")
        assert unchanged.json() == plan

        # Dispatch sends the edited proposal: same stops, same order, same arrivals.
        r = await client.post(f"/api/v1/plans/{pid}/dispatch")
        assert r.status_code == 201, r.text
        out = r.json()
        assert len(out["routes"]) == 2
        for live, planned in zip(out["routes"], plan["routes"], strict=True):
            assert live["device"] == planned["device"]
            assert [s["planned_arrival"] for s in live["stops"]] == [
                datetime.fromisoformat(s["arrival"]).isoformat() for s in planned["stops"]
            ]
        linked = await world.db.fetch(
            "SELECT o.id, s.seq, s.route_id FROM orders o JOIN stops s ON s.id = o.stop_id "
            "WHERE o.id = ANY($1)",
            ids,
        )
        where = {row["id"]: (row["route_id"], row["seq"]) for row in linked}
        for live, planned in zip(out["routes"], plan["routes"], strict=True):
            for k, s in enumerate(planned["stops"]):
                assert where[s["order_id"]] == (live["id"], k + 1)
        assert big not in where
        r = await client.post(
            f"/api/v1/plans/{pid}/move", json={"order_id": early, "vehicle": van1}
        )
        assert r.status_code == 409 and "dispatched already" in r.json()["message"]


async def test_edit_on_straight_lines_keeps_to_straight_lines(server: Server) -> None:
    """Without a road network an edit is evaluated on straight lines, as the plan was."""
    day = future_day()
    async with server.admin() as client:
        r, _ = await plans.one_van_plan(
            server,
            client,
            day,
            "Straight edit van",
            ("Vaduz", 47.14, 9.52),
            [(47.145, 9.52), (47.15, 9.53), (47.16, 9.51)],
        )
        assert r.status_code == 201, r.text
        plan = r.json()
        (route,) = plan["routes"]
        last = route["stops"][-1]["order_id"]
        # An inline vehicle is named by its name.
        r = await client.post(
            f"/api/v1/plans/{plan['id']}/move",
            json={"order_id": last, "vehicle": "Straight edit van", "position": 0},
        )
        assert r.status_code == 200, r.text
        edited = r.json()
        assert edited["travel"] == "straight_line"
        (route,) = edited["routes"]
        assert route["stops"][0]["order_id"] == last and route["vehicle_id"] is None
        for leg in route["stops"][1:]:
            assert leg["travel_s"] == pytest.approx(leg["distance_m"] / (30 / 3.6), abs=2)
        r = await client.post(f"/api/v1/plans/{plan['id']}/dispatch")
        assert r.status_code == 201, r.text
        (live,) = r.json()["routes"]
        assert [s["planned_arrival"] for s in live["stops"]] == [
            datetime.fromisoformat(s["arrival"]).isoformat() for s in route["stops"]
        ]
