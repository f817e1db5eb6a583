"""The dispatcher live map in a real headless Chromium against a real server and PostGIS.

Pings go through the real ingest API; the page gets them over /ws/dispatch. No tile server
is reachable in tests: tiles point at a host the browser context refuses, which also proves
the tile URL setting is what the page uses and that nothing else leaves the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import uvicorn
from playwright.async_api import Page, expect

from tests.conftest import ADMIN_TOKEN, ARTIFACTS, DeviceCreds, Server, add_device
from tests.e2e.conftest import TILES, BrowserTab
from tracker.api.app import create_app
from tracker.core.model import Fix

pytestmark = pytest.mark.e2e

TIMEOUT_MS = 10_000


async def post_fix(
    srv: Server, device: DeviceCreds, fix: Fix, time: datetime, **extra: Any
) -> None:
    body = {"time": time.isoformat(), "lat": fix.lat, "lon": fix.lon, **extra}
    async with srv.client() as client:
        r = await client.post("/api/v1/positions", json=body, headers=device.headers)
    assert r.status_code == 202, r.text
    assert r.json()["stored"] == 1, r.text


def metres(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    # Equirectangular is exact enough for the few hundred metres compared here.
    x = math.radians(lon2 - lon1) * math.cos(math.radians((lat1 + lat2) / 2))
    y = math.radians(lat2 - lat1)
    return 6_371_000.0 * math.hypot(x, y)


async def marker_position(page: Page, device: str) -> dict[str, float] | None:
    pos: dict[str, float] | None = await page.evaluate(
        "id => window.trackerMap.markerPosition(id)", device
    )
    return pos


async def wait_for_position(
    page: Page, device: str, fix: Fix, within_m: float = 0.5, timeout_s: float = 10.0
) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    pos = None
    while asyncio.get_running_loop().time() < deadline:
        pos = await marker_position(page, device)
        if pos and metres(pos["lat"], pos["lon"], fix.lat, fix.lon) <= within_m:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"marker of {device} at {pos}, expected near {fix.lat}, {fix.lon}")


async def open_signed_in(tab: BrowserTab, srv: Server) -> Page:
    """Sign in through the API with the page's own cookie jar, then open the map."""
    r = await tab.context.request.post(
        f"{srv.base_url}/api/v1/session", data={"token": ADMIN_TOKEN}
    )
    assert r.ok, await r.text()
    await tab.page.goto(f"{srv.base_url}/map")
    await expect(tab.page.locator("#conn")).to_have_attribute(
        "data-state", "live", timeout=TIMEOUT_MS
    )
    return tab.page


def only_tiles_left_the_machine(tab: BrowserTab) -> None:
    tiles = TILES.split("{")[0]
    assert [u for u in tab.external if not u.startswith(tiles)] == []
    assert tab.errors == []


