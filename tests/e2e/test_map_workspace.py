"""The live map's workspace tools in a real headless Chromium against a real server on a
database of its own: the event feed reloads stored history and filters by van and type,
the vehicle search, the selected route's line (driven and ahead) along its road path, the
route board flagging a late stop and sorting by risk, and a day's replay of a van's track
with its stops. Screenshots go to artifacts/."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from playwright.async_api import Page, expect

from tests.conftest import ARTIFACTS, DeviceCreds, Server, ServerFactory, add_device, own_database
from tests.e2e.conftest import TILES, BrowserTab
from tests.e2e.test_map import TIMEOUT_MS, open_signed_in, post_fix
from tracker.core.model import Fix

pytestmark = pytest.mark.e2e


@pytest.fixture
async def own_srv(server_factory: ServerFactory) -> AsyncIterator[Server]:
    """A server on a database of its own: the board and feed show only this test's vans."""
    async with own_database("mapws") as url:
        server = await server_factory(database_url=url, tile_url=TILES, tile_attribution="Test")
        yield server
        await server.stop()  # before its database goes


async def plan(
    srv: Server, van: DeviceCreds, drive: list[Fix], windows: list[Any]
) -> dict[str, Any]:
    """Three stops along the drive with the given windows; the drive is the road path."""
    stops = [
        {"name": f"Stop {k + 1}", "lat": drive[i].lat, "lon": drive[i].lon, **windows[k]}
        for k, i in enumerate((300, 450, 600))
    ]
    path = {"type": "LineString", "coordinates": [[f.lon, f.lat] for f in drive[100:601:5]]}
    body = {
        "device": van.unique_id,
        "planned_start": datetime.now(UTC).isoformat(),
        "stops": stops,
        "path": path,
    }
    async with srv.admin() as client:
        r = await client.post("/api/v1/routes", json=body)
    assert r.status_code == 201, r.text
    route: dict[str, Any] = r.json()
    return route


