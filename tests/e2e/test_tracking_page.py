"""The customer tracking page in a real headless Chromium (phone-sized), against a real server
and PostGIS: pings through the ingest API move the vehicle marker and the ETA live; after
completion the page shows the outcome and the marker is gone for good."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta

import pytest
from playwright.async_api import ConsoleMessage, expect

from tests.conftest import ARTIFACTS, Server, ServerFactory
from tests.e2e.conftest import TILES, BrowserTab
from tests.integration.test_tracking import lon_at, new_delivery

pytestmark = pytest.mark.e2e

TIMEOUT_MS = 10_000


@pytest.fixture
async def srv(server_factory: ServerFactory) -> Server:
    return await server_factory(tile_url=TILES, tile_attribution="Test tiles", tick_ms=50.0)


async def test_page_follows_the_vehicle_then_shows_the_outcome(
    tab: BrowserTab, srv: Server
) -> None:
    page = tab.page
    await page.set_viewport_size({"width": 390, "height": 844})
    console: list[str] = []

    def note(msg: ConsoleMessage) -> None:
        if msg.type in ("error", "warning"):
            console.append(msg.text)

    page.on("console", note)
    d = await new_delivery(srv)
    response = await page.goto(f"{srv.base_url}/t/{d.tokens[0]}")
    assert response is not None and response.status == 200

    await expect(page.locator("#live")).to_have_text("live", timeout=TIMEOUT_MS)
    await expect(page.locator("#destination")).to_have_text(f"{d.tag} Street 1")
    await expect(page.locator("#phase")).to_have_text(
        re.compile("^(You are the next stop|Arriving soon)$")
    )
    await expect(page.locator("#map")).to_have_attribute("data-vehicle", "hidden")
    await expect(page.locator(".destination-marker")).to_have_count(1)
    await expect(page.locator(".vehicle-marker")).to_have_count(0)
    planned_eta = await page.locator("#eta-time").get_attribute("data-eta")
    assert planned_eta

    # The van starts 600 m out and drives towards the stop: the marker appears and follows.
    t0 = datetime.now(UTC)
    await d.ping(0.0, t0, speed=8.0)
    await expect(page.locator(".vehicle-marker")).to_have_count(1, timeout=TIMEOUT_MS)
    await expect(page.locator("#map")).to_have_attribute(
        "data-vehicle-lon", str(round(lon_at(0.0), 5))
    )
    # Twice slower than planned: the ETA moves later.
    await d.ping(20.0, t0 + timedelta(seconds=5), speed=4.0)
    await expect(page.locator("#map")).to_have_attribute(
        "data-vehicle-lon", str(round(lon_at(20.0), 5)), timeout=TIMEOUT_MS
    )
    await d.ping(40.0, t0 + timedelta(seconds=10), speed=4.0)
    await expect(page.locator("#map")).to_have_attribute(
        "data-vehicle-lon", str(round(lon_at(40.0), 5)), timeout=TIMEOUT_MS
    )
    await expect(page.locator("#eta-time")).not_to_have_attribute(
        "data-eta", planned_eta, timeout=TIMEOUT_MS
    )
    live_eta = datetime.fromisoformat(
        await page.locator("#eta-time").get_attribute("data-eta") or ""
    )
    assert live_eta > datetime.fromisoformat(planned_eta)
    await expect(page.locator("#eta-countdown")).to_contain_text("min")
    # With its 80 % interval in words.
    await expect(page.locator("#eta-range")).to_contain_text("between")
    await expect(page.locator("#vehicle-note")).to_contain_text("updated")
    # The marker really sits where the last ping put it.
    box = await page.evaluate(
        """() => { const m = document.querySelector('.vehicle-marker').getBoundingClientRect();
                   const d = document.querySelector('.destination-marker').getBoundingClientRect();
                   return {vx: m.x, dx: d.x}; }"""
    )
    assert box["vx"] < box["dx"]  # west of the stop, as the street runs east
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "tracking_page_live.png"), full_page=True)

    await d.set_status(0, "arrived")
    await expect(page.locator("#phase")).to_have_text("The driver has arrived", timeout=TIMEOUT_MS)
    await d.set_status(0, "completed")
    await expect(page.locator("#phase")).to_have_text("Delivered", timeout=TIMEOUT_MS)
    await expect(page.locator("#outcome")).to_contain_text("Delivered at")
    await expect(page.locator(".vehicle-marker")).to_have_count(0)
    await expect(page.locator("#map")).to_have_attribute("data-vehicle", "hidden")
    await expect(page.locator("#eta-block")).to_be_hidden()
    await expect(page.locator('#timeline li[aria-current="step"]')).to_have_text("Delivered")

    # The van drives on; the page never shows it again, not even after a reload.
    await d.ping(100.0, t0 + timedelta(seconds=25), speed=8.0)
    await asyncio.sleep(1.0)
    await expect(page.locator(".vehicle-marker")).to_have_count(0)
    await page.reload()
    await expect(page.locator("#phase")).to_have_text("Delivered", timeout=TIMEOUT_MS)
    await expect(page.locator(".vehicle-marker")).to_have_count(0)
    await expect(page.locator("#live")).to_have_text("finished")
    await page.screenshot(path=str(ARTIFACTS / "tracking_page_delivered.png"), full_page=True)

    tiles = TILES.split("{")[0]
    assert [u for u in tab.external if not u.startswith(tiles)] == []
    assert tab.errors == []
    assert not [c for c in console if "Content Security Policy" in c], console


async def test_unknown_link_is_a_plain_404_page(tab: BrowserTab, srv: Server) -> None:
    response = await tab.page.goto(f"{srv.base_url}/t/{'A' * 43}")
    assert response is not None and response.status == 404
    await expect(tab.page.locator("h1")).to_have_text("Not found")
    assert await tab.page.locator("script").count() == 0
