"""The demo fleet's routes (`tracker simulate --routes`): ahead of each car, on its loop."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from tracker.tools import demo_routes, simulate


def metres(a: tuple[float, float], b: tuple[float, float]) -> float:
    x = math.radians(b[1] - a[1]) * math.cos(math.radians(a[0]))
    return 6_371_000.0 * math.hypot(x, math.radians(b[0] - a[0]))


def test_route_starts_where_the_car_is_and_its_stops_lie_on_the_path() -> None:
    drivers = simulate.fleet(simulate.load_drive(), 3)
    now = datetime(2026, 12, 4, 8, tzinfo=UTC)
    for driver in drivers:
        body = demo_routes.route_body(driver, now)
        start = driver.sample(0.0, 1.0)
        path = [(lat, lon) for lon, lat in body["path"]["coordinates"]]
        assert metres(path[0], (start.lat, start.lon)) < 1.0
        assert body["device"] == driver.unique_id and len(body["stops"]) == demo_routes.STOPS
        # Stop k is the path's point STOP_EVERY_S * k of drive time on: the car meets the
        # stops in order along the path (the loop goes there and back, so a nearest-point
        # search could find the way back instead).
        step = int(demo_routes.STOP_EVERY_S / demo_routes.PATH_STEP_S)
        for k, stop in enumerate(body["stops"]):
            assert metres(path[step * (k + 1)], (stop["lat"], stop["lon"])) < 1.0
        assert len(path) == step * demo_routes.STOPS + 1
        assert body["planned_start"] == now.isoformat()