async def test_history_search_line_board_and_replay(
    tab: BrowserTab, own_srv: Server, drive: list[Fix]
) -> None:
    srv = own_srv
    now = datetime.now(UTC)
    late_by = {
        "window_start": (now - timedelta(hours=2)).isoformat(),
        "window_end": (now - timedelta(hours=1)).isoformat(),
    }
    wide = {"window_end": (now + timedelta(hours=6)).isoformat()}
    van_a = await add_device(srv, "Van Alpha")
    van_b = await add_device(srv, "Van Bravo")
    t0 = now - timedelta(minutes=5)
    for k in range(0, 40, 4):  # Van Alpha drives the start of the path
        await post_fix(srv, van_a, drive[100 + k], t0 + timedelta(seconds=k), speed=8.0)
    await post_fix(srv, van_b, drive[700], now - timedelta(seconds=30))
    route_a = await plan(srv, van_a, drive, [late_by, wide, wide])
    route_b = await plan(srv, van_b, drive, [wide, wide, wide])
    # Before the page opens: Van Bravo fails a stop (stored history).
    async with srv.admin() as client:
        stop_b = route_b["stops"][0]["id"]
        r = await client.patch(
            f"/api/v1/routes/{route_b['id']}/stops/{stop_b}",
            json={"status": "failed", "reason": "nobody home"},
        )
        assert r.status_code == 200, r.text

    page: Page = await open_signed_in(tab, srv)
    feed = page.locator("#event-list .event")
    await expect(feed.filter(has_text="Van Bravo failed at Stop 1: nobody home")).to_have_count(
        1, timeout=TIMEOUT_MS
    )
    # A route's old life shows too: a new route for Van Bravo ends the one it had.
    await page.select_option("#feed-type", "stop.failed")
    await expect(feed).to_have_count(1)
    await page.select_option("#feed-type", "")
    await page.select_option("#feed-van", van_a.unique_id)
    await expect(feed.filter(has_text="Van Bravo")).to_have_count(0)
    await page.select_option("#feed-van", "")

    # Search the vehicle list.
    items = page.locator("#vehicle-list li:not([hidden])")
    await expect(items).to_have_count(2)
    await page.fill("#vehicle-search", "bravo")
    await expect(items).to_have_count(1)
    await expect(items.first).to_contain_text("Van Bravo")
    await page.fill("#vehicle-search", "")
    await expect(items).to_have_count(2)

    # Select Van Alpha: its route line, the part driven and the part ahead.
    await page.locator(f'.vehicle-item[data-id="{van_a.unique_id}"]').click()
    ahead = page.locator("path.route-line-ahead")
    await expect(ahead).to_have_count(1, timeout=TIMEOUT_MS)
    # Drive on: the driven part appears (the line is fetched again as the van moves).
    for k in range(40, 120, 4):
        await post_fix(srv, van_a, drive[100 + k], t0 + timedelta(seconds=k), speed=8.0)
    await expect(page.locator("path.route-line-driven")).to_have_count(1, timeout=15_000)
    await expect(page.locator("#rc-line")).to_contain_text("km driven", timeout=15_000)
    # The line splits where the van's last update left it (a trailing refresh follows
    # updates that came faster than the line is fetched).
    async with srv.admin() as client:
        for _ in range(50):
            served = (await client.get(f"/api/v1/routes/{route_a['id']}/path")).json()
            if served["driven_m"] > 0:
                break
    await page.wait_for_timeout(200)
    async with srv.admin() as client:
        served = (await client.get(f"/api/v1/routes/{route_a['id']}/path")).json()
    await page.wait_for_function(
        "m => Math.abs(window.trackerMap.line.drivenM - m) < 1",
        arg=served["driven_m"],
        timeout=15_000,
    )
    await page.locator(".leaflet-popup-close-button").click()
    await page.screenshot(path=str(ARTIFACTS / "map-route-line.png"))

    # The route board: Van Alpha's first stop is late (its window ended an hour ago),
    # Van Bravo's first is not visited; by risk, the late one comes first.
    await page.get_by_role("button", name="Route board").click()
    rows = page.locator("#board-rows tr")
    await expect(rows).to_have_count(6, timeout=TIMEOUT_MS)
    await expect(rows.first).to_have_attribute("data-risk", "late")
    await expect(rows.first).to_contain_text("Van Alpha")
    await expect(page.locator(f'#board-rows tr[data-stop-id="{stop_b}"]')).to_have_attribute(
        "data-risk", "not_visited"
    )
    await expect(page.locator("#board-summary")).to_contain_text("1 late")
    await page.screenshot(path=str(ARTIFACTS / "map-route-board.png"))
    await page.select_option("#board-sort", "van")
    await expect(rows.first).to_contain_text("Van Alpha")
    await expect(rows.nth(3)).to_contain_text("Van Bravo")
    await page.keyboard.press("Escape")  # keyboard: Esc clears the selection
    await page.get_by_role("button", name="Close the route board").click()
    await expect(page.locator("#board")).to_be_hidden()

    # A day's replay of Van Alpha: its track and its stops, scrubbed with the slider.
    await page.locator(f'.vehicle-item[data-id="{van_a.unique_id}"]').click()
    await page.get_by_role("button", name="Replay day").click()
    await expect(page.locator("#replay-status")).to_contain_text(
        "30 positions · 3 stops", timeout=TIMEOUT_MS
    )
    await expect(page.locator("path.replay-track")).to_have_count(1)
    slider = page.locator("#replay-slider")
    await slider.focus()
    await page.keyboard.press("End")
    await expect(page.locator("#replay-time")).not_to_be_empty()
    await page.screenshot(path=str(ARTIFACTS / "map-replay.png"))
    assert route_a["id"] != route_b["id"]
    assert tab.errors == [], tab.errors


async def test_map_on_a_phone_keeps_the_board_usable(
    tab: BrowserTab, own_srv: Server, drive: list[Fix]
) -> None:
    await tab.page.set_viewport_size({"width": 390, "height": 844})
    van = await add_device(own_srv, "Phone van")
    await post_fix(own_srv, van, drive[300], datetime.now(UTC))
    await plan(own_srv, van, drive, [{}, {}, {}])
    page = await open_signed_in(tab, own_srv)
    await page.get_by_role("button", name="Route board").click()
    await expect(page.locator("#board-rows tr")).to_have_count(3, timeout=TIMEOUT_MS)
    box = await page.locator("#board").bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390
    await page.screenshot(path=str(ARTIFACTS / "map-board-phone.png"))
