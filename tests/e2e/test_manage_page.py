"""The management page and the API docs page in a real headless Chromium against a real
server: sign in, add a device and see its setup QR codes, disable it, give it a new token,
list routes by day, cancel one and reassign another, create and revoke a dispatcher key
(and see a refused action's server text); /docs renders the OpenAPI document with Swagger
UI served locally. Screenshots go to artifacts/."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from playwright.async_api import Browser, Page, expect

from tests.conftest import ADMIN_TOKEN, ARTIFACTS, Server, add_device
from tests.e2e.conftest import BrowserTab
from tests.integration.test_routes_api import create_route, route_body

pytestmark = pytest.mark.e2e

TIMEOUT_MS = 10_000


async def sign_in(page: Page, srv: Server, token: str = ADMIN_TOKEN) -> None:
    await page.goto(f"{srv.base_url}/manage")
    await page.fill("#signin-token", token)
    await page.keyboard.press("Enter")  # keyboard only
    await expect(page.locator("#who")).to_contain_text("signed in as", timeout=TIMEOUT_MS)


async def test_devices_keys_and_routes_from_the_page(srv: Server, tab: BrowserTab) -> None:
    page = tab.page
    page.on("dialog", lambda dialog: dialog.accept())
    van_a = await add_device(srv, "Van A")
    van_b = await add_device(srv, "Van B")
    today = datetime.now(UTC).replace(hour=8, minute=0, second=0, microsecond=0)
    cancel_me = await create_route(srv, route_body(van_a, today))
    move_me = await create_route(srv, route_body(van_b, today + timedelta(hours=1)))
    await sign_in(page, srv)

    # Routes of today, newest first; cancel the first van's, hand the second van's over.
    rows = page.locator("#route-table tbody tr")
    await expect(rows).to_have_count(2, timeout=TIMEOUT_MS)
    await expect(page.locator("#route-total")).to_have_text("Routes 1–2 of 2")
    cancel_row = page.locator(f'tr[data-route="{cancel_me["id"]}"]')
    await cancel_row.get_by_role("button", name="Cancel").click()
    await expect(page.locator("#notice")).to_have_text(f"Route {cancel_me['id']} cancelled.")
    await expect(cancel_row).to_contain_text("cancelled")
    move_row = page.locator(f'tr[data-route="{move_me["id"]}"]')
    await move_row.get_by_label(f"Van for route {move_me['id']}").select_option(van_a.unique_id)
    await move_row.get_by_role("button", name="Reassign").click()
    await expect(page.locator("#notice")).to_contain_text(f"is now {van_a.unique_id}'s")
    await expect(move_row).to_contain_text(van_a.unique_id)
    # Filter: only cancelled routes.
    await page.select_option("#route-status", "cancelled")
    await page.get_by_role("button", name="Show").click()
    await expect(rows).to_have_count(1)
    await page.screenshot(path=str(ARTIFACTS / "manage-routes.png"), full_page=True)

    # Add a device: its setup links and QR codes appear once.
    await page.fill("#device-name", "Van C")
    await page.fill("#device-uid", "van-c-e2e")
    await page.get_by_role("button", name="Add device").click()
    setup = page.locator("#setup")
    await expect(setup).to_be_visible(timeout=TIMEOUT_MS)
    await expect(setup.locator("img")).to_have_count(3)
    traccar = setup.get_by_role("link").first
    href = await traccar.get_attribute("href")
    assert href is not None and href.startswith("org.traccar.client://setup?")
    assert "id=van-c-e2e" in href
    loaded = await setup.locator("img").first.evaluate(
        "img => img.complete && img.naturalWidth > 0"
    )
    assert loaded, "the QR code image did not render"
    await page.screenshot(path=str(ARTIFACTS / "manage-device-setup.png"), full_page=True)
    token = await page.locator("#setup-token").text_content()
    await page.get_by_role("button", name="Done").click()

    # Disable it, then give it a new token: the old one stops working.
    row = page.locator('tr[data-device="van-c-e2e"]')
    await row.get_by_role("button", name="Disable").click()
    await expect(row).to_contain_text("disabled")
    await row.get_by_role("button", name="New token").click()
    await expect(setup).to_be_visible()
    fresh = await page.locator("#setup-token").text_content()
    assert fresh and token and fresh != token

    # Keys: create one, see it listed, revoke it.
    await page.fill("#key-name", "Late shift")
    await page.get_by_role("button", name="Create key").click()
    await expect(page.locator("#key-new")).to_contain_text("Late shift")
    key_text = await page.locator("#key-new").text_content()
    assert key_text is not None
    key = key_text.rsplit(": ", 1)[1]
    key_row = page.locator("#key-table tbody tr", has_text="Late shift")
    await key_row.get_by_role("button", name="Revoke").click()
    await expect(key_row).to_contain_text("revoked")
    async with srv.client(headers={"Authorization": f"Bearer {key}"}) as client:
        assert (await client.get("/api/v1/devices")).status_code == 401

    # A refused action shows the server's words: a duplicate unique id.
    await page.fill("#device-name", "Van C again")
    await page.fill("#device-uid", "van-c-e2e")
    await page.get_by_role("button", name="Add device").click()
    await expect(page.locator("#error")).to_have_text("device van-c-e2e already exists")
    assert tab.external == [] and tab.errors == []


async def test_dispatcher_sees_no_admin_controls_on_a_phone(srv: Server, tab: BrowserTab) -> None:
    page = tab.page
    await page.set_viewport_size({"width": 390, "height": 844})
    await add_device(srv, "Phone van")
    async with srv.admin() as client:
        key = (await client.post("/api/v1/keys", json={"name": "phone"})).json()["key"]
    await sign_in(page, srv, key)
    await expect(page.locator("#who")).to_have_text("signed in as dispatcher")
    await expect(page.locator("#device-add")).to_be_hidden()
    await expect(page.locator("#keys-title")).to_be_hidden()
    await expect(page.locator("#device-table tbody")).to_contain_text("Phone van")
    await expect(page.locator("#device-table tbody button")).to_have_count(0)
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, "the page scrolls sideways on a phone"
    await page.screenshot(path=str(ARTIFACTS / "manage-phone.png"), full_page=True)


async def test_wrong_token_shows_the_servers_message(srv: Server, tab: BrowserTab) -> None:
    page = tab.page
    await page.goto(f"{srv.base_url}/manage")
    await page.fill("#signin-token", "not-a-key")
    await page.keyboard.press("Enter")
    await expect(page.locator("#error")).not_to_be_empty(timeout=TIMEOUT_MS)
    assert await page.locator("#app").is_hidden()


async def test_api_docs_page_renders_the_document_locally(srv: Server, tab: BrowserTab) -> None:
    page = tab.page
    await page.goto(f"{srv.base_url}/docs")
    await expect(page.locator(".swagger-ui .info .title")).to_contain_text(
        "tracker", timeout=TIMEOUT_MS
    )
    await expect(page.locator("#operations-routes-listRoutes")).to_be_visible()
    await expect(page.locator("#operations-keys-revokeKey")).to_be_visible()
    await page.screenshot(path=str(ARTIFACTS / "api-docs.png"))
    assert tab.external == [], tab.external
    assert tab.errors == [], tab.errors


async def test_revoking_a_key_disconnects_its_open_map(
    srv: Server, tab: BrowserTab, browser: Browser
) -> None:
    """The admin revokes a dispatcher's key on /manage; that dispatcher's open map is
    disconnected and asks to sign in again."""
    async with srv.admin() as client:
        made = (await client.post("/api/v1/keys", json={"name": "Night desk"})).json()
    other = await browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        r = await other.request.post(f"{srv.base_url}/api/v1/session", data={"token": made["key"]})
        assert r.ok, await r.text()
        night = await other.new_page()
        await night.goto(f"{srv.base_url}/map")
        await expect(night.locator("#conn")).to_have_attribute(
            "data-state", "live", timeout=TIMEOUT_MS
        )
        page = tab.page
        page.on("dialog", lambda dialog: dialog.accept())
        await sign_in(page, srv)
        row = page.locator(f'#key-table tbody tr[data-key="{made["id"]}"]')
        await row.get_by_role("button", name="Revoke").click()
        await expect(row).to_contain_text("revoked", timeout=TIMEOUT_MS)
        await expect(night.locator("#conn")).to_have_attribute(
            "data-state", "signed-out", timeout=TIMEOUT_MS
        )
        await expect(night.locator("#signin")).to_be_visible()
        await night.screenshot(path=str(ARTIFACTS / "map-key-revoked.png"))
    finally:
        await other.close()
