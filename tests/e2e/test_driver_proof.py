"""Proof of delivery on the driver page, in a real headless Chromium on a phone screen.

The camera is emulated by handing the photo input a real JPEG (set_input_files, what the
phone's camera gives the page through <input type=file capture>); the signature is drawn
with the mouse on the canvas. Everything is done offline, kept on the phone, and checked in
PostgreSQL once the phone is back online; a mistaken tap is undone; completing far from the
stop asks why.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from PIL import Image
from playwright.async_api import Browser, Page, expect

from tests.conftest import ARTIFACTS, Server, ServerFactory, add_device
from tests.e2e.conftest import LOCAL
from tests.e2e.test_driver_page import PHONE

pytestmark = pytest.mark.e2e

STOP1 = (48.1392, 11.5802)
STOP2 = (48.1420, 11.5860)
STOP3 = (48.1455, 11.5905)


def camera_jpeg() -> bytes:
    image = Image.new("RGB", (2400, 1800), (180, 120, 60))
    for x in range(0, 2400, 40):
        for y in range(900, 1000):
            image.putpixel((x, y), (255, 255, 255))
    exif = Image.Exif()
    exif[0x010F] = "EmulatedCam"  # Make
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90, exif=exif.tobytes())
    return out.getvalue()


@pytest.fixture
async def quick_server(server_factory: ServerFactory) -> Server:
    # A short undo window, so the test need not wait ten seconds per action.
    return await server_factory(undo_s=2.0)


@pytest.fixture
async def driver(browser: Browser, quick_server: Server) -> AsyncIterator[tuple[Page, Any]]:
    context = await browser.new_context(
        viewport=PHONE,
        is_mobile=True,
        has_touch=True,
        locale="en-GB",
        timezone_id="UTC",
        geolocation={"latitude": STOP1[0], "longitude": STOP1[1], "accuracy": 5},
    )
    await context.grant_permissions(["geolocation"], origin=quick_server.base_url)
    external: list[str] = []

    async def refuse(route: Any) -> None:
        external.append(route.request.url)
        await route.abort()

    await context.route(lambda url: not LOCAL.match(url), refuse)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    ARTIFACTS.mkdir(exist_ok=True)
    yield page, context
    await context.close()
    assert errors == [] and external == []


async def make_route(srv: Server, unique_id: str) -> dict[str, Any]:
    stops = [
        {
            "lat": STOP1[0],
            "lon": STOP1[1],
            "name": "Bakery Huber",
            "recipient": "A. Huber",
            "address": "Sendlinger Str. 10, München",
            "phone": "+49 89 555 0101",
            "notes": "Side door, ring twice",
            "proof": ["photo", "signature", "name"],
            "window_start": "2026-12-04T09:00:00Z",
            "window_end": "2026-12-04T10:00:00Z",
            "parcels": [
                {"ref": "PKG-1", "description": "2 boxes of flour"},
                {"ref": "RET-9", "description": "empty crates", "action": "collect"},
            ],
        },
        {"lat": STOP2[0], "lon": STOP2[1], "name": "Flat 3B", "recipient": "B. Maier"},
        {"lat": STOP3[0], "lon": STOP3[1], "name": "Office Park", "recipient": "C. Schmid"},
    ]
    async with srv.admin() as client:
        r = await client.post(
            "/api/v1/routes",
            json={
                "device": unique_id,
                "planned_start": datetime.now(UTC).isoformat(),
                "stops": stops,
                "path": None,
            },
        )
    assert r.status_code == 201, r.text
    route: dict[str, Any] = r.json()
    return route


def item(page: Page, stop_id: int) -> Any:
    return page.locator(f'#stops li[data-stop-id="{stop_id}"]')


async def sign(page: Page, canvas: Any) -> None:
    box = await canvas.bounding_box()
    assert box is not None
    x0, y0 = box["x"] + 20, box["y"] + box["height"] / 2
    await page.mouse.move(x0, y0)
    await page.mouse.down()
    for k in range(1, 25):
        await page.mouse.move(x0 + k * 10, y0 + (15 if k % 2 else -15))
    await page.mouse.up()


async def test_proof_offline_undo_and_far_away(
    driver: tuple[Page, Any], quick_server: Server, db: asyncpg.Pool
) -> None:
    page, context = driver
    srv = quick_server
    device = await add_device(srv)
    route = await make_route(srv, device.unique_id)
    first, second, third = (s["id"] for s in route["stops"])
    await page.goto(f"{srv.base_url}/driver#token={device.token}")
    await expect(page.locator("#stops > li")).to_have_count(3)

    # What the driver needs at the door.
    one = item(page, first)
    await expect(one.locator(".stop-address")).to_have_text("Sendlinger Str. 10, München")
    await expect(one.locator(".stop-window")).to_have_text("Window 09:00–10:00")
    await expect(one.locator(".stop-notes")).to_have_text("Notes: Side door, ring twice")
    await expect(one.locator(".parcel")).to_have_text(
        ["Hand over: PKG-1 — 2 boxes of flour", "Collect: RET-9 — empty crates"]
    )
    assert await one.locator("a.call").get_attribute("href") == "tel:+49895550101"
    geo = await one.locator("a.nav-geo").get_attribute("href")
    assert geo is not None and geo.startswith(f"geo:{STOP1[0]},{STOP1[1]}?q=")
    google = await one.locator("a.nav-google").get_attribute("href")
    assert google == f"https://www.google.com/maps/dir/?api=1&destination={STOP1[0]},{STOP1[1]}"
    assert await one.locator("a.nav-apple").get_attribute("href") is not None

    await page.click("#share")
    await expect(page.locator("#sharing-state")).to_have_text("on")
    await expect(page.locator("#queue-count")).to_have_text("0", timeout=10_000)

    # Offline from here on: the whole delivery is done without a network.
    await context.set_offline(True)
    await expect(page.locator("#net")).to_have_text("offline")
    await one.get_by_role("button", name="Delivered").click()
    form = one.locator(".done-form")
    await expect(form).to_be_visible()
    await form.get_by_role("button", name="Confirm delivery").click()
    await expect(form.locator(".form-error")).to_have_text("Take a photo of the delivery.")
    await form.locator(".photo-input").set_input_files(
        {"name": "camera.jpg", "mimeType": "image/jpeg", "buffer": camera_jpeg()}
    )
    await expect(form.locator(".photo-preview")).to_be_visible()
    await form.get_by_role("button", name="Confirm delivery").click()
    await expect(form.locator(".form-error")).to_have_text("Ask the customer to sign.")
    await sign(page, form.locator("canvas.signature"))
    await form.get_by_label("Received by").fill("A. Huber")
    await page.screenshot(path=str(ARTIFACTS / "driver_proof_form.png"), full_page=True)
    await form.get_by_role("button", name="Confirm delivery").click()
    await expect(one.locator(".stop-status")).to_have_text("delivered")
    await expect(one.locator(".sync-text")).to_contain_text("Sending in")
    await expect(one.locator(".sync-text")).to_have_text(
        "Waiting to send (kept on this phone)", timeout=10_000
    )

    # At the next stop, a mistaken tap, undone within the window: nothing is ever sent.
    await context.set_geolocation({"latitude": STOP2[0], "longitude": STOP2[1], "accuracy": 5})
    await page.wait_for_timeout(1500)  # the new fix reaches the page
    two = item(page, second)
    await two.get_by_role("button", name="Failed…").click()
    await two.get_by_label("Refused").check()
    await two.get_by_role("button", name="Mark failed").click()
    await expect(two.locator(".stop-status")).to_have_text("failed")
    await two.get_by_role("button", name="Undo").click()
    await expect(two.locator(".stop-status")).to_have_text("to do")
    await expect(page.locator("#notes")).to_contain_text("Undone: nothing was sent.")
    # Then the real outcome: nobody home, leave it at a pickup point.
    await two.get_by_role("button", name="Failed…").click()
    await two.get_by_label("Not home").check()
    await two.locator(".next-step").select_option("pickup_point")
    await two.get_by_role("button", name="Mark failed").click()
    await expect(two.locator(".stop-status")).to_have_text("failed")
    await expect(page.locator("#action-count")).to_have_text("2")
    await page.screenshot(path=str(ARTIFACTS / "driver_offline_queue.png"), full_page=True)
    await asyncio.sleep(2.5)  # past the undo window, still offline
    assert (
        await db.fetchval(
            "SELECT count(*) FROM stop_reports r JOIN stops s ON s.id = "
            "r.stop_id WHERE s.route_id = $1",
            route["id"],
        )
        == 0
    )

    # Back online: both reports go out, with their proof, and nothing is lost.
    await context.set_offline(False)
    await expect(page.locator("#action-count")).to_have_text("0", timeout=20_000)
    stops = {
        r["id"]: r
        for r in await db.fetch(
            "SELECT id, status, reason, outcome FROM stops WHERE route_id = $1", route["id"]
        )
    }
    assert stops[first]["status"] == "completed"
    assert stops[first]["outcome"]["recipient_name"] == "A. Huber"
    assert stops[first]["outcome"]["distance_m"] < 50
    proofs = {
        r["kind"]: r
        for r in await db.fetch(
            "SELECT kind, media_type, data, width, height FROM proofs WHERE stop_id = $1", first
        )
    }
    assert set(proofs) == {"photo", "signature"}
    assert proofs["photo"]["media_type"] == "image/jpeg"
    assert max(proofs["photo"]["width"], proofs["photo"]["height"]) <= 1600  # shrunk on the phone
    assert b"EmulatedCam" not in bytes(proofs["photo"]["data"])
    with Image.open(io.BytesIO(bytes(proofs["signature"]["data"]))) as sig:
        # Something was drawn: the canvas is not blank.
        assert sig.getbbox() is not None
    assert stops[second]["status"] == "failed" and stops[second]["reason"] == "not home"
    assert stops[second]["outcome"]["next_step"] == "pickup_point"
    assert await db.fetchval("SELECT count(*) FROM stop_reports WHERE stop_id = $1", second) == 1

    # Far from the last stop (1 km away): the page asks why before anything is queued.
    await context.set_geolocation(
        {"latitude": STOP3[0] + 0.009, "longitude": STOP3[1], "accuracy": 5}
    )
    three = item(page, third)
    await page.wait_for_timeout(1500)  # the new fix reaches the page
    await three.get_by_role("button", name="Delivered").click()
    far = three.locator(".done-form .far")
    await expect(far).to_be_visible()
    await expect(far).to_contain_text("m from this stop. Why here?")
    await three.get_by_role("button", name="Confirm delivery").click()
    await expect(three.locator(".done-form .form-error")).to_have_text(
        "Say why you are completing it here."
    )
    await far.locator("input").fill("Handed over at the gate, site closed")
    await three.get_by_role("button", name="Confirm delivery").click()
    await expect(three.locator(".stop-status")).to_have_text("delivered")
    await expect(three.locator(".stop-sync")).to_be_hidden(timeout=20_000)
    outcome = await db.fetchval("SELECT outcome FROM stops WHERE id = $1", third)
    assert outcome["far_reason"] == "Handed over at the gate, site closed"
    assert outcome["distance_m"] > 900
    await expect(page.locator("#route-state")).to_contain_text("3 of 3 stops done")
    await page.screenshot(path=str(ARTIFACTS / "driver_done.png"), full_page=True)


async def test_a_report_queued_offline_survives_closing_the_page(
    driver: tuple[Page, Any], quick_server: Server, db: asyncpg.Pool
) -> None:
    page, context = driver
    srv = quick_server
    device = await add_device(srv)
    route = await make_route(srv, device.unique_id)
    second = route["stops"][1]["id"]
    await page.goto(f"{srv.base_url}/driver#token={device.token}")
    await expect(page.locator("#stops > li")).to_have_count(3)
    await context.set_geolocation({"latitude": STOP2[0], "longitude": STOP2[1], "accuracy": 5})
    await context.set_offline(True)
    two = item(page, second)
    await two.get_by_role("button", name="Failed…").click()
    await two.get_by_label("No access").check()
    await two.locator(".next-step").select_option("return_to_depot")
    await two.get_by_role("button", name="Mark failed").click()
    await expect(page.locator("#action-count")).to_have_text("1")
    await page.close()  # the driver closes the browser while offline

    await context.set_offline(False)
    again = await context.new_page()
    await again.goto(f"{srv.base_url}/driver")
    for _ in range(200):  # the reopened page sends what the closed one kept
        row = await db.fetchrow("SELECT status, reason, outcome FROM stops WHERE id = $1", second)
        if row["status"] != "pending":
            break
        await asyncio.sleep(0.1)
    await expect(again.locator("#action-count")).to_have_text("0")
    assert (row["status"], row["reason"]) == ("failed", "no access")
    assert row["outcome"]["next_step"] == "return_to_depot"
