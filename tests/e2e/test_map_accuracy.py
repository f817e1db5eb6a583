"""The live map's "Live ETA accuracy" panel in a real headless Chromium: after a van's
arrivals, it shows the figures GET /api/v1/accuracy gives, and refreshes once a minute."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from playwright.async_api import expect

from tests.conftest import ARTIFACTS, Server, add_device
from tests.e2e.conftest import BrowserTab
from tests.e2e.test_map import TIMEOUT_MS, open_signed_in
from tests.integration.test_accuracy_api import van
from tests.integration.test_routes_api import create_route, iso, post_fixes, route_body

pytestmark = pytest.mark.e2e


def _s(v: float | None) -> str:
    return "–" if v is None else f"{round(v)} s"


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{round(v * 100)} %"


async def drive_route(srv: Server, start: datetime) -> None:
    device = await add_device(srv)
    await create_route(srv, route_body(device, start))
    await post_fixes(srv, device, van(start), batch=6)


async def accuracy(srv: Server) -> Any:
    async with srv.admin() as client:
        since = iso(datetime.now(UTC) - timedelta(days=1))
        r = await client.get("/api/v1/accuracy", params={"since": since})
    assert r.status_code == 200, r.text
    return r.json()


async def test_the_panel_shows_the_live_accuracy_and_refreshes(
    tab: BrowserTab, srv: Server
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    await drive_route(srv, now - timedelta(hours=2))
    body = await accuracy(srv)
    assert body["arrivals"] == 3
    page = tab.page
    await page.clock.install()
    await open_signed_in(tab, srv)
    rows = page.locator("#accuracy-rows tr")
    await expect(rows).to_have_count(4, timeout=TIMEOUT_MS)
    for k, bucket in enumerate(body["buckets"]):
        cells = rows.nth(k).locator("td")
        await expect(cells).to_have_text(
            [
                bucket["horizon"],
                _s(bucket["mae_s"]),
                _pct(bucket["coverage"]),
                _pct(bucket["accurate"]),
            ]
        )
    assert body["buckets"][0]["mae_s"] is not None  # the near ETAs were measured
    await expect(page.locator("#accuracy-score")).to_have_text(
        f"score {round(body['score'] * 100)} %"
    )
    await expect(page.locator("#accuracy-summary")).to_have_text("3 arrivals in the last 24 h")

    # Another van's arrivals: the panel shows them within a minute, without a reload.
    await drive_route(srv, now - timedelta(hours=1))
    assert (await accuracy(srv))["arrivals"] == 6
    await page.clock.fast_forward(61_000)
    await expect(page.locator("#accuracy-summary")).to_have_text(
        "6 arrivals in the last 24 h", timeout=TIMEOUT_MS
    )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.locator("#panel").screenshot(path=str(ARTIFACTS / "map_accuracy.png"))
    assert tab.errors == []
