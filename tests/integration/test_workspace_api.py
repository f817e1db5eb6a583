"""The dispatcher's workspace API against a real server and PostGIS: routes listed by
day, status and van with paging; cancelled; handed to another van; a van's old route
ended by its new one; one-stop routes from the van's position; the route line split where
the van is; the event history; API keys created, listed and revoked; device tokens
rotated with setup links; the CLI's device and key commands."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from websockets.asyncio.client import connect

from tests.conftest import ADMIN_TOKEN, DeviceCreds, Server, ServerFactory, add_device
from tests.integration.test_routes_api import (
    LAT,
    create_route,
    iso,
    lon_at,
    route_body,
)

Json = dict[str, Any]
SRC = Path(__file__).resolve().parents[2] / "src"


async def post_ping(
    srv: Server, dev: DeviceCreds, when: datetime, lat: float, lon: float, speed: float = 10.0
) -> None:
    async with srv.client() as client:
        r = await client.post(
            "/api/v1/positions",
            json={"time": iso(when), "lat": lat, "lon": lon, "accuracy": 5, "speed": speed},
            headers=dev.headers,
        )
    assert r.status_code == 202, r.text


async def test_a_new_route_ends_the_vans_old_one(server: Server, device: DeviceCreds) -> None:
    start = datetime(2024, 6, 3, 8, tzinfo=UTC)
    old = await create_route(server, route_body(device, start))
    new = await create_route(server, route_body(device, start + timedelta(hours=3)))
    async with server.admin() as client:
        old_now = (await client.get(f"/api/v1/routes/{old['id']}")).json()
        listed = (await client.get("/api/v1/routes", params={"device": device.unique_id})).json()
        events = (
            await client.get(
                "/api/v1/events", params={"device": device.unique_id, "type": "route.cancelled"}
            )
        ).json()["events"]
    assert old_now["status"] == "cancelled"
    assert [(r["id"], r["status"], r["ended_reason"]) for r in listed["routes"]] == [
        (new["id"], "active", None),
        (old["id"], "cancelled", "replaced"),
    ]
    assert listed["total"] == 2
    assert [(e["route_id"], e["data"]) for e in events] == [
        (old["id"], {"reason": "replaced", "replaced_by": new["id"]})
    ]


async def test_list_by_day_status_device_and_pages(server: Server) -> None:
    vans = [await add_device(server) for _ in range(3)]
    day = datetime(2031, 3, 14, 7, tzinfo=UTC)
    made = [
        await create_route(server, route_body(v, day + timedelta(hours=k)))
        for k, v in enumerate(vans)
    ]
    await create_route(server, route_body(await add_device(server), day + timedelta(days=1)))
    async with server.admin() as client:
        r = await client.get("/api/v1/routes", params={"day": "2031-03-14", "limit": 2})
        page1 = r.json()
        page2 = (
            await client.get(
                "/api/v1/routes", params={"day": "2031-03-14", "limit": 2, "offset": 2}
            )
        ).json()
        past = (
            await client.get("/api/v1/routes", params={"day": "2031-03-14", "offset": 10})
        ).json()
        one = (
            await client.get(
                "/api/v1/routes", params={"day": "2031-03-14", "device": vans[1].unique_id}
            )
        ).json()
        none_cancelled = (
            await client.get("/api/v1/routes", params={"day": "2031-03-14", "status": "cancelled"})
        ).json()
        bad_day = await client.get("/api/v1/routes", params={"day": "14.3.2031"})
        bad_status = await client.get("/api/v1/routes", params={"status": "lost"})
        typo = await client.get("/api/v1/routes", params={"dya": "2031-03-14"})
    assert r.status_code == 200
    assert page1["total"] == 3 and page2["total"] == 3 and past["total"] == 3
    ids = [x["id"] for x in page1["routes"] + page2["routes"]]
    assert ids == [m["id"] for m in reversed(made)]  # newest planned start first
    assert past["routes"] == []
    assert [x["id"] for x in one["routes"]] == [made[1]["id"]]
    assert len(one["routes"][0]["stops"]) == 3
    assert none_cancelled == {"routes": [], "total": 0, "limit": 50, "offset": 0}
    assert bad_day.status_code == 400 and "day" in bad_day.json()["message"]
    assert bad_status.status_code == 400 and "status" in bad_status.json()["message"]
    assert typo.status_code == 400 and "'dya'" in typo.json()["message"]


async def test_cancel_a_route(server: Server, device: DeviceCreds, db: asyncpg.Pool) -> None:
    route = await create_route(server, route_body(device, datetime(2024, 6, 4, 8, tzinfo=UTC)))
    url = f"/api/v1/routes/{route['id']}/cancel"
    async with server.admin() as client:
        r = await client.post(url, json={"reason": "Customer closed"})
        again = await client.post(url)
        current = await client.get("/api/v1/routes/current", headers=device.headers)
        unknown = await client.post("/api/v1/routes/987654321/cancel")
        typo = await client.post(url, json={"reson": "x"})
        stop = route["stops"][0]["id"]
        patch = await client.patch(
            f"/api/v1/routes/{route['id']}/stops/{stop}", json={"status": "arrived"}
        )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "cancelled" and r.json()["ended_reason"] == "cancelled"
    assert again.status_code == 200 and again.json()["status"] == "cancelled"
    assert current.status_code == 404  # nothing active left for the van
    assert unknown.status_code == 404
    assert typo.status_code == 400 and "'reson'" in typo.json()["message"]
    assert patch.status_code == 409
    rows = await db.fetch(
        "SELECT type, data FROM events WHERE route_id = $1 ORDER BY id", route["id"]
    )
    assert [(x["type"], x["data"]) for x in rows] == [
        ("route.cancelled", {"reason": "cancelled", "note": "Customer closed"})
    ]


async def test_a_completed_route_cannot_be_cancelled(server: Server, device: DeviceCreds) -> None:
    body = route_body(device, datetime(2024, 6, 5, 8, tzinfo=UTC))
    body["stops"] = body["stops"][:1]
    route = await create_route(server, body)
    stop = route["stops"][0]["id"]
    async with server.admin() as client:
        done = await client.patch(
            f"/api/v1/routes/{route['id']}/stops/{stop}", json={"status": "completed"}
        )
        r = await client.post(f"/api/v1/routes/{route['id']}/cancel")
    assert done.json()["status"] == "completed"
    assert r.status_code == 409 and "completed" in r.json()["message"]


async def test_reassign_moves_the_route_and_ends_the_new_vans_own(
    server: Server, device: DeviceCreds
) -> None:
    other = await add_device(server)
    start = datetime.now(UTC) - timedelta(minutes=5)
    moved = await create_route(server, route_body(device, start))
    theirs = await create_route(server, route_body(other, start))
    first_stop = moved["stops"][0]["id"]
    async with server.admin() as client:
        await client.patch(
            f"/api/v1/routes/{moved['id']}/stops/{first_stop}", json={"status": "completed"}
        )
        r = await client.post(
            f"/api/v1/routes/{moved['id']}/reassign", json={"device": other.unique_id}
        )
        theirs_now = (await client.get(f"/api/v1/routes/{theirs['id']}")).json()
        mine = await client.get("/api/v1/routes/current", headers=device.headers)
        their_current = await client.get("/api/v1/routes/current", headers=other.headers)
        no_van = await client.post(
            f"/api/v1/routes/{moved['id']}/reassign", json={"device": "no-such-van"}
        )
        cancelled = await client.post(
            f"/api/v1/routes/{theirs['id']}/reassign", json={"device": device.unique_id}
        )
        events = (await client.get("/api/v1/events", params={"route_id": moved["id"]})).json()[
            "events"
        ]
        # The old van may no longer touch the route; the new van may.
        as_old = await client.get(f"/api/v1/routes/{moved['id']}", headers=device.headers)
        as_new = await client.get(f"/api/v1/routes/{moved['id']}", headers=other.headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["device"] == other.unique_id and body["status"] == "active"
    assert [s["status"] for s in body["stops"]] == ["completed", "pending", "pending"]
    assert theirs_now["status"] == "cancelled"
    assert mine.status_code == 404
    assert their_current.json()["id"] == moved["id"]
    assert no_van.status_code == 404
    assert cancelled.status_code == 409
    assert events[0]["type"] == "route.reassigned"
    assert events[0]["data"] == {"from": device.unique_id, "to": other.unique_id}
    assert as_old.status_code == 403 and as_new.status_code == 200
    # Pings of the new van after the hand-over advance it: waiting at the second stop
    # arrives there.
    t = datetime.now(UTC) + timedelta(seconds=1)
    second = body["stops"][1]
    for k in range(4):
        await post_ping(
            server, other, t + timedelta(seconds=10 * k), second["lat"], second["lon"], 0.0
        )
    for _ in range(50):
        async with server.admin() as client:
            now = (await client.get(f"/api/v1/routes/{moved['id']}")).json()
        if now["stops"][1]["status"] != "pending":
            break
        await asyncio.sleep(0.1)
    assert now["stops"][1]["status"] in ("arrived", "completed")


async def test_one_stop_route_without_a_path_starts_at_the_van(
    server: Server, device: DeviceCreds
) -> None:
    stop = {"lat": LAT, "lon": lon_at(900.0), "name": "Only stop", "radius_m": 30}
    body = {"device": device.unique_id, "planned_start": iso(datetime.now(UTC)), "stops": [stop]}
    async with server.admin() as client:
        never_reported = await client.post("/api/v1/routes", json=body)
    assert never_reported.status_code == 400
    assert "last position" in never_reported.json()["message"]
    await post_ping(server, device, datetime.now(UTC) - timedelta(seconds=30), LAT, lon_at(0.0))
    async with server.admin() as client:
        r = await client.post("/api/v1/routes", json=body)
        assert r.status_code == 201, r.text
        route = r.json()
        path = (await client.get(f"/api/v1/routes/{route['id']}/path")).json()
    assert route["straight_line"] is True
    # The ETA is travel from where the van is: 900 m at the planned speed, so after now.
    eta = datetime.fromisoformat(route["stops"][0]["eta"])
    assert eta > datetime.now(UTC)
    assert path["length_m"] == pytest.approx(900.0, rel=0.01)
    planned = next(f for f in path["features"] if f["properties"]["part"] == "planned")
    assert planned["geometry"]["coordinates"][0] == pytest.approx([lon_at(0.0), LAT], abs=1e-6)


async def test_route_path_splits_where_the_van_is(server: Server, device: DeviceCreds) -> None:
    t0 = datetime.now(UTC) - timedelta(minutes=3)
    route = await create_route(server, route_body(device, t0))
    async with server.admin() as client:
        before = (await client.get(f"/api/v1/routes/{route['id']}/path")).json()
    assert [f["properties"]["part"] for f in before["features"]] == ["planned", "ahead"]
    assert before["driven_m"] == 0 and before["straight_line"] is False
    for k in range(6):  # drive 300 m east along the street
        await post_ping(server, device, t0 + timedelta(seconds=10 * k), LAT, lon_at(60.0 * k))
    for _ in range(50):
        async with server.client() as client:
            r = await client.get(f"/api/v1/routes/{route['id']}/path", headers=device.headers)
        after = r.json()
        if after["driven_m"] > 250:
            break
        await asyncio.sleep(0.1)
    assert after["driven_m"] == pytest.approx(300.0, abs=30.0)
    parts = {f["properties"]["part"]: f["geometry"]["coordinates"] for f in after["features"]}
    assert set(parts) == {"planned", "driven", "ahead"}
    assert parts["driven"][-1] == pytest.approx(parts["ahead"][0], abs=1e-6)
    assert parts["driven"][-1][0] == pytest.approx(lon_at(300.0), abs=5e-4)


async def test_event_history_filters(server: Server, device: DeviceCreds) -> None:
    route = await create_route(server, route_body(device, datetime(2024, 6, 6, 8, tzinfo=UTC)))
    a, b, _ = (s["id"] for s in route["stops"])
    async with server.admin() as client:
        await client.patch(f"/api/v1/routes/{route['id']}/stops/{a}", json={"status": "skipped"})
        await client.patch(
            f"/api/v1/routes/{route['id']}/stops/{b}", json={"status": "failed", "reason": "shut"}
        )
        both = (await client.get("/api/v1/events", params={"device": device.unique_id})).json()
        failed = (
            await client.get(
                "/api/v1/events", params={"device": device.unique_id, "type": "stop.failed"}
            )
        ).json()
        paged = (
            await client.get(
                "/api/v1/events",
                params={"device": device.unique_id, "before": both["events"][0]["id"]},
            )
        ).json()
        bad = await client.get("/api/v1/events", params={"limit": "many"})
    types = [e["type"] for e in both["events"]]
    assert types[:2] == ["stop.failed", "stop.skipped"]  # newest first
    assert all(e["device"] == device.unique_id for e in both["events"])
    assert [e["stop_id"] for e in failed["events"]] == [b]
    assert paged["events"][0]["type"] == "stop.skipped"
    assert bad.status_code == 400 and "limit" in bad.json()["message"]


async def test_keys_created_listed_and_revoked(server: Server) -> None:
    async with server.admin() as client:
        r = await client.post("/api/v1/keys", json={"name": "Night shift"})
        assert r.status_code == 201, r.text
        made = r.json()
        key = made.pop("key")
        listed = (await client.get("/api/v1/keys")).json()["keys"]
        wrong_role = await client.post("/api/v1/keys", json={"name": "x", "role": "root"})
        extra = await client.post("/api/v1/keys", json={"name": "x", "scope": "all"})
    assert made["role"] == "dispatcher" and made["enabled"] and made["revoked_at"] is None
    assert made in listed and all("key" not in k for k in listed)
    assert wrong_role.status_code == 400 and "role" in wrong_role.json()["message"]
    assert extra.status_code == 400 and "'scope'" in extra.json()["message"]
    async with server.client(headers={"Authorization": f"Bearer {key}"}) as staff:
        assert (await staff.get("/api/v1/devices")).status_code == 200
        assert (await staff.get("/api/v1/keys")).status_code == 403  # admin only
        ws = await connect(f"{server.ws_url}/ws/dispatch?token={key}")
        await ws.recv()
        await ws.close()
    async with server.admin() as client:
        revoked = await client.post(f"/api/v1/keys/{made['id']}/revoke")
        again = await client.post(f"/api/v1/keys/{made['id']}/revoke")
        missing = await client.post("/api/v1/keys/987654321/revoke")
    assert revoked.status_code == 200 and revoked.json()["enabled"] is False
    assert again.json()["revoked_at"] == revoked.json()["revoked_at"]
    assert missing.status_code == 404
    async with server.client(headers={"Authorization": f"Bearer {key}"}) as staff:
        assert (await staff.get("/api/v1/devices")).status_code == 401
        cookie = await staff.get("/api/v1/session", headers={"Cookie": f"tracker_session={key}"})
        assert cookie.status_code == 401


async def test_rotate_token_and_setup_links(server: Server) -> None:
    van = await add_device(server)
    ping = {"time": iso(datetime.now(UTC)), "lat": LAT, "lon": lon_at(0)}
    async with server.admin() as client:
        created = await client.post(
            "/api/v1/devices", json={"name": "QR van", "unique_id": f"qr-{van.unique_id}"}
        )
        r = await client.post(f"/api/v1/devices/{van.unique_id}/token")
        missing = await client.post("/api/v1/devices/no-such-van/token")
    setup = created.json()["setup"]
    assert setup["traccar"]["url"].startswith("org.traccar.client://setup?")
    assert f"id=qr-{van.unique_id}" in setup["traccar"]["url"]
    assert "ingest%2Fosmand" in setup["traccar"]["url"]
    assert setup["overland"]["url"].startswith("overland://setup?url=")
    assert created.json()["token"] in setup["overland"]["url"]
    assert setup["driver"]["url"].endswith(f"/driver#token={created.json()['token']}")
    svg = (
        base64.b64decode(setup["traccar"]["qr"].split(",", 1)[1])
        if ";base64," in setup["traccar"]["qr"]
        else None
    )
    assert setup["traccar"]["qr"].startswith("data:image/svg+xml")
    assert svg is None or b"<svg" in svg
    assert r.status_code == 200 and missing.status_code == 404
    new_token = r.json()["token"]
    assert new_token != van.token and new_token in r.json()["setup"]["overland"]["url"]
    async with server.client() as client:
        old = await client.post("/api/v1/positions", json=ping, headers=van.headers)
        new = await client.post(
            "/api/v1/positions", json=ping, headers={"Authorization": f"Bearer {new_token}"}
        )
    assert old.status_code == 401 and new.status_code == 202


def cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url, "PYTHONPATH": str(SRC)}
    return subprocess.run(
        [sys.executable, "-m", "tracker.tools.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_cli_device_and_key_commands(server: Server, database_url: str) -> None:
    van = await add_device(server, "CLI van")
    listed = await asyncio.to_thread(cli, database_url, "device", "list")
    assert listed.returncode == 0 and van.unique_id in listed.stdout
    off = await asyncio.to_thread(cli, database_url, "device", "disable", van.unique_id)
    assert off.returncode == 0
    async with server.client() as client:
        ping = {"time": iso(datetime.now(UTC)), "lat": LAT, "lon": lon_at(0)}
        refused = await client.post("/api/v1/positions", json=ping, headers=van.headers)
    assert refused.status_code == 403
    await asyncio.to_thread(cli, database_url, "device", "enable", van.unique_id)
    rotated = await asyncio.to_thread(cli, database_url, "device", "rotate", van.unique_id)
    assert rotated.returncode == 0 and "org.traccar.client://setup" in rotated.stdout
    token = next(
        line.split(": ", 1)[1] for line in rotated.stdout.splitlines() if line.startswith("token:")
    )
    async with server.client() as client:
        ok = await client.post(
            "/api/v1/positions", json=ping, headers={"Authorization": f"Bearer {token}"}
        )
    assert ok.status_code == 202
    added = await asyncio.to_thread(cli, database_url, "key", "add", "cli-key")
    key = added.stdout.split(": ", 1)[1].splitlines()[0].strip()
    keys = await asyncio.to_thread(cli, database_url, "key", "list")
    key_id = next(line.split()[0] for line in keys.stdout.splitlines() if line.endswith(" cli-key"))
    revoked = await asyncio.to_thread(cli, database_url, "key", "revoke", key_id)
    assert revoked.returncode == 0 and "revoked" in revoked.stdout
    missing = await asyncio.to_thread(cli, database_url, "key", "revoke", "987654321")
    assert missing.returncode == 1
    async with server.client(headers={"Authorization": f"Bearer {key}"}) as staff:
        assert (await staff.get("/api/v1/devices")).status_code == 401
    assert ADMIN_TOKEN not in keys.stdout


async def test_dispatchers_see_customer_links_again_with_a_link_secret(
    server_factory: ServerFactory,
) -> None:
    srv = await server_factory(link_secret="test-link-secret")
    van = await add_device(srv)
    async with srv.admin() as client:
        r = await client.post(
            "/api/v1/routes", json=route_body(van, datetime(2024, 6, 7, 8, tzinfo=UTC))
        )
        assert r.status_code == 201, r.text
        made = r.json()
        links = [s["tracking_url"] for s in made["stops"]]
        read = (await client.get(f"/api/v1/routes/{made['id']}")).json()
        listed = (await client.get("/api/v1/routes", params={"device": van.unique_id})).json()
        stop = made["stops"][1]["id"]
        again = await client.post(f"/api/v1/routes/{made['id']}/stops/{stop}/tracking")
        after = (await client.get(f"/api/v1/routes/{made['id']}")).json()
    async with srv.client() as client:
        as_device = (await client.get(f"/api/v1/routes/{made['id']}", headers=van.headers)).json()
        page = await client.get(links[0].replace(srv.settings.public_url, srv.base_url))
    assert [s["tracking_url"] for s in read["stops"]] == links
    assert [s["tracking_url"] for s in listed["routes"][0]["stops"]] == links
    assert all(s["tracking_url"] is None for s in as_device["stops"])  # customers' links
    assert page.status_code == 200
    new_link = again.json()["tracking_url"]
    assert new_link != links[1]
    assert [s["tracking_url"] for s in after["stops"]] == [links[0], new_link, links[2]]
    # Another secret cannot make the same tokens: nothing wrong is listed.
    other = await server_factory(link_secret="another-secret")
    async with other.admin() as client:
        read = (await client.get(f"/api/v1/routes/{made['id']}")).json()
    assert all(s["tracking_url"] is None for s in read["stops"])


async def test_without_a_link_secret_links_show_only_when_made(
    server: Server, device: DeviceCreds
) -> None:
    made = await create_route(server, route_body(device, datetime(2024, 6, 8, 8, tzinfo=UTC)))
    async with server.admin() as client:
        read = (await client.get(f"/api/v1/routes/{made['id']}")).json()
    assert all(s["tracking_url"] is None for s in read["stops"])
