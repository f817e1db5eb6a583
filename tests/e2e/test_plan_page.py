"""The planning page in a real headless Chromium against a real server, PostGIS with
Monaco's roads (pgRouting) and VROOM: drop a CSV of 50 orders, edit one, filter, add a depot
and vans, optimise (routes on the roads, one colour per van, an unassigned order with its
reason); before dispatch drag a stop to the other van, reorder it and unassign it from the
keyboard, force the crane order onto a van and see what it breaks; dispatch the edited
proposal, then drag a stop to the other van and see the server re-evaluate both routes.
Screenshots go to artifacts/."""

from __future__ import annotations

import random
import re
from collections.abc import AsyncIterator
from datetime import date, timedelta
from pathlib import Path

import pytest
from playwright.async_api import Locator, expect

from tests.conftest import (
    ADMIN_TOKEN,
    ARTIFACTS,
    DATA,
    Server,
    ServerFactory,
    add_device,
    own_database,
)
from tests.e2e.conftest import TILES, BrowserTab
from tracker.tools.roads import import_file

pytestmark = pytest.mark.e2e

TIMEOUT_MS = 30_000
MONACO = DATA / "osm" / "monaco.osm.gz"
DEPOT = (43.7350, 7.4200)
# Monaco's streets: orders are scattered around these.
CENTRES = [
    (43.7396, 7.4275),
    (43.7375, 7.4215),
    (43.7310, 7.4190),
    (43.7440, 7.4330),
    (43.7330, 7.4160),
    (43.7365, 7.4250),
    (43.7410, 7.4250),
    (43.7455, 7.4290),
]


@pytest.fixture(scope="module")
async def monaco_url() -> AsyncIterator[str]:
    async with own_database("planpage") as url:
        await import_file(url, MONACO)
        yield url


@pytest.fixture
async def plan_srv(monaco_url: str, server_factory: ServerFactory) -> Server:
    return await server_factory(database_url=monaco_url, tile_url=TILES, tile_attribution="Test")


def orders_csv(day: date, count: int) -> str:
    rng = random.Random(7)
    lines = ["order_id,recipient,address,lat,lon,date,window_start,window_end,parcels,skills"]
    for k in range(count):
        lat, lon = CENTRES[k % len(CENTRES)]
        lat += rng.uniform(-0.0015, 0.0015)
        lon += rng.uniform(-0.0015, 0.0015)
        skills = "crane" if k == count - 1 else ""  # no van has a crane: unassigned
        place = f"Rue {k} Monaco,{lat:.5f},{lon:.5f}"
        lines.append(f"MC-{k:03d},Customer {k:02d},{place},{day},08:00,18:00,1,{skills}")
    return "\n".join(lines) + "\n"


