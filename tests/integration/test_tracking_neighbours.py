"""A customer never sees the vehicle at another customer's address (finding 5 of issue 15):
while the van is at stop N (dwelling there, or just by it), the customer of stop N+1, who is
within the stops-away limit, gets no position, on the live feed and on the page."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime, timedelta

import orjson

from tests.conftest import Server, ServerFactory
from tests.integration.test_tracking import (
    LAT,
    PUBLIC_URL,
    STOP_AT_M,
    Json,
    lon_at,
    new_delivery,
    open_feed,
    quiet,
    receive,
    receive_until,
    vehicle_at,
)
from tracker.core.filters import haversine_m


def near_stop_1(frame: Json, within_m: float = 100.0) -> bool:
    vehicle = frame["tracking"]["vehicle"]
    if vehicle is None:
        return False
    return haversine_m(vehicle["lat"], vehicle["lon"], LAT, lon_at(STOP_AT_M[0])) <= within_m


async def page_state(srv: Server, token: str) -> Json:
    async with srv.client() as client:
        r = await client.get(f"/t/{token}")
    assert r.status_code == 200
    found = re.search(r'data-state="([^"]*)"', r.text)
    assert found is not None
    state: Json = orjson.loads(html.unescape(found.group(1)))
    return state


async def test_the_next_customer_does_not_see_the_van_at_the_stop_before(
    server_factory: ServerFactory,
) -> None:
    srv = await server_factory(public_url=PUBLIC_URL, tick_ms=20.0)
    assert srv.settings.customer_max_stops_away == 1
    assert srv.settings.customer_hide_radius_m == 100.0
    d = await new_delivery(srv)
    t0 = datetime.now(UTC) - timedelta(minutes=3)
    async with await open_feed(srv, d.tokens[0]) as own, await open_feed(srv, d.tokens[1]) as nxt:
        await receive(own)
        await receive(nxt)
        # On the way to stop 1, 300 m before it: the next customer may follow the van.
        await d.ping(300.0, t0)
        await receive_until(nxt, vehicle_at(300.0))

        # By stop 1's door (10 m from it, not yet arrived): hidden from stop 2's customer.
        await d.ping(590.0, t0 + timedelta(seconds=30), speed=2.0)
        await receive_until(own, vehicle_at(590.0))
        hidden = await receive_until(nxt, lambda m: m["tracking"]["vehicle"] is None)
        assert hidden["tracking"]["phase"] == "out_for_delivery"

        # Dwelling at stop 1: still nothing for stop 2, on the feed and on the page.
        await d.set_status(0, "arrived")
        for k in range(3):
            await d.ping(600.0 + k, t0 + timedelta(seconds=60 + 20 * k), speed=0.0)
        await receive_until(own, vehicle_at(602.0))
        frames = await quiet(nxt, 1.0)
        assert not [f for f in frames if near_stop_1(f)], frames
        assert (await page_state(srv, d.tokens[1]))["vehicle"] is None
        seen = (await page_state(srv, d.tokens[0]))["vehicle"]
        assert seen is not None and seen["lon"] == round(lon_at(602.0), 5)  # its own stop
        await nxt.send('{"type": "resync"}')
        resent = await receive_until(nxt, lambda m: m["type"] == "snapshot")
        assert resent["tracking"]["vehicle"] is None

        # Stop 1 done and the van 200 m on: stop 2's customer sees it coming again.
        await d.set_status(0, "completed")
        await d.ping(800.0, t0 + timedelta(seconds=150))
        shown = await receive_until(nxt, vehicle_at(800.0))
        assert shown["tracking"]["phase"] in ("next_stop", "arriving")


async def test_a_hide_radius_of_zero_still_hides_a_stop_being_served(
    server_factory: ServerFactory,
) -> None:
    # Served, the stop ahead hides the van whatever the distance (a geofence can be wide).
    srv = await server_factory(public_url=PUBLIC_URL, tick_ms=20.0, customer_hide_radius_m=0.0)
    d = await new_delivery(srv)
    t0 = datetime.now(UTC) - timedelta(minutes=3)
    async with await open_feed(srv, d.tokens[1]) as nxt:
        await receive(nxt)
        await d.ping(450.0, t0)
        await receive_until(nxt, vehicle_at(450.0))
        await d.set_status(0, "arrived")
        hidden = await receive_until(nxt, lambda m: m["tracking"]["vehicle"] is None)
        assert hidden["tracking"]["phase"] == "out_for_delivery"
        await d.ping(500.0, t0 + timedelta(seconds=10))
        assert all(f["tracking"]["vehicle"] is None for f in await quiet(nxt, 0.8))