async def test_sign_in_then_marker_appears_and_glides(
    tab: BrowserTab, srv: Server, drive: list[Fix]
) -> None:
    page = tab.page
    # A name with markup must show as text, never as HTML.
    device = await add_device(srv, name="Van <b>7</b>")
    response = await page.goto(f"{srv.base_url}/map")
    assert response is not None and response.ok

    # No session yet: the refused socket leads to the sign-in form.
    await expect(page.locator("#signin")).to_be_visible(timeout=TIMEOUT_MS)
    await expect(page.locator("#conn")).to_have_attribute("data-state", "signed-out")
    await page.fill("#signin-token", "not-a-real-key")
    await page.click("#signin-submit")
    await expect(page.locator("#signin-error")).to_contain_text("not accepted")

    await page.fill("#signin-token", ADMIN_TOKEN)
    await page.click("#signin-submit")
    await expect(page.locator("#signin")).to_be_hidden(timeout=TIMEOUT_MS)
    await expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=TIMEOUT_MS)
    cookies = {c["name"]: c for c in await tab.context.cookies()}
    assert cookies["tracker_session"]["httpOnly"] is True
    # The cookie holds a server-side session's random id, never the token itself.
    assert cookies["tracker_session"]["value"] != ADMIN_TOKEN
    assert len(cookies["tracker_session"]["value"]) >= 43

    # Other tests of the session may have left vehicles in the database.
    known = await page.evaluate("() => window.trackerMap.vehicles.size")
    now = datetime.now(UTC)
    first, second = drive[300], drive[310]  # ten real seconds of driving apart
    assert metres(first.lat, first.lon, second.lat, second.lon) > 30
    await post_fix(srv, device, first, now - timedelta(seconds=10), speed=12.0, course=90.0)
    marker = page.locator(f'.vehicle-marker[data-id="{device.unique_id}"]')
    await expect(marker).to_be_visible(timeout=TIMEOUT_MS)
    await expect(marker.locator(".vm-label")).to_have_text("Van <b>7</b>")
    assert await marker.locator("b").count() == 0
    await wait_for_position(page, device.unique_id, first)
    item = page.locator(f'.vehicle-item[data-id="{device.unique_id}"]')
    await expect(item.locator(".v-name")).to_have_text("Van <b>7</b>")
    await expect(item.locator(".v-meta")).to_contain_text("43 km/h")
    await expect(page.locator("#vehicle-count")).to_have_text(
        "1 vehicle" if known == 0 else f"{known + 1} vehicles"
    )

    # Sample the drawn position every 30 ms while the next fix arrives: it must pass
    # through points between the two fixes rather than jump.
    await page.evaluate(
        """id => { window.__track = [];
                   window.__sampler = setInterval(
                     () => window.__track.push(window.trackerMap.markerPosition(id)), 30); }""",
        device.unique_id,
    )
    await post_fix(srv, device, second, now, speed=8.0, course=200.0)
    await wait_for_position(page, device.unique_id, second)
    track: list[dict[str, float]] = await page.evaluate(
        "() => { clearInterval(window.__sampler); return window.__track; }"
    )
    gap = metres(first.lat, first.lon, second.lat, second.lon)
    between = [
        p
        for p in track
        if metres(p["lat"], p["lon"], first.lat, first.lon) > 0.1 * gap
        and metres(p["lat"], p["lon"], second.lat, second.lon) > 0.1 * gap
    ]
    assert len(between) >= 3, track
    await expect(item.locator(".v-meta")).to_contain_text("29 km/h")
    arrow = marker.locator(".vm-arrow")
    assert "rotate(200deg)" in (await arrow.get_attribute("style") or "")

    # Clicking the vehicle in the side list zooms to it and opens its popup.
    await page.evaluate("() => window.trackerMap.map.setView([0, 0], 3)")
    await item.click()
    popup = page.locator(".leaflet-popup .vehicle-popup")
    await expect(popup).to_contain_text("Van <b>7</b>")
    await expect(popup).to_contain_text("29 km/h")
    await expect(popup).to_contain_text(device.unique_id)
    zoom = await page.evaluate("() => window.trackerMap.map.getZoom()")
    center = await page.evaluate("() => window.trackerMap.map.getCenter()")
    assert zoom >= 16
    assert metres(center["lat"], center["lng"], second.lat, second.lon) < 5

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "map_live.png"))
    only_tiles_left_the_machine(tab)


async def test_stale_markers_turn_grey_and_recover(
    tab: BrowserTab, srv: Server, drive: list[Fix]
) -> None:
    page = await open_signed_in(tab, srv)
    device = await add_device(srv, name="Old van")
    now = datetime.now(UTC)
    # Older than TRACKER_STALE_AFTER_S (120 s by default).
    await post_fix(srv, device, drive[0], now - timedelta(minutes=10))
    marker = page.locator(f'.vehicle-marker[data-id="{device.unique_id}"]')
    item = page.locator(f'.vehicle-item[data-id="{device.unique_id}"]')
    await expect(marker).to_have_class(re.compile(r"\bstale\b"), timeout=TIMEOUT_MS)
    await expect(marker).to_have_class(re.compile(r"\bno-heading\b"))
    await expect(item).to_have_class("vehicle-item stale")
    await expect(item.locator(".v-meta")).to_contain_text("10 min ago")

    await post_fix(srv, device, drive[1], now, course=45.0)
    await expect(item).to_have_class("vehicle-item", timeout=TIMEOUT_MS)
    assert "stale" not in (await marker.get_attribute("class") or "")
    assert "no-heading" not in (await marker.get_attribute("class") or "")
    only_tiles_left_the_machine(tab)


