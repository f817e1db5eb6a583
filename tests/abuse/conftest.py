"""The abuse tests' world: a server on a database of their own, and one of every caller.

The abuse tests send junk, create routes and webhooks and toggle devices; their own
database (created and dropped here) keeps that away from the other tests' assertions.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import urlsplit

import pytest

from tests.conftest import (
    ADMIN_TOKEN,
    DeviceCreds,
    Server,
    add_device,
    own_database,
    recreate_database,
    sibling_database_url,
    start_server,
)
from tracker.store import devices as device_store
from tracker.store.migrations import migrate

T = TypeVar("T")

# The device whose resources (route, stops, track) the callers reach for.
OWNER_ID = "van-7"
OTHER_ID = "van-8"
SPARE_ID = "van-9"
# Delivery webhooks aim at the discard port: attempts fail at once, nothing leaves the host.
# Loopback is not a public address: the abuse servers allow it explicitly.
HOOK_URL = "http://127.0.0.1:9/hook"
HOOK_NETWORKS = "127.0.0.0/8"


@dataclass(frozen=True)
class Fleet:
    """A server and one of each kind of caller, with the resources they reach for."""

    server: Server
    dispatcher: str  # a dispatcher API key
    owner: DeviceCreds  # owns the route below
    other: DeviceCreds  # another device, without a route
    route_id: int
    stop_id: int  # the customer's stop
    spare_stop_id: int  # the stop whose link gets re-issued (the customer's must keep working)
    tracking_token: str  # the customer's link token (of `stop_id`)
    webhook_id: int
    # An order, a depot and a vehicle for the operations on one of them.
    order_id: int = 0
    depot_id: int = 0
    vehicle_id: int = 0

    @property
    def admin(self) -> str:
        return ADMIN_TOKEN


def route_body(device: str) -> dict[str, Any]:
    """A two-stop route starting now."""
    return {
        "device": device,
        "planned_start": datetime.now(UTC).isoformat(),
        "stops": [
            {"lat": 48.137, "lon": 11.575, "name": "Abuse Street 1", "recipient": "R. One"},
            {"lat": 48.139, "lon": 11.580, "name": "Abuse Street 2", "recipient": "R. Two"},
        ],
        "path": None,
    }


def credentials(operation: dict[str, Any], fleet: Fleet) -> dict[str, str]:
    """Headers for an OpenAPI operation: the least privileged caller it is meant for."""
    schemes = {name for requirement in operation.get("security", []) for name in requirement}
    if "adminBearer" in schemes:
        return {"Authorization": f"Bearer {fleet.admin}"}
    if "staffBearer" in schemes:
        return {"Authorization": f"Bearer {fleet.dispatcher}"}
    if "deviceBearer" in schemes:
        return {"Authorization": f"Bearer {fleet.owner.token}"}
    if "ownTracksBasic" in schemes:
        basic = f"{fleet.owner.unique_id}:{fleet.owner.token}".encode()
        return {"Authorization": f"Basic {base64.b64encode(basic).decode()}"}
    return {}


async def make_fleet(srv: Server) -> Fleet:
    """Register both devices, a dispatcher key, a route and a webhook on `srv`."""
    owner = await add_device(srv, "Owner van", OWNER_ID)
    other = await add_device(srv, "Other van", OTHER_ID)
    # The document's example for enabling and disabling devices (so that fuzzing it never
    # disables the devices the other operations call with).
    await add_device(srv, "Spare van", SPARE_ID)
    dispatcher = await device_store.add_key(srv.runtime.pool, "abuse dispatcher", "dispatcher")
    async with srv.admin() as client:
        when = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
        ping = {"time": when, "lat": 48.137, "lon": 11.575}
        r = await client.post(
            "/api/v1/positions", json=ping, headers={"Authorization": f"Bearer {owner.token}"}
        )
        assert r.status_code == 202, r.text
        r = await client.post("/api/v1/routes", json=route_body(OWNER_ID))
        assert r.status_code == 201, r.text
        route = r.json()
        r = await client.post(
            "/api/v1/webhooks", json={"url": HOOK_URL, "events": ["stop.arrived"]}
        )
        assert r.status_code == 201, r.text
        webhook_id = r.json()["id"]
        planning = {}
        for name, body in (
            ("orders", {"lat": 48.137, "lon": 11.575, "date": "2030-01-02"}),
            ("depots", {"name": "Abuse depot", "lat": 48.13, "lon": 11.57}),
            ("vehicles", {"name": "Abuse van"}),
        ):
            r = await client.post(f"/api/v1/{name}", json=body)
            assert r.status_code == 201, r.text
            planning[name] = r.json()["id"]
    first, second = route["stops"]
    return Fleet(
        server=srv,
        dispatcher=dispatcher,
        owner=owner,
        other=other,
        route_id=route["id"],
        stop_id=first["id"],
        spare_stop_id=second["id"],
        tracking_token=urlsplit(first["tracking_url"]).path.rsplit("/", 1)[1],
        webhook_id=webhook_id,
        order_id=planning["orders"],
        depot_id=planning["depots"],
        vehicle_id=planning["vehicles"],
    )


@pytest.fixture(scope="session")
async def abuse_database_url() -> AsyncIterator[str]:
    """A migrated database for the abuse tests only, dropped after the session."""
    async with own_database("abuse") as url:
        yield url


@pytest.fixture(scope="session")
async def fleet(abuse_database_url: str) -> AsyncIterator[Fleet]:
    """One server on the abuse database with every kind of caller."""
    srv = await start_server(abuse_database_url, webhook_allow_cidrs=HOOK_NETWORKS)
    try:
        yield await make_fleet(srv)
    finally:
        await srv.stop()


class LoopThread:
    """An event loop of its own in a thread, for servers that blocking clients call.

    Schemathesis' pytest integration runs synchronous tests with a blocking HTTP client:
    a server on the test session's loop would not answer while such a test runs.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        """Run `coro` on the thread's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@contextlib.contextmanager
def threaded_fleet(suffix: str) -> Iterator[Fleet]:
    """A fleet on its own database, served from a loop in another thread."""
    url = sibling_database_url(suffix)
    loop = LoopThread()
    try:
        loop.run(recreate_database(url))
        loop.run(migrate(url))
        srv = loop.run(start_server(url, webhook_allow_cidrs=HOOK_NETWORKS))
        try:
            yield loop.run(make_fleet(srv))
        finally:
            loop.run(srv.stop())
            with contextlib.suppress(Exception):
                loop.run(recreate_database(url, create=False))
    finally:
        loop.close()
