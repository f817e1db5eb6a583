"""The driver page in a real headless Chromium on a phone-sized screen.

Geolocation is emulated (Playwright's set_geolocation feeds navigator.geolocation's
watchPosition) and so are network outages (context.set_offline). Whatever the page
produced is checked where it must end up: in PostGIS, read back with SQL.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from playwright.async_api import (
    Browser,
    BrowserContext,
    Dialog,
    Page,
    Route,
    ViewportSize,
    expect,
)

from tests.conftest import ARTIFACTS, DeviceCreds, Server, stored_positions
from tests.e2e.conftest import LOCAL

pytestmark = pytest.mark.e2e

PHONE: ViewportSize = {"width": 390, "height": 844}
START = (48.137154, 11.576124)  # Munich, Marienplatz
STEP = 0.00005  # about 5.5 m of latitude between emulated fixes


@dataclass
class Phone:
    """A phone-sized browser context with location permission, on the driver page."""

    context: BrowserContext
    page: Page
    base_url: str
    errors: list[str] = field(default_factory=list)
    external: list[str] = field(default_factory=list)

    async def open(self) -> Page:
        self.page = await self.context.new_page()
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        # Failed requests are logged by Chromium itself (the offline periods and 4xx answers
        # these tests cause on purpose); anything else on the console is the page's fault.
        self.page.on(
            "console",
            lambda msg: (
                self.errors.append(msg.text)
                if msg.type == "error" and not msg.text.startswith("Failed to load resource")
                else None
            ),
        )
        await self.page.goto(f"{self.base_url}/driver")
        return self.page

    async def move(self, lat: float, lon: float) -> None:
        await self.context.set_geolocation({"latitude": lat, "longitude": lon, "accuracy": 6})


@pytest.fixture
async def phone(browser: Browser, server: Server) -> AsyncIterator[Phone]:
    context = await browser.new_context(
        viewport=PHONE,
        is_mobile=True,
        has_touch=True,
        locale="en-GB",
        timezone_id="UTC",
        geolocation={"latitude": START[0], "longitude": START[1], "accuracy": 6},
    )
    await context.grant_permissions(["geolocation"], origin=server.base_url)
    holder = Phone(context, None, server.base_url)  # type: ignore[arg-type]

    async def refuse(route: Route) -> None:
        holder.external.append(route.request.url)
        await route.abort()

    await context.route(lambda url: not LOCAL.match(url), refuse)
    ARTIFACTS.mkdir(exist_ok=True)
    await holder.open()
    yield holder
    await context.close()


async def wait_rows(
    db: asyncpg.Pool, unique_id: str, count: int, timeout: float = 20.0
) -> list[asyncpg.Record]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        found = await stored_positions(db, unique_id)
        if len(found) >= count or loop.time() > deadline:
            return found
        await asyncio.sleep(0.1)


def has_point(found: list[asyncpg.Record], lat: float, lon: float) -> bool:
    return any(abs(r["lat"] - lat) < 1e-9 and abs(r["lon"] - lon) < 1e-9 for r in found)


async def sign_in(page: Page, token: str) -> None:
    await expect(page.locator("#signin")).to_be_visible()
    await page.fill("#signin-token", token)
    await page.click("#signin-submit")
    await expect(page.locator("#app")).to_be_visible()


async def start_sharing(page: Page) -> None:
    await page.click("#share")
    await expect(page.locator("#sharing-state")).to_have_text("on")


async def test_an_offline_period_loses_no_ping(
    phone: Phone, device: DeviceCreds, db: asyncpg.Pool
) -> None:
    page = phone.page
    began = datetime.now(UTC)
    await sign_in(page, device.token)
    await expect(page.locator("#route-state")).to_have_text("No active route.")
    await start_sharing(page)
    online = [(START[0] + i * STEP, START[1]) for i in range(3)]
    for i, (lat, lon) in enumerate(online):
        if i:  # the first fix is the context's starting position
            await asyncio.sleep(0.2)
            await phone.move(lat, lon)
        found = await wait_rows(db, device.unique_id, i + 1)
        assert has_point(found, lat, lon), f"online fix {i} was not stored"
    await expect(page.locator("#queue-count")).to_have_text("0")

    await phone.context.set_offline(True)
    await expect(page.locator("#net")).to_have_text("offline")
    offline = [(START[0] + (3 + i) * STEP, START[1] + i * STEP) for i in range(8)]
    for i, (lat, lon) in enumerate(offline):
        await asyncio.sleep(0.2)
        await phone.move(lat, lon)
        await expect(page.locator("#queue-count")).to_have_text(str(i + 1))
    await asyncio.sleep(1.5)  # the page keeps trying (and failing) meanwhile
    assert len(await stored_positions(db, device.unique_id)) == 3
    await expect(page.locator("#send-state")).to_contain_text("retrying")
    await page.screenshot(path=str(ARTIFACTS / "driver_offline.png"), full_page=True)

    await phone.context.set_offline(False)
    await expect(page.locator("#net")).to_have_text("online")
    await expect(page.locator("#queue-count")).to_have_text("0", timeout=20_000)
    found = await stored_positions(db, device.unique_id)
    assert len(found) == 3 + 8
    for lat, lon in online + offline:
        assert has_point(found, lat, lon), f"({lat}, {lon}) was lost"
    times = [r["fix_time"] for r in found]
    assert times == sorted(times) and len(set(times)) == len(times)
    assert began - timedelta(seconds=5) <= times[0] and times[-1] <= datetime.now(UTC)
    assert all(r["accuracy"] == 6 for r in found)
    assert phone.errors == [] and phone.external == []


async def test_pings_kept_offline_survive_closing_the_page(
    phone: Phone, device: DeviceCreds, db: asyncpg.Pool
) -> None:
    page = phone.page
    await sign_in(page, device.token)
    await start_sharing(page)
    await wait_rows(db, device.unique_id, 1)
    await phone.context.set_offline(True)
    offline = [(START[0] - (i + 1) * STEP, START[1]) for i in range(4)]
    for i, (lat, lon) in enumerate(offline):
        await asyncio.sleep(0.2)
        await phone.move(lat, lon)
        await expect(page.locator("#queue-count")).to_have_text(str(i + 1))
    # Signing out would discard them: the page asks first, and "no" keeps everything.
    dialogs: list[str] = []

    async def decline(dialog: Dialog) -> None:
        # Recorded once answered, so nothing below runs while the question is still open.
        await dialog.dismiss()
        dialogs.append(dialog.message)

    page.on("dialog", decline)
    await page.click("#signout")
    for _ in range(100):
        if dialogs:
            break
        await asyncio.sleep(0.05)
    await expect(page.locator("#app")).to_be_visible()
    assert len(dialogs) == 1 and "4 location(s) are not sent yet" in dialogs[0]
    await expect(page.locator("#queue-count")).to_have_text("4")
    # Closing a watching page can reach it as a PERMISSION_DENIED error (Chromium reports
    # any loss of its location service so); that must not cost the driver's choice to share.
    await page.close()  # the battery died, the tab was swiped away...
    assert len(await stored_positions(db, device.unique_id)) == 1

    await phone.context.set_offline(False)
    page = await phone.open()
    # Signed in from the saved token, sharing resumed, the queue sent from IndexedDB.
    await expect(page.locator("#app")).to_be_visible()
    await expect(page.locator("#sharing-state")).to_have_text("on")
    await expect(page.locator("#queue-count")).to_have_text("0", timeout=20_000)
    found = await stored_positions(db, device.unique_id)
    for lat, lon in offline:
        assert has_point(found, lat, lon), f"({lat}, {lon}) was lost with the page"
    assert phone.errors == []


async def test_a_withdrawn_permission_pauses_sharing_until_it_is_given_back(
    phone: Phone, server: Server, device: DeviceCreds, db: asyncpg.Pool
) -> None:
    page = phone.page
    await sign_in(page, device.token)
    await start_sharing(page)
    await wait_rows(db, device.unique_id, 1)

    await phone.context.clear_permissions()
    await expect(page.locator("#sharing-state")).to_have_text("paused: location permission denied")
    await expect(page.locator("#notes")).to_contain_text("Location permission denied")
    await expect(page.locator("#share")).to_have_attribute("aria-pressed", "false")
    # The page stopped watching, but only the driver forgets the choice to share.
    assert await page.evaluate("localStorage.getItem('tracker.driver.sharing')") == "on"

    await phone.context.grant_permissions(["geolocation"], origin=server.base_url)
    await expect(page.locator("#sharing-state")).to_have_text("on")
    await asyncio.sleep(0.2)
    await phone.move(START[0] + 2 * STEP, START[1] + 2 * STEP)
    found = await wait_rows(db, device.unique_id, 2)
    assert has_point(found, START[0] + 2 * STEP, START[1] + 2 * STEP)

    # The driver's own "stop" is the one that is remembered.
    await page.click("#share")
    await expect(page.locator("#sharing-state")).to_have_text("off")
    assert await page.evaluate("localStorage.getItem('tracker.driver.sharing')") is None
    await page.reload()
    await expect(page.locator("#app")).to_be_visible()
    await expect(page.locator("#sharing-state")).to_have_text("off")
    assert phone.errors == [] and phone.external == []


async def test_server_trouble_keeps_pings_and_refusals_drop_them_visibly(
    phone: Phone, device: DeviceCreds, db: asyncpg.Pool
) -> None:
    page = phone.page
    await sign_in(page, device.token)
    await start_sharing(page)
    await wait_rows(db, device.unique_id, 1)
    attempts: list[int] = []

    async def unavailable(route: Route) -> None:
        attempts.append(len(json.loads(route.request.post_data or "{}").get("positions", [])))
        await route.fulfill(
            status=503,
            headers={"Retry-After": "1"},
            content_type="application/json",
            body='{"error":"unavailable","message":"database unavailable, retry later"}',
        )

    await page.route("**/api/v1/positions", unavailable)
    kept = [(START[0] + (i + 1) * STEP, START[1] - STEP) for i in range(3)]
    for i, (lat, lon) in enumerate(kept):
        await asyncio.sleep(0.2)
        await phone.move(lat, lon)
        await expect(page.locator("#queue-count")).to_have_text(str(i + 1))
    await asyncio.sleep(2.5)
    assert len(attempts) >= 2, "a 503 is retried"
    await expect(page.locator("#queue-count")).to_have_text("3")
    assert len(await stored_positions(db, device.unique_id)) == 1
    await page.unroute("**/api/v1/positions", unavailable)
    await expect(page.locator("#queue-count")).to_have_text("0", timeout=20_000)
    found = await stored_positions(db, device.unique_id)
    assert all(has_point(found, lat, lon) for lat, lon in kept)

    # A refusal of the pings themselves would repeat forever: drop them and say so.
    async def refused(route: Route) -> None:
        await route.fulfill(
            status=422,
            content_type="application/json",
            body='{"error":"invalid_ping","message":"time: 900 s in the future (limit 600 s)"}',
        )

    await page.route("**/api/v1/positions", refused)
    await asyncio.sleep(0.2)
    await phone.move(START[0] + 0.001, START[1])
    await expect(page.locator("#notes")).to_contain_text("dropped")
    await expect(page.locator("#notes")).to_contain_text("in the future")
    await expect(page.locator("#queue-count")).to_have_text("0")
    await page.unroute("**/api/v1/positions", refused)
    assert not has_point(await stored_positions(db, device.unique_id), START[0] + 0.001, START[1])

    # A refused token keeps the pings until the driver signs in again.
    async def revoked(route: Route) -> None:
        await route.fulfill(
            status=401,
            content_type="application/json",
            body='{"error":"unknown_device","message":"no device has this token"}',
        )

    await page.route("**/api/v1/positions", revoked)
    await asyncio.sleep(0.2)
    await phone.move(START[0] + 0.0011, START[1])
    await expect(page.locator("#signin")).to_be_visible()
    await expect(page.locator("#signin-error")).to_contain_text("Locations are kept")
    await expect(page.locator("#queue-count")).to_have_text("1")
    await page.unroute("**/api/v1/positions", revoked)
    await sign_in(page, device.token)
    await expect(page.locator("#queue-count")).to_have_text("0", timeout=20_000)
    assert has_point(await stored_positions(db, device.unique_id), START[0] + 0.0011, START[1])
    assert phone.external == []


async def create_route(server: Server, device: DeviceCreds) -> dict[str, Any]:
    stops = [
        {
            "lat": 48.1392,
            "lon": 11.5802,
            "name": "Bakery Huber",
            "recipient": "A. Huber",
            "service_s": 120,
        },
        {
            "lat": 48.1420,
            "lon": 11.5860,
            "name": "Flat 3B, Residenzstr. 1",
            "recipient": "B. Maier",
            "service_s": 60,
        },
        {
            "lat": 48.1455,
            "lon": 11.5905,
            "name": "Office Park",
            "recipient": "C. Schmid",
            "service_s": 90,
        },
    ]
    body = {
        "device": device.unique_id,
        "planned_start": datetime.now(UTC).isoformat(),
        "stops": stops,
        "path": None,
    }
    async with server.admin() as client:
        r = await client.post("/api/v1/routes", json=body)
    assert r.status_code == 201, r.text
    route: dict[str, Any] = r.json()
    return route


async def read_route(server: Server, route_id: int) -> dict[str, Any]:
    async with server.admin() as client:
        r = await client.get(f"/api/v1/routes/{route_id}")
    assert r.status_code == 200, r.text
    route: dict[str, Any] = r.json()
    return route


def stop_item(page: Page, stop_id: int) -> Any:
    return page.locator(f'#stops li[data-stop-id="{stop_id}"]')


async def test_the_stop_list_and_its_buttons(
    phone: Phone, server: Server, device: DeviceCreds
) -> None:
    route = await create_route(server, device)
    first, second, third = (s["id"] for s in route["stops"])
    page = phone.page
    # A dispatcher can hand the driver a link; the token stays out of server logs.
    await page.goto(f"{server.base_url}/driver#token={device.token}")
    await expect(page.locator("#app")).to_be_visible()
    assert "token" not in page.url

    items = page.locator("#stops > li")
    await expect(items).to_have_count(3)
    await expect(items.locator(".stop-name")).to_have_text(
        ["Bakery Huber", "Flat 3B, Residenzstr. 1", "Office Park"]
    )
    await expect(stop_item(page, first)).to_have_class("stop stop-pending stop-next")
    await expect(page.locator(".stop-next")).to_have_count(1)

    await stop_item(page, first).get_by_role("button", name="Arrived").click()
    await expect(stop_item(page, first).locator(".stop-status")).to_have_text("arrived")
    await expect(stop_item(page, first).locator(".stop-sync")).to_be_hidden(timeout=10_000)
    assert (await read_route(server, route["id"]))["stops"][0]["status"] == "arrived"
    await expect(stop_item(page, first).get_by_role("button", name="Arrived")).to_have_count(0)

    # Delivered (no proof asked for, no position known): shown at once, sent after the undo
    # window (TRACKER_UNDO_S), which an Undo button offers meanwhile.
    await stop_item(page, first).get_by_role("button", name="Delivered").click()
    await expect(stop_item(page, first).locator(".stop-status")).to_have_text("delivered")
    await expect(stop_item(page, second)).to_have_class("stop stop-pending stop-next")
    await expect(stop_item(page, first).locator("button")).to_have_text(["Undo"])
    await expect(stop_item(page, first).locator(".stop-sync")).to_be_hidden(timeout=20_000)
    await expect(stop_item(page, first).locator("button")).to_have_count(0)
    assert (await read_route(server, route["id"]))["stops"][0]["status"] == "completed"

    item = stop_item(page, second)
    await item.get_by_role("button", name="Failed…").click()
    await expect(item.locator(".fail-form")).to_be_visible()
    await item.get_by_role("button", name="Mark failed").click()  # no reason: not sent
    await expect(item.locator(".fail-form .form-error")).to_have_text("Choose why it failed.")
    await expect(item.locator(".stop-status")).to_have_text("to do")
    await item.get_by_label("Not home").check()
    await item.locator(".fail-reason").fill("card left")
    await item.get_by_role("button", name="Mark failed").click()
    await expect(item.locator(".stop-status")).to_have_text("failed")
    await expect(item.locator(".stop-meta")).to_have_text("Failed: Not home")
    await expect(item.locator(".stop-sync")).to_be_hidden(timeout=20_000)
    stored = (await read_route(server, route["id"]))["stops"][1]
    assert (stored["status"], stored["reason"]) == ("failed", "not home: card left")
    assert stored["outcome"]["next_step"] == "retry_today"
    await expect(stop_item(page, third)).to_have_class("stop stop-pending stop-next")

    # The dispatcher closes the last stop meanwhile: the driver's stale button gets a 409.
    async with server.admin() as client:
        r = await client.patch(
            f"/api/v1/routes/{route['id']}/stops/{third}", json={"status": "completed"}
        )
    assert r.status_code == 200
    await stop_item(page, third).get_by_role("button", name="Arrived").click()
    await expect(page.locator("#notes")).to_contain_text("Stop not updated")
    await expect(stop_item(page, third).locator(".stop-status")).to_have_text("delivered")
    # That completed the route: the page shows how it ended rather than an empty list.
    await expect(page.locator("#route-state")).to_contain_text("3 of 3 stops done (completed)")
    await expect(page.locator("#stops button")).to_have_count(0)

    # Phone-sized: nothing wider than the screen, every button big enough for a thumb.
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"]
    for box in [await b.bounding_box() for b in await page.locator("button:visible").all()]:
        assert box is not None and box["height"] >= 44
    await page.screenshot(path=str(ARTIFACTS / "driver_stops.png"), full_page=True)
    assert phone.errors == [] and phone.external == []


async def test_a_wrong_token_is_refused_at_sign_in(phone: Phone) -> None:
    page = phone.page
    await page.fill("#signin-token", "not-a-device-token")
    await page.click("#signin-submit")
    await expect(page.locator("#signin-error")).to_contain_text("Sign-in refused")
    await expect(page.locator("#app")).to_be_hidden()