async def test_route_summary_shows_next_stop_and_eta(
    tab: BrowserTab, srv: Server, drive: list[Fix]
) -> None:
    page = await open_signed_in(tab, srv)
    device = await add_device(srv, name="Route van")
    await post_fix(srv, device, drive[900], datetime.now(UTC))
    item = page.locator(f'.vehicle-item[data-id="{device.unique_id}"]')
    await expect(item).to_be_visible(timeout=TIMEOUT_MS)
    await expect(item.locator(".v-next")).to_be_hidden()

    eta = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=17)
    # The shape the routes/ETA feature publishes; the hub merges it into the vehicle.
    await srv.runtime.bus.publish(
        "routes",
        {
            "type": "route",
            "device": device.unique_id,
            "next_stop": 12,
            "off_route": True,
            "stops": [
                {"id": 11, "seq": 1, "name": "Depot", "status": "completed", "eta": None},
                {
                    "id": 12,
                    "seq": 2,
                    "name": "Bäckerei Müller",
                    "status": "pending",
                    "eta": eta.isoformat(),
                },
            ],
        },
    )
    next_stop = item.locator(".v-next")
    await expect(next_stop).to_have_text(
        f"Next: Bäckerei Müller · ETA {eta:%H:%M} · off route", timeout=TIMEOUT_MS
    )
    await item.click()
    popup = page.locator(".leaflet-popup .vehicle-popup")
    await expect(popup).to_contain_text("Bäckerei Müller")
    await expect(popup).to_contain_text(f"{eta:%H:%M}")
    await expect(popup).to_contain_text("off route")
    only_tiles_left_the_machine(tab)


async def test_real_route_progress_reaches_the_map(
    tab: BrowserTab, srv: Server, drive: list[Fix]
) -> None:
    """A route planned through the API, a ping along the real drive: the map shows the
    server's own next stop and ETA for it."""
    page = await open_signed_in(tab, srv)
    device = await add_device(srv, name="Planned van")
    stops = [
        {"name": "Kiosk am Eck", "lat": drive[400].lat, "lon": drive[400].lon},
        {"name": "Apotheke", "lat": drive[800].lat, "lon": drive[800].lon},
    ]
    path = {
        "type": "LineString",
        "coordinates": [[f.lon, f.lat] for f in drive[100:801:5]],
    }
    now = datetime.now(UTC)
    async with srv.client(headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as client:
        r = await client.post(
            "/api/v1/routes",
            json={
                "device": device.unique_id,
                "planned_start": now.isoformat(),
                "stops": stops,
                "path": path,
            },
        )
        assert r.status_code == 201, r.text
        route_id = r.json()["id"]
        await post_fix(srv, device, drive[150], now - timedelta(seconds=1), speed=11.0)
        await post_fix(srv, device, drive[160], now, speed=11.0)
        item = page.locator(f'.vehicle-item[data-id="{device.unique_id}"]')
        await expect(item.locator(".v-next")).to_contain_text(
            "Next: Kiosk am Eck · ETA", timeout=TIMEOUT_MS
        )
        route = (await client.get(f"/api/v1/routes/{route_id}")).json()
    first = route["stops"][0]
    assert route["next_stop"] == first["id"] and first["eta"] is not None
    eta = datetime.fromisoformat(first["eta"])
    await expect(item.locator(".v-next")).to_have_text(f"Next: Kiosk am Eck · ETA {eta:%H:%M}")
    only_tiles_left_the_machine(tab)


async def test_reconnects_with_backoff_and_resyncs_from_the_snapshot(
    tab: BrowserTab, srv: Server, drive: list[Fix]
) -> None:
    page = await open_signed_in(tab, srv)
    device = await add_device(srv, name="Resync van")
    now = datetime.now(UTC)
    await post_fix(srv, device, drive[500], now - timedelta(seconds=5))
    await wait_for_position(page, device.unique_id, drive[500])

    # The connection drops; meanwhile the vehicle moves. The map must catch up on its own.
    await page.evaluate("() => window.trackerMap.dropConnection()")
    await expect(page.locator("#conn")).to_have_attribute("data-state", "reconnecting")
    await expect(page.locator("#conn-label")).to_contain_text("reconnecting in")
    await post_fix(srv, device, drive[520], now)
    await expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=TIMEOUT_MS)
    await wait_for_position(page, device.unique_id, drive[520])
    only_tiles_left_the_machine(tab)


