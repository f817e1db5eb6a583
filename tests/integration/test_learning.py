"""Learning travel times from stored drives, through the API and the real database."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import asyncpg

from tests.conftest import DeviceCreds, Server, add_device
from tests.integration.test_routes_api import (
    LAT,
    STREET_M,
    Json,
    create_route,
    drive,
    get_route,
    post_fixes,
    route_body,
)

# A street of its own, north of the one the other route tests drive (their drives are
# learned too, when they share the database).
NORTH = 0.05


def body(dev: DeviceCreds, start: datetime) -> Json:
    b = route_body(dev, start)
    for point in b["path"]["coordinates"]:
        point[1] += NORTH
    for stop in b["stops"]:
        stop["lat"] += NORTH
    return b


def eta_s(route: dict[str, object], k: int, start: datetime) -> float:
    stop = route["stops"][k]  # type: ignore[index]
    return (datetime.fromisoformat(stop["eta"]) - start).total_seconds()


async def test_a_finished_drive_teaches_the_next_routes_on_those_roads(
    server: Server, db: asyncpg.Pool
) -> None:
    start = datetime(2020, 6, 1, 8, tzinfo=UTC)  # a Monday, long past
    first = await add_device(server)
    taught = await create_route(server, body(first, start))
    # Before anything is learned, a new route's ETAs come from its plan (a default speed);
    # planned ahead, so its ETAs before any fix run from its planned start.
    ahead = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=2)
    plain = await create_route(server, body(await add_device(server), ahead))
    # The first van crawls down the street at 3 m/s: three times slower than planned.
    crawl = [replace(f, lat=LAT + NORTH) for f in drive(start, STREET_M, speed=3.0, every_s=2.0)]
    await post_fixes(server, first, crawl, batch=50)
    runtime = server.runtime
    # The van's drive is over (its last fix is long past); the route never driven is not.
    assert await runtime.learning.learn_once() >= 1
    assert await db.fetchval("SELECT count(*) FROM learned_cells") > 10
    learned_at = "SELECT learned_at IS NOT NULL FROM routes WHERE id = $1"
    assert await db.fetchval(learned_at, taught["id"])
    assert not await db.fetchval(learned_at, plain["id"])
    # Learned once: a second round has nothing left to do.
    assert await runtime.learning.learn_once() == 0

    # A new route on the same street expects slower going: one drive, shrunk toward the
    # plan (worth three), takes its pace from 8.3 m/s to about 6.5.
    later = ahead + timedelta(hours=1)
    learnt = await create_route(server, body(await add_device(server), later))
    for k in range(3):
        assert eta_s(learnt, k, later) > 1.2 * eta_s(plain, k, ahead)
    # Its interval is there from the start.
    stop = (await get_route(server, learnt["id"]))["stops"][2]
    assert stop["eta_earliest"] < stop["eta"] < stop["eta_latest"]

    # A route the other way along the street knows nothing of it.
    back = body(await add_device(server), later)
    back["path"]["coordinates"].reverse()
    back["stops"].reverse()
    other = await create_route(server, back)
    assert eta_s(other, 2, later) < 1.05 * eta_s(plain, 2, ahead)
