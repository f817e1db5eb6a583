"""`tracker simulate` against a real server: devices registered through the admin API, pings
through the real ingest API, and the fleet moving on the live map in a real Chromium."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from playwright.async_api import expect

from tests.conftest import ADMIN_TOKEN, ARTIFACTS, Server, ServerFactory
from tests.e2e.conftest import TILES, BrowserTab
from tests.e2e.test_map import (
    TIMEOUT_MS,
    metres,
    only_tiles_left_the_machine,
    open_signed_in,
)
from tracker.tools.simulate import SimulateConfig, SimulateError, run

pytestmark = pytest.mark.e2e


@pytest.fixture
async def srv(server_factory: ServerFactory) -> Server:
    return await server_factory(tile_url=TILES)


def config(srv: Server, tmp_path: Path, **overrides: object) -> SimulateConfig:
    base: dict[str, object] = {
        "url": srv.base_url,
        "admin_token": ADMIN_TOKEN,
        "drivers": 3,
        "speed": 1.0,
        "interval_s": 0.25,
        "prefix": f"sim-{uuid.uuid4().hex[:6]}",
        "duration_s": 2.0,
        "tokens_path": tmp_path / "tokens.json",
    }
    base.update(overrides)
    return SimulateConfig(**base)  # type: ignore[arg-type]


async def device_ids(srv: Server, prefix: str) -> list[str]:
    async with srv.admin() as client:
        r = await client.get("/api/v1/devices")
    assert r.status_code == 200
    return sorted(d["id"] for d in r.json()["devices"] if d["id"].startswith(prefix))


async def test_fleet_moves_on_the_live_map(tab: BrowserTab, srv: Server, tmp_path: Path) -> None:
    page = await open_signed_in(tab, srv)
    cfg = config(srv, tmp_path, duration_s=4.0, speed=3.0)
    replay = asyncio.create_task(run(cfg))

    markers = page.locator(f'.vehicle-marker[data-id^="{cfg.prefix}-"]')
    await expect(markers).to_have_count(3, timeout=TIMEOUT_MS)
    for i in (1, 2, 3):
        await expect(page.locator(".vehicle-item", has_text=f"Demo car {i}")).to_be_visible()
    ids = [f"{cfg.prefix}-{i:02d}" for i in (1, 2, 3)]
    # Nobody touched the map, so it frames the whole fleet as cars join.
    in_view = await page.evaluate(
        """ids => ids.map(id => window.trackerMap.map.getBounds().contains(
                 window.trackerMap.vehicles.get(id).marker.getLatLng()))""",
        ids,
    )
    assert in_view == [True, True, True]
    before = [await page.evaluate("id => window.trackerMap.markerPosition(id)", i) for i in ids]
    stats = await replay
    after = [await page.evaluate("id => window.trackerMap.markerPosition(id)", i) for i in ids]

    assert stats.posted >= 3 * 10  # 4 s at 4 pings/s each, minus start-up
    assert (stats.stored, stats.rejected, stats.failed) == (stats.posted, 0, 0)
    # Fixes are "now": the map shows them fresh, not stale.
    for vehicle_id in ids:
        item = page.locator(f'.vehicle-item[data-id="{vehicle_id}"]')
        assert "stale" not in (await item.get_attribute("class") or "")
    # The cars are apart from each other, and at least two of them drove somewhere
    # (one may be waiting at a light or one of the drive's stops).
    assert (
        min(
            metres(a["lat"], a["lon"], b["lat"], b["lon"])
            for k, a in enumerate(after)
            for b in after[k + 1 :]
        )
        > 100
    )
    moved = [
        metres(a["lat"], a["lon"], b["lat"], b["lon"]) for a, b in zip(before, after, strict=True)
    ]
    assert sum(m > 5 for m in moved) >= 2, moved
    only_tiles_left_the_machine(tab)


async def test_second_run_reuses_the_devices_and_tokens(srv: Server, tmp_path: Path) -> None:
    cfg = config(srv, tmp_path, duration_s=0.6)
    first = await run(cfg)
    assert first.stored == first.posted > 0
    ids = await device_ids(srv, cfg.prefix)
    assert ids == [f"{cfg.prefix}-01", f"{cfg.prefix}-02", f"{cfg.prefix}-03"]
    tokens = json.loads(cfg.tokens_path.read_text())  # type: ignore[union-attr]
    assert sorted(tokens) == ids

    # Without the admin token: only remembered tokens can work, and they do.
    second = await run(config(srv, tmp_path, prefix=cfg.prefix, admin_token=None, duration_s=0.6))
    assert second.stored == second.posted > 0
    assert await device_ids(srv, cfg.prefix) == ids


async def test_unknown_tokens_lead_to_fresh_devices(srv: Server, tmp_path: Path) -> None:
    cfg = config(srv, tmp_path, drivers=1, duration_s=0.6)
    await run(cfg)
    # The tokens are lost (another machine, a wiped cache): the ids exist but cannot post.
    cfg.tokens_path.unlink()  # type: ignore[union-attr]
    again = await run(cfg)
    assert again.stored == again.posted > 0
    ids = await device_ids(srv, cfg.prefix)
    assert len(ids) == 2 and ids[0] == f"{cfg.prefix}-01" and ids[1].startswith(ids[0] + "-")

    # A remembered token the server no longer knows: the driver registers anew and goes on.
    renamed = ids[1]
    cfg.tokens_path.write_text(json.dumps({f"{cfg.prefix}-01": "stale-token"}))  # type: ignore[union-attr]
    recovered = await run(cfg)
    assert recovered.stored > 0
    assert recovered.reasons["HTTP 401"] == 1
    assert len(await device_ids(srv, cfg.prefix)) == 3
    assert renamed in await device_ids(srv, cfg.prefix)


async def test_bad_admin_token_is_a_clear_error(srv: Server, tmp_path: Path) -> None:
    with pytest.raises(SimulateError, match="refused the admin token"):
        await run(config(srv, tmp_path, admin_token="wrong"))
    with pytest.raises(SimulateError, match="--admin-token"):
        await run(config(srv, tmp_path, admin_token=None))


async def test_cli_command_runs_the_fleet(srv: Server, tmp_path: Path) -> None:
    prefix = f"cli-{uuid.uuid4().hex[:6]}"
    args = [
        sys.executable, "-m", "tracker.tools.cli", "simulate", "--url", srv.base_url,
        "--admin-token", ADMIN_TOKEN, "--drivers", "2", "--speed", "5", "--duration", "2",
        "--prefix", prefix, "--tokens-file", str(tmp_path / "t.json"),
    ]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    text = out.decode()
    assert proc.returncode == 0, text
    assert "2 drivers at 5x" in text
    # --speed 5 outruns the default jump filter on the drive's fast stretches: it says so.
    assert "TRACKER_MAX_SPEED_MPS=" in text
    assert await device_ids(srv, prefix) == [f"{prefix}-01", f"{prefix}-02"]


async def test_demo_routes_draw_road_lines_the_cars_follow(
    tab: BrowserTab, srv: Server, tmp_path: Path
) -> None:
    """`tracker simulate --routes`: each car has a route on the drive's roads; the selected
    car's line splits into a part driven and a part ahead as it moves."""
    page = await open_signed_in(tab, srv)
    cfg = config(srv, tmp_path, duration_s=12.0, speed=5.0, drivers=2, routes=True)
    replay = asyncio.create_task(run(cfg))
    first = page.locator(f'.vehicle-item[data-id="{cfg.prefix}-01"]')
    await expect(first).to_contain_text("Next:", timeout=TIMEOUT_MS)
    await first.click()
    await expect(page.locator("path.route-line-ahead")).to_have_count(1, timeout=TIMEOUT_MS)
    await expect(page.locator("path.route-line-driven")).to_have_count(1, timeout=15_000)
    await expect(page.locator("#rc-line")).to_contain_text("km driven")
    await page.screenshot(path=str(ARTIFACTS / "simulate-routes.png"))
    stats = await replay
    assert stats.rejected == 0 and stats.failed == 0