async def _serve_on(port: int, srv: Server) -> tuple[uvicorn.Server, asyncio.Task[None]]:
    config = uvicorn.Config(
        create_app(srv.settings), host="127.0.0.1", port=port, log_level="warning"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    for _ in range(250):
        if server.started:
            return server, task
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    raise RuntimeError("server did not restart")


@contextlib.asynccontextmanager
async def restarted(port: int, srv: Server) -> AsyncIterator[None]:
    server, task = await _serve_on(port, srv)
    try:
        yield
    finally:
        server.should_exit = True
        await task


async def test_survives_a_server_restart(tab: BrowserTab, srv: Server, drive: list[Fix]) -> None:
    page = await open_signed_in(tab, srv)
    device = await add_device(srv, name="Restart van")
    await post_fix(srv, device, drive[700], datetime.now(UTC) - timedelta(seconds=3))
    await wait_for_position(page, device.unique_id, drive[700])

    await srv.stop()
    await expect(page.locator("#conn")).to_have_attribute(
        "data-state", "reconnecting", timeout=TIMEOUT_MS
    )
    # The page keeps what it knew while the server is away.
    assert await marker_position(page, device.unique_id) is not None
    await asyncio.sleep(2.0)  # a few failed attempts: the backoff grows, the page stays up
    async with restarted(srv.port, srv):
        await post_fix(srv, device, drive[705], datetime.now(UTC))
        await expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=20_000)
        await wait_for_position(page, device.unique_id, drive[705])
    only_tiles_left_the_machine(tab)


async def test_sign_out_forgets_the_session(tab: BrowserTab, srv: Server, drive: list[Fix]) -> None:
    page = await open_signed_in(tab, srv)
    device = await add_device(srv, name="Private van")
    await post_fix(srv, device, drive[50], datetime.now(UTC))
    await expect(page.locator(f'.vehicle-marker[data-id="{device.unique_id}"]')).to_be_visible(
        timeout=TIMEOUT_MS
    )
    await page.click("#signout")
    await expect(page.locator("#signin")).to_be_visible(timeout=TIMEOUT_MS)
    await expect(page.locator(".vehicle-marker")).to_have_count(0)
    assert "tracker_session" not in {c["name"] for c in await tab.context.cookies()}
    await page.reload()
    await expect(page.locator("#signin")).to_be_visible(timeout=TIMEOUT_MS)
    only_tiles_left_the_machine(tab)


async def test_page_and_assets_are_served_locally(srv: Server) -> None:
    async with httpx.AsyncClient(base_url=srv.base_url) as client:
        for path in ("/", "/map"):
            r = await client.get(path)
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/html")
            assert TILES in r.text and "Test tiles" in r.text
            assert "cdn" not in r.text.lower() and "jquery" not in r.text.lower()
        leaflet = await client.get("/static/vendor/leaflet/leaflet.js")
        assert leaflet.status_code == 200 and "Leaflet" in leaflet.text[:2000]
        assert (
            await client.get("/static/vendor/leaflet/images/marker-icon.png")
        ).status_code == 200
        assert (await client.get("/static/map.js")).status_code == 200
        # Only assets: not the npm manifest, templates, node_modules or path tricks.
        for path in (
            "/static/package.json",
            "/static/map_panel.html",
            "/static/node_modules/leaflet/dist/leaflet.js",
            "/static/../pyproject.toml",
            "/static/%2e%2e/src/tracker/pages.py",
        ):
            assert (await client.get(path)).status_code == 404, path
