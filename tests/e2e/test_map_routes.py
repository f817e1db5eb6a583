"""The dispatcher map's route view and event feed in a real headless Chromium.

Routes are planned and stop statuses changed through the real routes API, pings go through
the real ingest API, and the server's own route progress produces the events (arrival,
departure, off route) the page shows. The page's times are checked against what the server
stored, in the browser context's zone (UTC, see tests/e2e/conftest.py).
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from playwright.async_api import Locator, Page, expect

from tests.conftest import ARTIFACTS, DeviceCreds, Server, ServerFactory, add_device
from tests.e2e.conftest import TILES, BrowserTab
from tests.e2e.test_map import (
    TIMEOUT_MS,
    metres,
    only_tiles_left_the_machine,
    open_signed_in,
    post_fix,
)
from tracker.core.model import Fix

pytestmark = pytest.mark.e2e

FIRST, SECOND, THIRD = 300, 450, 600  # drive indices of the planned stops


async def plan_route(srv: Server, device: DeviceCreds, drive: list[Fix]) -> dict[str, Any]:
    """Three stops along the drive, the drive itself as the planned path."""
    stops = [
        {
            "name": "Bäckerei Huber",
            "recipient": "A. Huber",
            "lat": drive[FIRST].lat,
            "lon": drive[FIRST].lon,
        },
        {
            "name": "Metzgerei Wagner",
            "recipient": "<b>B. Wagner</b>",
            "lat": drive[SECOND].lat,
            "lon": drive[SECOND].lon,
            "service_s": 120,
        },
        {"name": "Apotheke", "lat": drive[THIRD].lat, "lon": drive[THIRD].lon},
    ]
    path = {"type": "LineString", "coordinates": [[f.lon, f.lat] for f in drive[290:601:5]]}
    async with srv.admin() as client:
        r = await client.post(
            "/api/v1/routes",
            json={
                "device": device.unique_id,
                "planned_start": datetime.now(UTC).isoformat(),
                "stops": stops,
                "path": path,
            },
        )
    assert r.status_code == 201, r.text
    route: dict[str, Any] = r.json()
    assert [s["status"] for s in route["stops"]] == ["pending"] * 3
    return route


async def fetch_route(srv: Server, route_id: int) -> dict[str, Any]:
    async with srv.admin() as client:
        r = await client.get(f"/api/v1/routes/{route_id}")
    assert r.status_code == 200, r.text
    route: dict[str, Any] = r.json()
    return route


def stop_marker(page: Page, stop: dict[str, Any]) -> Locator:
    return page.locator(f'.stop-marker[data-stop-id="{stop["id"]}"]')


def feed_item(page: Page, event_type: str, device: DeviceCreds) -> Locator:
    # This van's items only: the feed also lists the stored history of earlier tests' vans.
    return page.locator(
        f'#event-list .event[data-type="{event_type}"][data-device="{device.unique_id}"]'
    )


async def fill_colour(locator: Locator) -> str:
    colour: str = await locator.evaluate("e => getComputedStyle(e).backgroundColor")
    return colour


async def legend_colour(page: Page, status: str) -> str:
    return await fill_colour(page.locator(f"#rc-legend .legend-dot.stop-{status}"))


async def show_route(page: Page) -> None:
    """Press "Show route" and wait until every stop is drawn inside the map, clear of the
    route card (framing may be animated, and may wait for a zoom already under way)."""
    await page.click("#rc-fit")
    deadline = asyncio.get_running_loop().time() + TIMEOUT_MS / 1000
    problems: list[str] = ["not checked"]
    while problems and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
        problems = await page.evaluate(
            """() => {
                 const inside = (a, b) => a.left >= b.left && a.right <= b.right
                                          && a.top >= b.top && a.bottom <= b.bottom;
                 const map = document.querySelector("div.folium-map").getBoundingClientRect();
                 const card = document.getElementById("route-card").getBoundingClientRect();
                 const clearOfCard = r => r.right <= card.left || r.left >= card.right
                                          || r.bottom <= card.top || r.top >= card.bottom;
                 return [...document.querySelectorAll(".stop-marker")]
                   .map(m => [m.dataset.stopId, m.getBoundingClientRect()])
                   .filter(([, r]) => !inside(r, map) || !clearOfCard(r))
                   .map(([id]) => id);
               }"""
        )
    assert problems == [], f"stops outside the map or under the card: {problems}"


def far_from(path: list[Fix], fix: Fix, beyond_m: float) -> tuple[float, float]:
    """A point ~700 m off `fix`, farther than `beyond_m` from every point of the path."""
    for dlat, dlon in ((0.006, 0.0), (-0.006, 0.0), (0.0, 0.009), (0.0, -0.009)):
        lat, lon = fix.lat + dlat, fix.lon + dlon
        if min(metres(lat, lon, p.lat, p.lon) for p in path) > beyond_m:
            return dlat, dlon
    raise AssertionError("no offset leaves the planned path")


async def test_arrival_departure_and_off_route_on_the_map(
    tab: BrowserTab, server_factory: ServerFactory, drive: list[Fix]
) -> None:
    # A company that lets departure complete stops (TRACKER_AUTO_COMPLETE=departure).
    srv = await server_factory(
        tile_url=TILES, tile_attribution="Test tiles", auto_complete="departure"
    )
    page = await open_signed_in(tab, srv)
    device = await add_device(srv, name="Route van")
    route = await plan_route(srv, device, drive)
    first, second, third = route["stops"]
    now = datetime.now(UTC).replace(microsecond=0)

    # Parked at the first stop for 40 s (longer than the 30 s dwell), barely moving.
    parked = [now - timedelta(seconds=s) for s in (180, 170, 160, 150, 140)]
    here = drive[FIRST]
    await post_fix(srv, device, here, parked[0], speed=0.3)
    item = page.locator(f'.vehicle-item[data-id="{device.unique_id}"]')
    await expect(item).to_be_visible(timeout=TIMEOUT_MS)
    await item.click()
    await expect(item).to_have_attribute("aria-current", "true")
    for when in parked[1:]:
        await post_fix(srv, device, here, when, speed=0.3)

    # The arrival the server detected colours the first stop; the others stay pending.
    await expect(stop_marker(page, first)).to_have_class(
        re.compile(r"\bstop-arrived\b.*\bstop-next\b"), timeout=TIMEOUT_MS
    )
    for stop in (second, third):
        await expect(stop_marker(page, stop)).to_have_class(re.compile(r"\bstop-pending\b"))
        assert "stop-next" not in (await stop_marker(page, stop).get_attribute("class") or "")
    await expect(stop_marker(page, first)).to_have_text("1")
    await expect(stop_marker(page, third)).to_have_text("3")
    arrived_fill = await fill_colour(stop_marker(page, first).locator(".sm-body"))
    pending_fill = await fill_colour(stop_marker(page, second).locator(".sm-body"))
    assert arrived_fill == await legend_colour(page, "arrived")
    assert pending_fill == await legend_colour(page, "pending")
    assert arrived_fill != pending_fill
    await expect(page.locator("#rc-vehicle")).to_have_text("Route van")
    await expect(page.locator("#rc-next")).to_have_text("At stop 1: Bäckerei Huber")

    arrival = feed_item(page, "stop.arrived", device)
    await expect(arrival).to_have_count(1, timeout=TIMEOUT_MS)
    await expect(arrival.locator(".ev-text")).to_have_text("Route van arrived at Bäckerei Huber")
    stored = await fetch_route(srv, route["id"])
    arrived_at = datetime.fromisoformat(stored["stops"][0]["arrived_at"])
    assert arrived_at in parked
    await expect(arrival.locator(".ev-time")).to_have_text(f"{arrived_at:%H:%M:%S}")

    # Driving on: leaving the geofence completes the first stop; the second is next.
    for k, idx in enumerate((310, 320, 330)):
        await post_fix(srv, device, drive[idx], now - timedelta(seconds=130 - 10 * k), speed=16.0)
    await expect(stop_marker(page, first)).to_have_class(
        re.compile(r"\bstop-completed\b"), timeout=TIMEOUT_MS
    )
    await expect(stop_marker(page, second)).to_have_class(re.compile(r"\bstop-next\b"))
    assert "stop-next" not in (await stop_marker(page, first).get_attribute("class") or "")
    completed_fill = await fill_colour(stop_marker(page, first).locator(".sm-body"))
    assert completed_fill == await legend_colour(page, "completed")
    assert completed_fill not in (arrived_fill, pending_fill)
    await expect(feed_item(page, "stop.departed", device).locator(".ev-text")).to_contain_text(
        "Route van left Bäckerei Huber after"
    )
    await expect(feed_item(page, "stop.completed", device).locator(".ev-text")).to_have_text(
        "Route van completed Bäckerei Huber"
    )
    types = await page.locator("#event-list .event").evaluate_all(
        "items => items.map(i => i.dataset.type)"
    )
    assert types.index("stop.completed") < types.index("stop.arrived"), types  # newest first
    await expect(page.locator("#rc-summary")).to_contain_text("1 of 3 stops done")

    # Three fixes far from the path: the server calls it off route, the map shows it.
    path = drive[290:601:5]
    dlat, dlon = far_from(path, drive[350], beyond_m=400.0)
    for k, idx in enumerate((340, 350, 360)):
        away = Fix(device_id=0, time=now, lat=drive[idx].lat + dlat, lon=drive[idx].lon + dlon)
        await post_fix(srv, device, away, now - timedelta(seconds=90 - 10 * k), speed=12.0)
    marker = page.locator(f'.vehicle-marker[data-id="{device.unique_id}"]')
    await expect(marker).to_have_class(re.compile(r"\boff-route\b"), timeout=TIMEOUT_MS)
    await expect(marker.locator(".vm-badge")).to_be_visible()
    await expect(page.locator("#rc-offroute")).to_be_visible()
    await expect(feed_item(page, "route.off_route", device).locator(".ev-text")).to_contain_text(
        "Route van is off route ("
    )
    types = await page.locator("#event-list .event").evaluate_all(
        "items => items.map(i => i.dataset.type)"
    )
    assert types.index("route.off_route") < types.index("stop.completed"), types

    # Back on the path: the badge goes, the feed says so.
    for k, idx in enumerate((380, 390)):
        await post_fix(srv, device, drive[idx], now - timedelta(seconds=50 - 10 * k), speed=12.0)
    await expect(feed_item(page, "route.back_on_route", device).locator(".ev-text")).to_have_text(
        "Route van is back on route", timeout=TIMEOUT_MS
    )
    await expect(marker.locator(".vm-badge")).to_be_hidden()
    await expect(page.locator("#rc-offroute")).to_be_hidden()

    # The next stop's popup: who, status and the server's ETA as a local time.
    stored = await fetch_route(srv, route["id"])
    eta = datetime.fromisoformat(stored["stops"][1]["eta"])
    await show_route(page)
    await stop_marker(page, second).click()
    popup = page.locator(".leaflet-popup .stop-popup")
    await expect(popup).to_contain_text("Stop 2 · Metzgerei Wagner")
    await expect(popup).to_contain_text("next stop")
    await expect(popup).to_contain_text("<b>B. Wagner</b>")
    assert await popup.locator("b").count() == 0
    await expect(popup.locator(".sp-status")).to_have_text("pending")
    await expect(popup.locator(".sp-eta")).to_contain_text(f"{eta:%H:%M}")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "map_routes.png"))

    # Clicking an event brings its vehicle back: selected, centred, popup open.
    await page.keyboard.press("Escape")
    await expect(page.locator("#route-card")).to_be_hidden()
    await expect(page.locator(".stop-marker")).to_have_count(0)
    await page.evaluate("() => window.trackerMap.map.setView([0, 0], 3)")
    await arrival.locator("button").click()
    await expect(item).to_have_attribute("aria-current", "true")
    await expect(page.locator("#route-card")).to_be_visible()
    await expect(page.locator(".stop-marker")).to_have_count(3)
    await expect(page.locator(".leaflet-popup .vehicle-popup")).to_contain_text("Route van")
    # Zoomed in on it, in view (the popup may pan the map to stay clear of the card).
    last = drive[390]
    await page.wait_for_function(
        """([lat, lon]) => { const m = window.trackerMap.map;
                             return m.getZoom() >= 16 && m.getBounds().contains([lat, lon]); }""",
        arg=[last.lat, last.lon],
        timeout=TIMEOUT_MS,
    )
    await page.screenshot(path=str(ARTIFACTS / "map_routes_focus.png"))
    only_tiles_left_the_machine(tab)


async def test_dispatcher_outcomes_colour_stops_and_reach_the_feed(
    tab: BrowserTab, srv: Server, drive: list[Fix]
) -> None:
    page = await open_signed_in(tab, srv)
    device = await add_device(srv, name="Outcome van")
    route = await plan_route(srv, device, drive)
    first, second, third = route["stops"]
    await post_fix(srv, device, drive[290], datetime.now(UTC), speed=15.0)

    # Selecting by clicking the vehicle on the map. The click goes to this marker itself:
    # another test's van may stand on the same spot, on top of it.
    marker = page.locator(f'.vehicle-marker[data-id="{device.unique_id}"]')
    await expect(marker).to_be_visible(timeout=TIMEOUT_MS)
    await marker.locator(".vm-body").dispatch_event("click")
    await expect(marker).to_have_class(re.compile(r"\bselected\b"))
    await expect(page.locator(".stop-marker")).to_have_count(3, timeout=TIMEOUT_MS)
    await expect(stop_marker(page, first)).to_have_class(re.compile(r"\bstop-next\b"))

    async with srv.admin() as client:
        base = f"/api/v1/routes/{route['id']}/stops"
        r = await client.patch(
            f"{base}/{first['id']}", json={"status": "failed", "reason": "nobody home"}
        )
        assert r.status_code == 200, r.text
        r = await client.patch(f"{base}/{second['id']}", json={"status": "skipped"})
        assert r.status_code == 200, r.text

    await expect(stop_marker(page, first)).to_have_class(
        re.compile(r"\bstop-failed\b"), timeout=TIMEOUT_MS
    )
    await expect(stop_marker(page, second)).to_have_class(re.compile(r"\bstop-skipped\b"))
    await expect(stop_marker(page, third)).to_have_class(
        re.compile(r"\bstop-pending\b.*\bstop-next\b")
    )
    fills = {
        status: await fill_colour(stop_marker(page, stop).locator(".sm-body"))
        for status, stop in (("failed", first), ("skipped", second), ("pending", third))
    }
    for status, fill in fills.items():
        assert fill == await legend_colour(page, status), status
    assert len(set(fills.values())) == 3
    await expect(feed_item(page, "stop.failed", device).locator(".ev-text")).to_have_text(
        "Outcome van failed at Bäckerei Huber: nobody home", timeout=TIMEOUT_MS
    )
    await expect(feed_item(page, "stop.skipped", device).locator(".ev-text")).to_have_text(
        "Outcome van skipped Metzgerei Wagner"
    )
    await expect(page.locator("#rc-summary")).to_contain_text(
        "2 of 3 stops done · 1 failed · 1 skipped"
    )
    # Close in on the stop, so no vehicle of other tests sits on top of it.
    await page.evaluate(
        "([lat, lon]) => window.trackerMap.map.setView([lat, lon], 18, {animate: false})",
        [first["lat"], first["lon"]],
    )
    await stop_marker(page, first).click()
    popup = page.locator(".leaflet-popup .stop-popup")
    await expect(popup.locator(".sp-status")).to_contain_text("failed at ")
    await expect(popup).to_contain_text("nobody home")
    assert await popup.locator(".sp-eta").count() == 0  # a done stop has no ETA
    only_tiles_left_the_machine(tab)


async def test_feed_keeps_the_newest_fifty_and_can_hide_eta_changes(
    tab: BrowserTab, srv: Server, drive: list[Fix]
) -> None:
    page = await open_signed_in(tab, srv)
    device = await add_device(srv, name="Busy van")
    await post_fix(srv, device, drive[100], datetime.now(UTC))
    await expect(page.locator(f'.vehicle-item[data-id="{device.unique_id}"]')).to_be_visible(
        timeout=TIMEOUT_MS
    )
    # Sixty events through the server's own event channel, every third an ETA change.
    base = datetime.now(UTC).replace(microsecond=0)
    for k in range(60):
        if k % 3 == 0:
            event = {
                "type": "stop.eta_changed",
                "time": (base + timedelta(seconds=k)).isoformat(),
                "route_id": 1,
                "stop_id": 10_000 + k,
                "data": {
                    "eta": (base + timedelta(minutes=20 + k)).isoformat(),
                    "previous": (base + timedelta(minutes=13 + k)).isoformat(),
                },
            }
        else:
            event = {
                "type": "stop.completed",
                "time": (base + timedelta(seconds=k)).isoformat(),
                "route_id": 1,
                "stop_id": 10_000 + k,
                "data": {},
            }
        await srv.runtime.bus.publish(
            "events", {"type": "event", "device": device.unique_id, "event": event}
        )
    items = page.locator("#event-list .event")
    await expect(items).to_have_count(50, timeout=TIMEOUT_MS)
    await expect(page.locator("#feed-count")).to_have_text("50")
    await expect(items.first.locator(".ev-text")).to_have_text("Busy van completed stop #10059")
    latest_eta = base + timedelta(minutes=20 + 57)
    await expect(
        feed_item(page, "stop.eta_changed", device).first.locator(".ev-text")
    ).to_have_text(f"Busy van: ETA for stop #10057 moved to {latest_eta:%H:%M} (+7 min)")
    await expect(items.last.locator(".ev-text")).to_contain_text("stop #10010")

    # The feed also holds the stored history of the session's other vans: keep to this one.
    await page.select_option("#feed-van", device.unique_id)
    await page.uncheck("#feed-eta")
    await expect(feed_item(page, "stop.eta_changed", device)).to_have_count(0)
    await expect(items).to_have_count(40)  # every completion is still kept
    await expect(items.last.locator(".ev-text")).to_have_text("Busy van completed stop #10001")
    await page.check("#feed-eta")
    await expect(items).to_have_count(50)
    only_tiles_left_the_machine(tab)


async def test_phone_layout_keeps_map_list_and_route_card_usable(
    tab: BrowserTab, srv: Server, drive: list[Fix]
) -> None:
    page = tab.page
    await page.set_viewport_size({"width": 390, "height": 780})
    page = await open_signed_in(tab, srv)
    device = await add_device(srv, name="Phone van")
    route = await plan_route(srv, device, drive)
    await post_fix(srv, device, drive[290], datetime.now(UTC), speed=15.0)
    item = page.locator(f'.vehicle-item[data-id="{device.unique_id}"]')
    await expect(item).to_be_visible(timeout=TIMEOUT_MS)
    # The feed starts folded so the short panel shows the vehicles.
    assert await page.locator("#feed").get_attribute("open") is None
    await item.click()
    await show_route(page)
    card = await page.locator("#route-card").bounding_box()
    fmap = await page.locator("div.folium-map").bounding_box()
    panel = await page.locator("#panel").bounding_box()
    assert card is not None and fmap is not None and panel is not None
    assert card["x"] >= 0 and card["x"] + card["width"] <= 390
    assert fmap["height"] > 300 and panel["y"] >= fmap["y"] + fmap["height"] - 1
    assert await page.evaluate("() => document.documentElement.scrollWidth") <= 390
    assert await page.locator(".stop-marker").count() == len(route["stops"])
    # Unfolded on demand, within the panel.
    await page.locator("#feed summary").click()
    await expect(page.locator("#feed")).to_have_attribute("open", "")
    await expect(page.locator("#feed-eta")).to_be_visible()
    feed = await page.locator("#feed").bounding_box()
    assert feed is not None and feed["y"] >= panel["y"] and feed["x"] + feed["width"] <= 390
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "map_routes_phone.png"))
    only_tiles_left_the_machine(tab)
