"""A real recorded drive (Munich, 1 Hz, 20 min) posted through the ingest API against a
planned route: arrivals are detected at the places the car really stopped, not where it
drove through; ETAs are stored, published on the bus and reach the dispatcher's live feed;
and the whole run produces exactly the events of one uninterrupted offline replay."""

from __future__ import annotations

import asyncio
import contextlib
import math
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import orjson
from websockets.asyncio.client import ClientConnection, connect

from tests.conftest import ADMIN_TOKEN, ServerFactory, add_device
from tests.integration.test_routes_api import (
    BusRecorder,
    create_route,
    get_route,
    iso,
    offline_events,
    patch_stop,
    post_fixes,
    stored_events,
)
from tracker.core.model import Fix
from tracker.core.route import progress
from tracker.tools.tracks import sample_drive

Json = dict[str, Any]


def metres(a: Fix, b: Fix) -> float:
    """Distance on a local plane (plenty for tens of metres)."""
    dy = (b.lat - a.lat) * 111_320.0
    dx = (b.lon - a.lon) * 111_320.0 * math.cos(math.radians(a.lat))
    return math.hypot(dx, dy)


def dwells(fixes: list[Fix], radius_m: float = 20.0, min_s: float = 60.0) -> list[range]:
    """Runs of fixes staying within `radius_m` of the run's first fix for `min_s` or more."""
    found: list[range] = []
    i = 0
    while i < len(fixes):
        j = i
        while j + 1 < len(fixes) and metres(fixes[i], fixes[j + 1]) <= radius_m:
            j += 1
        if (fixes[j].time - fixes[i].time).total_seconds() >= min_s:
            found.append(range(i, j + 1))
            i = j + 1
        else:
            i += 1
    return found


def centre(fixes: list[Fix]) -> tuple[float, float]:
    return (
        sum(f.lat for f in fixes) / len(fixes),
        sum(f.lon for f in fixes) / len(fixes),
    )


def drive_through(fixes: list[Fix], lo: int, hi: int, window: int = 30) -> int:
    """The fix between `lo` and `hi` where the car was fastest for `window` s either side."""

    def slowest_around(k: int) -> float:
        return min(metres(fixes[i], fixes[i + 1]) for i in range(k - window, k + window))

    return max(range(lo + window, hi - window), key=slowest_around)


