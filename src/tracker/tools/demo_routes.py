"""`tracker simulate --routes`: each demo car gets a route of stops ahead of it on its own
loop, with the recorded drive as the planned path, so the live map draws road lines that
the cars then follow (the part driven and the part ahead), with ETAs and events.

The route body is pure (a function of the driver and the replay speed); `plan()` posts it.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from tracker.tools.simulate import Driver

log = logging.getLogger(__name__)

STOPS = 3
STOP_EVERY_S = 180.0  # of drive time between the stops
PATH_STEP_S = 5.0  # of drive time between the path's points


def route_body(driver: Driver, now: datetime, stops: int = STOPS) -> dict[str, Any]:
    """A route for `driver` from where it is at the start of the replay: `stops` stops at
    STOP_EVERY_S of drive time apart, the loop between as the path ([lon, lat] GeoJSON)."""
    period = driver.loop.duration
    horizon = min(stops * STOP_EVERY_S, period * 0.9)  # never around the whole loop

    def at(offset_s: float) -> tuple[float, float]:
        sample = driver.loop.at((driver.phase_s + offset_s) % period)
        return sample.lat, sample.lon

    steps = int(horizon // PATH_STEP_S)
    path = [at(k * PATH_STEP_S) for k in range(steps + 1)]
    places = [at(horizon * (k + 1) / stops) for k in range(stops)]
    return {
        "device": driver.unique_id,
        "planned_start": now.isoformat(),
        "stops": [
            {
                "lat": lat,
                "lon": lon,
                "name": f"{driver.name} stop {k + 1}",
                "service_s": 30,
                "radius_m": 40,
            }
            for k, (lat, lon) in enumerate(places)
        ],
        "path": {"type": "LineString", "coordinates": [[lon, lat] for lat, lon in path]},
    }


async def plan(client: httpx.AsyncClient, admin_token: str, driver: Driver, now: datetime) -> bool:
    """Give `driver` its demo route (a van's new route ends its old one); False if refused."""
    r = await client.post(
        "/api/v1/routes",
        json=route_body(driver, now),
        headers={"Authorization": f"Bearer {admin_token}"},
    )
    if r.status_code != 201:
        log.warning("no demo route for %s: %s %s", driver.unique_id, r.status_code, r.text[:200])
        return False
    return True
