"""A real headless Chromium (Playwright, async API so the in-process servers keep running)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.async_api import Browser, BrowserContext, Page, Route, async_playwright

from tests.conftest import Server, ServerFactory, own_database
from tracker.core.model import Fix
from tracker.tools import tracks

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
LOCAL = re.compile(r"^(https?|wss?)://127\.0\.0\.1(:\d+)?/")


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    """One Chromium for the session."""
    assert CHROMIUM.exists(), f"the e2e tests need Chromium at {CHROMIUM}"
    async with async_playwright() as p:
        chromium = await p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield chromium
        await chromium.close()


@dataclass
class BrowserTab:
    """A page in its own context (own cookies), with what it asked for and what broke."""

    context: BrowserContext
    page: Page
    external: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@pytest.fixture
async def tab(browser: Browser) -> AsyncIterator[BrowserTab]:
    """A fresh browser context: no cookies; requests off this machine are refused and noted,
    so a page that needs the internet (a CDN link) shows up in `external`."""
    # Fixed locale and zone, so times on the page are predictable in assertions.
    context = await browser.new_context(
        viewport={"width": 1280, "height": 800}, locale="en-GB", timezone_id="UTC"
    )
    page = await context.new_page()
    tab = BrowserTab(context, page)

    async def refuse(route: Route) -> None:
        tab.external.append(route.request.url)
        await route.abort()

    await context.route(lambda url: not LOCAL.match(url), refuse)
    page.on("pageerror", lambda exc: tab.errors.append(str(exc)))
    yield tab
    await context.close()


# A tile server that cannot exist: the map pages must work without tiles.
TILES = "https://tiles.invalid/{z}/{x}/{y}.png"


@pytest.fixture(scope="module")
def drive() -> list[Fix]:
    """The real Munich drive: consecutive fixes are real 1 Hz steps of a car."""
    return tracks.sample_drive()


@pytest.fixture
async def srv(server_factory: ServerFactory) -> AsyncIterator[Server]:
    """A server whose map pages use the unreachable test tiles, on a database of its own:
    the map's event feed and route board load what is stored (history, every route of the
    day), so another test's vans and events must not be there."""
    async with own_database("e2e") as url:
        server = await server_factory(
            database_url=url, tile_url=TILES, tile_attribution="Test tiles"
        )
        yield server
        await server.stop()  # before its database goes