class Feed:
    """A /ws/dispatch client collecting every frame in the background."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.frames: list[Json] = []
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(Exception):
            async for text in self.ws:
                self.frames.append(orjson.loads(text))

    def vehicles(self, device: str) -> list[Json]:
        return [v for f in self.frames for v in f.get("vehicles", []) if v["id"] == device]

    def events(self, device: str) -> list[Json]:
        return [e for f in self.frames for e in f.get("events", []) if e.get("device") == device]

    async def until(self, predicate: Any, timeout: float = 5.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not predicate():
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError("the live feed did not show it")
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        await self.ws.close()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


def without_device(route: Json) -> Json:
    # The hub keeps a route message minus its envelope (type, device) as the vehicle's route.
    return {k: v for k, v in route.items() if k != "device"}


async def test_munich_drive_through_the_api(
    server_factory: ServerFactory, db: asyncpg.Pool
) -> None:
    # A company that lets departure complete stops (TRACKER_AUTO_COMPLETE=departure).
    server = await server_factory(auto_complete="departure")
    fixes = sample_drive()
    spans = dwells(fixes)
    assert len(spans) >= 2, "the recording has two delivery-length stops"
    first, last = spans[0], spans[-1]
    passed = drive_through(fixes, first[-1], last[0])
    places = [
        centre(fixes[first.start : first.stop]),
        (fixes[passed].lat, fixes[passed].lon),
        centre(fixes[last.start : last.stop]),
    ]
    dev = await add_device(server, name="Munich car")
    body: dict[str, Any] = {
        "device": dev.unique_id,
        "planned_start": iso(fixes[0].time),
        "stops": [
            {
                "lat": lat,
                "lon": lon,
                "name": f"Munich {k + 1}",
                "recipient": "",
                "service_s": 60,
                "radius_m": 50,
                "planned_arrival": None,
                "window_start": None,
                "window_end": None,
            }
            for k, (lat, lon) in enumerate(places)
        ],
        # The planned path is the road the car took (every other fix).
        "path": {
            "type": "LineString",
            "coordinates": [[f.lon, f.lat] for f in fixes[::2]] + [[fixes[-1].lon, fixes[-1].lat]],
        },
    }
    route = await create_route(server, body)
    stop_ids = [s["id"] for s in route["stops"]]
    bus = BusRecorder(server, dev.unique_id)
    feed = Feed(await connect(f"{server.ws_url}/ws/dispatch?token={ADMIN_TOKEN}"))
    try:
        await feed.until(lambda: bool(feed.frames))  # the snapshot
        # The recording has a glitch or two that the ingest filters refuse (a jump at
        # hundreds of m/s): the route only ever sees what was stored.
        cut = passed + 30  # half a minute after the car drove through stop 2
        stored = await post_fixes(server, dev, fixes[:cut], batch=10, strict=False)
        # The dispatcher sees it drove by without delivering and takes the stop off.
        r = await patch_stop(server, route["id"], stop_ids[1], {"status": "skipped"})
        assert r.status_code == 200, r.text
        middle = await get_route(server, route["id"])
        assert [s["status"] for s in middle["stops"]] == ["completed", "skipped", "pending"]

        # A fresh instance, which heard none of this on its bus, shows it in its snapshot.
        fresh = await server_factory()
        async with connect(f"{fresh.ws_url}/ws/dispatch?token={ADMIN_TOKEN}") as ws:
            snapshot = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
        mine = [v for v in snapshot["vehicles"] if v["id"] == dev.unique_id]
        assert [v["route"] for v in mine] == [without_device(middle)]

        stored_before_skip = len(stored)
        stored += await post_fixes(server, dev, fixes[cut:], batch=10, strict=False)
        assert len(fixes) - 5 <= len(stored) < len(fixes)

        final = await get_route(server, route["id"])
        events = await stored_events(db, route["id"])

        # Arrived where the car really stopped, within the stop; never at the drive-through.
        arrived = {e["stop_id"]: e["time"] for e in events if e["type"] == "stop.arrived"}
        assert set(arrived) == {stop_ids[0], stop_ids[2]}
        for stop_id, span in ((stop_ids[0], first), (stop_ids[2], last)):
            assert fixes[span.start].time - timedelta(seconds=15) <= arrived[stop_id]
            assert arrived[stop_id] <= fixes[span[-1]].time
            departed = [
                e["time"]
                for e in events
                if e["type"] == "stop.departed" and e["stop_id"] == stop_id
            ]
            assert len(departed) == 1
            left = fixes[span[-1]].time
            assert left <= departed[0] <= left + timedelta(seconds=60)
        assert [s["status"] for s in final["stops"]] == ["completed", "skipped", "completed"]
        assert datetime.fromisoformat(final["stops"][0]["arrived_at"]) == arrived[stop_ids[0]]
        # Every stop done: the route completed itself, and the device has no current route.
        assert final["status"] == "completed"
        assert events[-1]["type"] == "route.completed"
        async with server.client() as client:
            r = await client.get("/api/v1/routes/current", headers=dev.headers)
        assert r.status_code == 404

        # ETAs were published for every stop, and the last one before each real arrival was
        # close to it (computed from the fixes' 2014 clock, not the server's).
        etas = [e for e in events if e["type"] == "stop.eta_changed"]
        assert {e["stop_id"] for e in etas} == set(stop_ids)
        for stop_id in (stop_ids[0], stop_ids[2]):
            before = [e for e in etas if e["stop_id"] == stop_id and e["time"] < arrived[stop_id]]
            predicted = datetime.fromisoformat(before[-1]["data"]["eta"])
            assert abs((predicted - arrived[stop_id]).total_seconds()) <= 120

        # Stored = published on the bus = one uninterrupted offline replay.
        assert [
            (m["event"]["type"], m["event"]["stop_id"], m["event"]["time"]) for m in bus.events
        ] == [(e["type"], e["stop_id"], e["time"].isoformat()) for e in events]
        skipped = next(e for e in events if e["type"] == "stop.skipped")
        path = [(lat, lon) for lon, lat in body["path"]["coordinates"]]
        assert events == offline_events(
            final,
            path,
            stored,
            {stored_before_skip: (stop_ids[1], "skipped", skipped["time"])},
            progress.EtaConfig(auto_complete="departure"),
        )
        assert bus.routes[-1] == {"type": "route", **final}

        # The dispatcher's feed carried the ETAs and events, ending on the stored route.
        await feed.until(
            lambda: (
                [v["route"] for v in feed.vehicles(dev.unique_id)[-1:]] == [without_device(final)]
            )
        )
        with_etas = [
            v
            for v in feed.vehicles(dev.unique_id)
            if v["route"] and any(s["eta"] for s in v["route"]["stops"])
        ]
        assert with_etas
        assert {e["type"] for e in feed.events(dev.unique_id)} >= {
            "stop.eta_changed",
            "stop.arrived",
            "stop.departed",
            "stop.completed",
            "stop.skipped",
            "route.completed",
        }
    finally:
        await feed.close()