async def test_import_optimise_dispatch_and_move_a_stop(
    tab: BrowserTab, plan_srv: Server, tmp_path: Path
) -> None:
    srv = plan_srv
    page = tab.page
    day = date.today() + timedelta(days=1)
    phones = [await add_device(srv, f"Monaco van {k}", f"mc-van-{k}") for k in range(2)]
    await page.goto(f"{srv.base_url}/plan")
    await page.fill("#signin-token", ADMIN_TOKEN)
    await page.keyboard.press("Enter")
    await expect(page.locator("#who")).to_contain_text("admin", timeout=TIMEOUT_MS)
    await page.fill("#plan-day", day.isoformat())
    await page.dispatch_event("#plan-day", "change")

    # Depot and two vans through the page's forms.
    await page.fill("#d-name", "Fontvieille")
    await page.fill("#d-lat", str(DEPOT[0]))
    await page.fill("#d-lon", str(DEPOT[1]))
    await page.get_by_role("button", name="Add depot").click()
    await expect(page.locator("#depot-list li")).to_have_count(1, timeout=TIMEOUT_MS)
    for k, phone in enumerate(phones):
        await page.fill("#v-name", f"Van {k}")
        await page.select_option("#v-device", phone.unique_id)
        await page.select_option("#v-depot", label="Fontvieille")
        await page.fill("#v-capacity", "40")
        await page.get_by_role("button", name="Add van").click()
        await expect(page.locator("#van-list li")).to_have_count(k + 1, timeout=TIMEOUT_MS)

    # Drop a CSV of 50 orders on the drop zone.
    text = orders_csv(day, 50)
    transfer = await page.evaluate_handle(
        """text => { const dt = new DataTransfer();
                     dt.items.add(new File([text], "orders.csv", {type: "text/csv"}));
                     return dt; }""",
        text,
    )
    await page.dispatch_event("#drop", "drop", {"dataTransfer": transfer})
    await expect(page.locator("#notice")).to_contain_text("50 orders imported", timeout=TIMEOUT_MS)
    await expect(page.locator("#order-table tbody tr")).to_have_count(50)
    # Filter, then edit one order's recipient.
    await page.fill("#order-filter", "Customer 07")
    await expect(page.locator("#order-table tbody tr")).to_have_count(1)
    await page.get_by_role("button", name="Edit").click()
    await page.fill("#o-recipient", "Customer 07 (back door)")
    await page.get_by_role("button", name="Save order").click()
    await expect(page.locator("#order-table tbody")).to_contain_text(
        "back door", timeout=TIMEOUT_MS
    )
    await page.fill("#order-filter", "")

    # Optimise: one card per van in its colour, on roads, the crane order unassigned.
    await page.get_by_role("button", name="Optimise").click()
    cards = page.locator(".plan-route")
    await expect(cards).to_have_count(2, timeout=60_000)
    await expect(page.locator("#plan-summary")).to_contain_text(
        "49 of 50 orders", timeout=TIMEOUT_MS
    )
    await expect(page.locator("#plan-summary")).to_contain_text("on roads")
    await expect(page.locator("#plan-unassigned")).to_contain_text("MC-049")
    await expect(page.locator("path.plan-line")).to_have_count(2)
    colours = await page.locator("path.plan-line").evaluate_all(
        "paths => paths.map(p => p.getAttribute('stroke'))"
    )
    assert len(set(colours)) == 2
    await expect(cards.first.locator(".stats")).to_contain_text("km")
    await page.screenshot(path=str(ARTIFACTS / "plan-page.png"), full_page=True)
    await (
        page.locator("#proposal-title")
        .locator("..")
        .screenshot(path=str(ARTIFACTS / "plan-proposal.png"))
    )

    # Before dispatch: drag van 0's first stop onto the top of van 1's card.
    def stops_of(card: int) -> Locator:
        return cards.nth(card).locator("li[data-order]")

    async def top_of(card: int) -> float:
        """A viewport y above the middle of the card's first stop: a drop there goes first."""
        box = await stops_of(card).first.bounding_box()
        assert box is not None
        return float(box["y"]) + 1

    async def orders_of(card: int) -> list[str]:
        found: list[str] = await stops_of(card).evaluate_all(
            "lis => lis.map(li => li.dataset.order)"
        )
        return found

    first = stops_of(0).first
    order = await first.get_attribute("data-order") or ""
    counts = (await stops_of(0).count(), await stops_of(1).count())
    stats = await cards.nth(1).locator(".stats").text_content()
    transfer = await page.evaluate_handle("() => new DataTransfer()")
    await first.dispatch_event("dragstart", {"dataTransfer": transfer})
    y = await top_of(1)
    await cards.nth(1).dispatch_event("dragover", {"dataTransfer": transfer, "clientY": y})
    await cards.nth(1).dispatch_event("drop", {"dataTransfer": transfer, "clientY": y})
    notice = page.locator("#notice")
    await expect(notice).to_contain_text("re-evaluated", timeout=TIMEOUT_MS)
    await expect(stops_of(1)).to_have_count(counts[1] + 1)
    await expect(stops_of(0)).to_have_count(counts[0] - 1)
    assert (await orders_of(1))[0] == order  # dropped at the top: first
    assert await cards.nth(1).locator(".stats").text_content() != stats  # re-evaluated
    match = re.search(r"Proposal #(\d+)", await notice.text_content() or "")
    assert match is not None
    plan_id = int(match.group(1))
    async with srv.admin() as client:
        plan = (await client.get(f"/api/v1/plans/{plan_id}")).json()
    van1 = next(r for r in plan["routes"] if r["vehicle"] == "Van 1")
    assert [str(s["order_id"]) for s in van1["stops"]] == await orders_of(1)
    assert f"{len(van1['stops'])} stops" in (
        await cards.nth(1).locator(".stats").text_content() or ""
    )
    # The keyboard's way: one place later, then off the routes and back onto van 0.
    moved = cards.nth(1).locator(f'li[data-order="{order}"]')
    await moved.get_by_role("button", name=re.compile("later")).click()
    await expect(stops_of(1).nth(1)).to_have_attribute("data-order", order, timeout=TIMEOUT_MS)
    await moved.locator("select").select_option("none")
    await expect(page.locator(f'#plan-unassigned li[data-order="{order}"]')).to_contain_text(
        "unassigned by the dispatcher", timeout=TIMEOUT_MS
    )
    await expect(stops_of(1)).to_have_count(counts[1])
    await page.locator(f'#plan-unassigned li[data-order="{order}"] select').select_option(
        label="Van 0"
    )
    await expect(stops_of(0)).to_have_count(counts[0], timeout=TIMEOUT_MS)
    # The crane order forced onto van 0: kept there, and what it breaks is shown.
    crane = page.locator("#plan-unassigned li", has_text="MC-049")
    transfer = await page.evaluate_handle("() => new DataTransfer()")
    await crane.dispatch_event("dragstart", {"dataTransfer": transfer})
    y = await top_of(0)
    await cards.nth(0).dispatch_event("dragover", {"dataTransfer": transfer, "clientY": y})
    await cards.nth(0).dispatch_event("drop", {"dataTransfer": transfer, "clientY": y})
    await expect(cards.nth(0).locator(".violations")).to_contain_text(
        "need a skill the van lacks", timeout=TIMEOUT_MS
    )
    await expect(stops_of(0).first.locator(".violation")).to_contain_text("lacks crane")
    await expect(page.locator("#plan-summary")).to_contain_text("50 of 50 orders")
    await expect(page.locator("#plan-summary")).to_contain_text("1 violation ")
    await stops_of(0).first.scroll_into_view_if_needed()
    await (
        page.locator("#proposal-title")
        .locator("..")
        .screenshot(path=str(ARTIFACTS / "plan-edited.png"))
    )
    # ...and dragged back onto the unassigned list.
    transfer = await page.evaluate_handle("() => new DataTransfer()")
    await stops_of(0).first.dispatch_event("dragstart", {"dataTransfer": transfer})
    await page.locator("#plan-unassigned").dispatch_event("dragover", {"dataTransfer": transfer})
    await page.locator("#plan-unassigned").dispatch_event("drop", {"dataTransfer": transfer})
    await expect(page.locator("#plan-summary")).to_contain_text(
        "49 of 50 orders", timeout=TIMEOUT_MS
    )
    await expect(cards.nth(0).locator(".violations")).to_have_count(0)
    shown = [await orders_of(0), await orders_of(1)]

    # Dispatch the edited proposal, then drag the first stop of van 0 onto van 1's card.
    await page.get_by_role("button", name="Dispatch").click()
    await expect(page.locator("#notice")).to_contain_text("Dispatched 2 routes", timeout=TIMEOUT_MS)
    assert [await orders_of(0), await orders_of(1)] == shown  # as edited
    first = cards.nth(0).locator("li[draggable=true]").first
    await expect(first).to_be_visible()
    stop_id = await first.get_attribute("data-stop-id")
    target_route = await cards.nth(1).get_attribute("data-route-id")
    before = await cards.nth(1).locator("li").count()
    # The page's drag-and-drop handlers with one DataTransfer, as a mouse drag makes them.
    transfer = await page.evaluate_handle("() => new DataTransfer()")
    await first.dispatch_event("dragstart", {"dataTransfer": transfer})
    await cards.nth(1).dispatch_event("dragover", {"dataTransfer": transfer})
    await cards.nth(1).dispatch_event("drop", {"dataTransfer": transfer})
    await expect(page.locator("#notice")).to_contain_text("routes re-evaluated", timeout=TIMEOUT_MS)
    await expect(cards.nth(1).locator("li")).to_have_count(before + 1)
    async with srv.admin() as client:
        route = (await client.get(f"/api/v1/routes/{target_route}")).json()
    assert int(stop_id or 0) in [s["id"] for s in route["stops"]]
    assert all(s["eta"] for s in route["stops"])  # re-timed by the server
    # The keyboard's way: the stop's "to van" menu moves it back.
    moved = cards.nth(1).locator(f'li[data-stop-id="{stop_id}"]')
    await moved.locator("select").select_option(
        await cards.nth(0).get_attribute("data-route-id") or ""
    )
    await expect(cards.nth(1).locator("li")).to_have_count(before, timeout=TIMEOUT_MS)
    await page.screenshot(path=str(ARTIFACTS / "plan-dispatched.png"), full_page=True)
    assert tab.errors == [], tab.errors
