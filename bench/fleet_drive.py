"""The real Munich drive as a fleet for the fleet benchmark: where each device is, what its
pings say, and the route it drives (created through the public API).

The packaged drive (`src/tracker/data/munich_drive.csv`, 1 Hz, 20 min, GPS glitches
dropped as `tracker simulate` does) is played there and back as one loop, so looping it
never jumps. Device i starts at i/N of the loop, so the fleet is spread along it, and is
moved by a fixed offset of up to about ±2 km (a grid), so markers do not sit on one
another; an offset in degrees keeps every step's length, so speeds stay those of the drive.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson

from tracker.tools.simulate import Drive, load_drive, there_and_back

GRID = 41  # offsets on a GRID × GRID lattice…
GRID_STEP_DEG = 0.001  # …about 110 m apart (north) and 75 m (east) in Munich


@dataclass(frozen=True)
class Fleet:
    """N devices on the looped drive: device i starts `phase(i)` seconds into the loop."""

    loop: Drive
    devices: int

    @classmethod
    def munich(cls, devices: int) -> Fleet:
        """The packaged Munich drive, there and back, as `devices` vehicles."""
        return cls(there_and_back(load_drive()), devices)

    @property
    def period(self) -> float:
        """Seconds of one loop."""
        return self.loop.duration

    def phase(self, i: int) -> float:
        """Where in the loop device i is at its first ping (seconds of drive)."""
        return self.period * i / self.devices

    def offset(self, i: int) -> tuple[float, float]:
        """Device i's fixed (lat, lon) offset in degrees."""
        k = (i * 7919) % (GRID * GRID)  # a prime stride: neighbours in i are far apart
        half = GRID // 2
        return ((k // GRID - half) * GRID_STEP_DEG, (k % GRID - half) * GRID_STEP_DEG)

    def where(self, i: int, drive_s: float) -> tuple[float, float, float | None, float | None]:
        """(lat, lon, speed m/s, course) of device i `drive_s` seconds after its start."""
        s = self.loop.at((self.phase(i) + drive_s) % self.period)
        dlat, dlon = self.offset(i)
        return s.lat + dlat, s.lon + dlon, s.speed, s.course

    def ping(self, i: int, fix_time: float, drive_s: float) -> bytes:
        """The native API's JSON for device i's fix at epoch `fix_time` (to the millisecond),
        `drive_s` seconds into its drive."""
        lat, lon, speed, course = self.where(i, drive_s)
        body: dict[str, Any] = {
            "time": datetime.fromtimestamp(fix_time, UTC).isoformat(timespec="milliseconds"),
            "lat": round(lat, 7),
            "lon": round(lon, 7),
            "accuracy": 5.0,
        }
        if speed is not None:
            body["speed"] = round(speed, 2)
        if course is not None:
            body["course"] = round(course, 1)
        return orjson.dumps(body)

    def route_body(
        self,
        i: int,
        unique_id: str,
        planned_start: datetime,
        stops: int,
        stop_every_s: float,
        path_step_s: float = 5.0,
    ) -> dict[str, Any]:
        """Device i's route from its start: `stops` stops `stop_every_s` seconds of drive
        apart along the loop (the last at most 95 % of the way round), and the loop between
        as the planned path, a point every `path_step_s` seconds of drive."""
        horizon = min(stops * stop_every_s, self.period * 0.95)
        steps = int(horizon // path_step_s)
        path = [self.where(i, k * path_step_s)[:2] for k in range(steps + 1)]
        places = [self.where(i, horizon * (k + 1) / stops)[:2] for k in range(stops)]
        return {
            "device": unique_id,
            "planned_start": planned_start.isoformat(),
            "stops": [
                {"lat": lat, "lon": lon, "name": f"stop {k + 1}", "service_s": 60, "radius_m": 40}
                for k, (lat, lon) in enumerate(places)
            ],
            "path": {"type": "LineString", "coordinates": [[lon, lat] for lat, lon in path]},
        }


async def create_routes(
    base: str,
    admin_token: str,
    fleet: Fleet,
    unique_ids: list[str],
    stops: int,
    stop_every_s: float,
    concurrency: int = 8,
) -> float:
    """Give every device its route with `POST /api/v1/routes`; returns the seconds it took.
    Raises RuntimeError on the first refusal (a benchmark of routed devices without routes
    would measure the wrong thing)."""
    sem = asyncio.Semaphore(concurrency)
    headers = {"Authorization": f"Bearer {admin_token}"}
    now = datetime.now(UTC)
    t0 = time.perf_counter()
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60) as client:

        async def one(i: int, unique_id: str) -> None:
            body = fleet.route_body(i, unique_id, now, stops, stop_every_s)
            async with sem:
                r = await client.post("/api/v1/routes", json=body)
            if r.status_code != 201:
                raise RuntimeError(f"route for {unique_id}: {r.status_code} {r.text[:300]}")

        await asyncio.gather(*(one(i, u) for i, u in enumerate(unique_ids)))
    return time.perf_counter() - t0
