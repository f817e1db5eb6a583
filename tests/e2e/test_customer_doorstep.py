"""The customer's side of the doorstep in a real headless Chromium (phone-sized): the window
and PIN, delivery instructions and a safe place the driver then sees, a request to move the
delivery that the dispatcher confirms, after a failure the reason and the next step, after
delivery the proof (photo, name, time) and a rating with a comment."""

from __future__ import annotations

import base64
import io
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from PIL import Image
from playwright.async_api import expect

from tests.conftest import ARTIFACTS, DeviceCreds, Server, ServerFactory, add_device
from tests.e2e.conftest import TILES, BrowserTab

pytestmark = pytest.mark.e2e
TIMEOUT_MS = 10_000
LAT, LON = 48.137, 11.575


@pytest.fixture
async def srv(server_factory: ServerFactory) -> Server:
    return await server_factory(tile_url=TILES, tile_attribution="Test tiles", tick_ms=50.0)


def photo() -> str:
    out = io.BytesIO()
    Image.new("RGB", (400, 300), (30, 140, 90)).save(out, "JPEG")
    return "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode()


async def report(srv: Server, dev: DeviceCreds, route: dict[str, Any], k: int, **body: Any) -> None:
    stop = route["stops"][k]
    async with srv.client() as client:
        r = await client.post(
            f"/api/v1/routes/{route['id']}/stops/{stop['id']}/report",
            json={
                "client_id": str(uuid.uuid4()),
                "time": datetime.now(UTC).isoformat(),
                "location": {"lat": stop["lat"], "lon": stop["lon"]},
                **body,
            },
            headers=dev.headers,
        )
    assert r.status_code == 200, r.text


async def test_customer_instructions_reschedule_proof_and_rating(
    tab: BrowserTab, srv: Server, db: asyncpg.Pool
) -> None:
    page = tab.page
    await page.set_viewport_size({"width": 390, "height": 844})
    dev = await add_device(srv)
    stops = [
        {
            "lat": LAT,
            "lon": LON,
            "name": "Residenzstr. 1",
            "recipient": "Anna",
            "email": "anna@example.org",
            "proof": ["photo", "name"],
            "window_start": "2026-12-04T09:00:00Z",
            "window_end": "2026-12-04T11:00:00Z",
            "reschedule_windows": [
                {"window_start": "2026-12-05T15:00:00Z", "window_end": "2026-12-05T17:00:00Z"}
            ],
            "pickup_points": [{"name": "Kiosk Odeonsplatz", "address": "Odeonsplatz 2"}],
        },
        {
            "lat": LAT,
            "lon": LON + 0.004,
            "name": "Hofgraben 4",
            "recipient": "Bo",
            "pickup_points": [{"name": "Kiosk Odeonsplatz", "address": "Odeonsplatz 2"}],
        },
    ]
    async with srv.admin() as client:
        r = await client.post(
            "/api/v1/routes",
            json={
                "device": dev.unique_id,
                "planned_start": datetime.now(UTC).isoformat(),
                "stops": stops,
                "path": None,
            },
        )
    assert r.status_code == 201, r.text
    route = r.json()
    first, second = route["stops"]

    await page.goto(first["tracking_url"].replace("http://127.0.0.1:8000", srv.base_url))
    await expect(page.locator("#window")).to_have_text("Delivery window: Fri 4 Dec, 09:00–11:00")
    # Instructions and a safe place: saved, and the driver's route shows them.
    await page.fill("#instructions", "Ring the bell at the back")
    await page.fill("#safe-place", "Garage, left side")
    await page.click("#instructions-form button")
    await expect(page.locator("#instructions-state")).to_have_text("Saved: the driver will see it.")
    async with srv.client() as client:
        mine = (await client.get("/api/v1/routes/current", headers=dev.headers)).json()
    assert mine["stops"][0]["instructions"] == "Ring the bell at the back"
    assert mine["stops"][0]["safe_place"] == "Garage, left side"

    # Move it to the pickup point; the dispatcher confirms.
    await expect(page.locator("#reschedule-options .option")).to_have_count(2)
    await page.get_by_label("Pickup point: Kiosk Odeonsplatz, Odeonsplatz 2").check()
    await page.click("#reschedule-form button")
    await expect(page.locator("#reschedule-state")).to_have_text(
        "Your request (pickup at Kiosk Odeonsplatz): waiting for confirmation."
    )
    await expect(page.locator("#reschedule-form")).to_be_hidden()
    await page.screenshot(path=str(ARTIFACTS / "customer_reschedule.png"), full_page=True)
    async with srv.admin() as client:
        waiting = (await client.get("/api/v1/reschedules?status=pending")).json()["requests"]
        request = next(q for q in waiting if q["stop_id"] == first["id"])
        assert request["pickup_point"]["name"] == "Kiosk Odeonsplatz"
        r = await client.post(f"/api/v1/reschedules/{request['id']}", json={"decision": "confirm"})
        assert r.status_code == 200
    await page.reload()
    await expect(page.locator("#reschedule-state")).to_have_text(
        "Your request (pickup at Kiosk Odeonsplatz): confirmed."
    )

    # Delivered with proof: the page turns to Delivered live and shows the proof.
    await report(
        srv, dev, route, 0, status="completed", proof={"photo": photo(), "name": "Anna's neighbour"}
    )
    await expect(page.locator("#phase")).to_have_text("Delivered", timeout=TIMEOUT_MS)
    await expect(page.locator("#proof-text")).to_contain_text("received by Anna's neighbour")
    img = page.locator("#proof-images img.proof-photo")
    await expect(img).to_have_count(1)
    await page.wait_for_function(
        "() => { const i = document.querySelector('#proof-images img.proof-photo');"
        " return i && i.complete && i.naturalWidth === 400; }"
    )
    await expect(page.locator("#instructions-card button")).to_be_disabled()
    # A rating with a comment.
    await page.get_by_label("4 stars").check()
    await page.fill("#rating-comment", "Friendly and quick")
    await page.click("#rating-form button")
    await expect(page.locator("#rating-state")).to_have_text(
        "Thank you: you rated this delivery 4 of 5."
    )
    await expect(page.locator("#rating-form")).to_be_hidden()
    row = await db.fetchrow("SELECT stars, comment FROM ratings WHERE stop_id = $1", first["id"])
    assert (row["stars"], row["comment"]) == (4, "Friendly and quick")
    await page.screenshot(path=str(ARTIFACTS / "customer_delivered.png"), full_page=True)

    # The other customer: not home, left at the pickup point; the page says so and what next.
    await report(
        srv, dev, route, 1, status="failed", reason_code="not_home", next_step="pickup_point"
    )
    await page.goto(second["tracking_url"].replace("http://127.0.0.1:8000", srv.base_url))
    await expect(page.locator("#phase")).to_have_text("Not delivered")
    await expect(page.locator("#failure-reason")).to_have_text("Reason: nobody was home.")
    await expect(page.locator("#failure-next")).to_have_text(
        "What happens next: your parcel waits for you at a pickup point."
    )
    await expect(page.locator("#proof-card")).to_be_hidden()
    await page.screenshot(path=str(ARTIFACTS / "customer_failed.png"), full_page=True)
    assert tab.errors == []
    assert all(url.startswith("https://tiles.invalid/") for url in tab.external)
