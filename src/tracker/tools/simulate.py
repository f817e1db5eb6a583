"""`tracker simulate`: a demo fleet replaying a real recorded drive through the ingest API.

One recorded drive becomes N drivers: the drive is played there and back (so the loop
has no jump from its end to its start), each driver starts at a different point of that
loop and is shifted a few hundred metres from the others, so their markers don't overlap.
Every driver is a real device registered through the admin API and posts with its own
token to POST /api/v1/positions, with fix times = now: the drive is replayed as if live,
at real or accelerated speed.

The replay arithmetic (Drive, Driver, ping bodies) is pure; `run()` does the HTTP.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import dataclasses
import itertools
import json
import logging
import math
import os
import secrets
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from pyproj import Geod

from tracker.core.filters import FilterConfig, screen
from tracker.core.model import Fix
from tracker.tools import tracks

log = logging.getLogger(__name__)

_GEOD = Geod(ellps="WGS84")
# Golden angle: successive drivers' offsets spiral out without lining up (a sunflower).
_GOLDEN_ANGLE_DEG = 137.50776405003785
# Below this a step is GPS jitter of a standing car: keep the previous heading.
_MIN_HEADING_STEP_M = 1.0
# The server's default TRACKER_MAX_SPEED_MPS; faster replays trip its jump filter.
_DEFAULT_SERVER_MAX_SPEED = 100.0
_REGISTER_CONCURRENCY = 8


class SimulateError(Exception):
    """The fleet cannot run (bad admin token, unreachable server, unusable drive)."""


@dataclass(frozen=True, slots=True)
class Sample:
    """One recorded position, `t` seconds into the drive, with the motion that led to it."""

    t: float
    lat: float
    lon: float
    speed: float | None = None  # m/s over the step that ended here
    course: float | None = None  # degrees clockwise from north


@dataclass(frozen=True)
class Drive:
    """A recorded drive: samples in time order, the first at t = 0."""

    samples: tuple[Sample, ...]
    times: tuple[float, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.samples) < 2:
            raise ValueError("a drive needs at least two samples")
        if self.samples[0].t != 0.0:
            raise ValueError("a drive starts at t = 0")
        times = tuple(s.t for s in self.samples)
        if any(b <= a for a, b in itertools.pairwise(times)):
            raise ValueError("drive samples must be strictly increasing in time")
        object.__setattr__(self, "times", times)

    @property
    def duration(self) -> float:
        """Seconds from the first sample to the last."""
        return self.times[-1]

    def at(self, t: float) -> Sample:
        """Where the car was at `t` (clamped to the drive): between two samples, on the
        straight step joining them, moving as over that step. Interpolating keeps the
        replayed speed true at any ping rate; the steps are metres long, so a straight
        line in degrees is exact enough."""
        i = bisect.bisect_right(self.times, t) - 1
        if i < 0:
            return self.samples[0]
        if i >= len(self.samples) - 1:
            return self.samples[-1]
        a, b = self.samples[i], self.samples[i + 1]
        if t == a.t:
            return a
        f = (t - a.t) / (b.t - a.t)
        return Sample(
            t, a.lat + (b.lat - a.lat) * f, a.lon + (b.lon - a.lon) * f, b.speed, b.course
        )

    @property
    def top_speed(self) -> float:
        """The fastest step, m/s."""
        return max((s.speed for s in self.samples if s.speed is not None), default=0.0)


def with_motion(points: Sequence[tuple[float, float, float]]) -> Drive:
    """(t, lat, lon) points to a Drive whose samples carry speed and heading of each step."""
    if len(points) < 2:
        raise ValueError("a drive needs at least two samples")
    t0 = points[0][0]
    lats = [p[1] for p in points]
    lons = [p[2] for p in points]
    azimuths, _back, distances = _GEOD.inv(lons[:-1], lats[:-1], lons[1:], lats[1:])
    samples = [Sample(0.0, lats[0], lons[0])]
    course: float | None = None
    for i in range(1, len(points)):
        dt = points[i][0] - points[i - 1][0]
        dist = float(distances[i - 1])
        if dist >= _MIN_HEADING_STEP_M:
            course = float(azimuths[i - 1]) % 360.0
        speed = dist / dt if dt > 0 else None
        samples.append(Sample(points[i][0] - t0, lats[i], lons[i], speed, course))
    return Drive(tuple(samples))


def from_fixes(fixes: Sequence[Fix]) -> Drive:
    """A recorded track (time-ordered fixes) to a Drive; repeated timestamps are dropped."""
    if not fixes:
        raise ValueError("the track has no fixes")
    start = fixes[0].time
    points: list[tuple[float, float, float]] = []
    for fix in fixes:
        t = (fix.time - start).total_seconds()
        if points and t <= points[-1][0]:
            continue
        points.append((t, fix.lat, fix.lon))
    return with_motion(points)


def plausible(fixes: Sequence[Fix], max_speed_mps: float = 50.0) -> list[Fix]:
    """The fixes the server's own filters accept at a car's top speed: drops GPS glitches
    (the Munich drive has a 470 m/s one), so the replay is clean at any speed factor."""
    if not fixes:
        return []
    cfg = FilterConfig(max_future_s=math.inf, max_speed_mps=max_speed_mps)
    accepted, _rejects = screen(enumerate(fixes), None, fixes[-1].time, cfg)
    return [fix for _index, fix in accepted]


def load_drive(path: Path | None = None) -> Drive:
    """The GPX/CSV drive at `path`, else the Munich drive shipped with the package."""
    fixes = tracks.read_track(path) if path is not None else tracks.sample_drive()
    return from_fixes(plausible(fixes))


def there_and_back(drive: Drive) -> Drive:
    """The drive followed by the same road driven back, so looping it never jumps."""
    forward = [(s.t, s.lat, s.lon) for s in drive.samples]
    end = drive.duration
    back = [(2 * end - t, lat, lon) for t, lat, lon in reversed(forward[:-1])]
    return with_motion(forward + back)


def shifted(drive: Drive, north_m: float, east_m: float) -> Drive:
    """The same drive moved by a fixed offset in metres (headings and speeds unchanged)."""
    if north_m == 0.0 and east_m == 0.0:
        return drive
    distance = math.hypot(north_m, east_m)
    azimuth = math.degrees(math.atan2(east_m, north_m))
    n = len(drive.samples)
    lons, lats, _ = _GEOD.fwd(
        [s.lon for s in drive.samples],
        [s.lat for s in drive.samples],
        [azimuth] * n,
        [distance] * n,
    )
    return Drive(
        tuple(
            dataclasses.replace(s, lat=float(lat), lon=float(lon))
            for s, lat, lon in zip(drive.samples, lats, lons, strict=True)
        )
    )


@dataclass(frozen=True)
class Driver:
    """One demo vehicle: its device identity and its own copy of the looped drive."""

    unique_id: str
    name: str
    loop: Drive
    phase_s: float  # where in the loop this driver is at the start of the replay

    def sample(self, elapsed_s: float, speed: float) -> Sample:
        """Where the driver is `elapsed_s` wall seconds into a replay at `speed`x."""
        period = self.loop.duration
        return self.loop.at((self.phase_s + elapsed_s * speed) % period)


def fleet(drive: Drive, count: int, prefix: str = "demo", spacing_m: float = 300.0) -> list[Driver]:
    """`count` drivers spread evenly over the there-and-back loop and apart in space."""
    if count < 1:
        raise ValueError("the fleet needs at least one driver")
    loop = there_and_back(drive)
    drivers = []
    for i in range(count):
        radius = spacing_m * math.sqrt(i)
        angle = math.radians(i * _GOLDEN_ANGLE_DEG)
        drivers.append(
            Driver(
                unique_id=f"{prefix}-{i + 1:02d}",
                name=f"Demo car {i + 1}",
                loop=shifted(loop, radius * math.cos(angle), radius * math.sin(angle)),
                phase_s=loop.duration * i / count,
            )
        )
    return drivers


def ping(sample: Sample, now: datetime, speed: float) -> dict[str, Any]:
    """The native ingest body for a sample replayed at `now`: it moves `speed`x as fast."""
    body: dict[str, Any] = {
        "time": now.astimezone(UTC).isoformat(),
        "lat": round(sample.lat, 7),
        "lon": round(sample.lon, 7),
        "attributes": {"source": "tracker simulate"},
    }
    if sample.speed is not None:
        body["speed"] = round(sample.speed * speed, 2)
    if sample.course is not None:
        body["course"] = round(sample.course, 1)
    return body


def speed_warning(
    drive: Drive, speed: float, server_max: float = _DEFAULT_SERVER_MAX_SPEED
) -> str | None:
    """A hint when an accelerated replay will trip the server's implausible-jump filter."""
    top = drive.top_speed * speed
    if top <= server_max:
        return None
    needed = int(math.ceil(top * 1.2 / 50.0) * 50)
    return (
        f"at --speed {speed:g} the cars reach about {top:.0f} m/s; a server rejects pings "
        f"faster than TRACKER_MAX_SPEED_MPS (default {server_max:.0f}) as implausible jumps. "
        f"Start the demo server with TRACKER_MAX_SPEED_MPS={needed}, or use a lower --speed."
    )


# ---- I/O: registering devices and posting pings ------------------------------------------


@dataclass(frozen=True)
class SimulateConfig:
    """What `tracker simulate` was asked to do."""

    url: str = "http://127.0.0.1:8000"
    admin_token: str | None = None
    drivers: int = 5
    speed: float = 1.0
    interval_s: float = 1.0
    prefix: str = "demo"
    spacing_m: float = 300.0
    duration_s: float | None = None  # None: until interrupted
    drive_path: Path | None = None
    tokens_path: Path | None = None  # None: default_tokens_path(url)
    routes: bool = False  # give each car a route ahead of it (tools/demo_routes.py)


@dataclass
class Stats:
    """What the fleet's pings came to."""

    posted: int = 0
    stored: int = 0
    rejected: int = 0
    failed: int = 0
    reasons: Counter[str] = field(default_factory=Counter)

    def summary(self) -> str:
        text = (
            f"{self.posted} pings posted: {self.stored} stored, {self.rejected} rejected, "
            f"{self.failed} failed"
        )
        if self.reasons:
            top = ", ".join(f"{reason} ×{n}" for reason, n in self.reasons.most_common(3))
            text += f" ({top})"
        return text


def default_tokens_path(url: str) -> Path:
    """Per-server file remembering demo device tokens (shown by the server only once)."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    parts = urlsplit(url)
    server = (
        f"{parts.hostname or 'localhost'}-{parts.port or (443 if parts.scheme == 'https' else 80)}"
    )
    return base / "tracker" / f"simulate-{server}.json"


def _read_tokens(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)}


def _write_tokens(path: Path, tokens: dict[str, str]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Device tokens are credentials: readable by the owner only.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(tokens, f, indent=1, sort_keys=True)
    except OSError as exc:
        log.warning("could not save demo device tokens to %s: %s", path, exc)


class Registry:
    """Demo devices' tokens: remembered from earlier runs, else registered via the admin API."""

    def __init__(self, client: httpx.AsyncClient, admin_token: str | None, path: Path) -> None:
        self._client = client
        self._admin_token = admin_token
        self._path = path
        self._tokens = _read_tokens(path)

    async def token(self, driver: Driver, fresh: bool = False) -> tuple[Driver, str]:
        """The driver (its unique id may change on a clash) and its device token."""
        known = self._tokens.get(driver.unique_id)
        if known and not fresh:
            return driver, known
        status, body = await self._register(driver)
        if status == 409:
            # The id exists but its token is not ours to know (it is shown only once).
            renamed = dataclasses.replace(
                driver, unique_id=f"{driver.unique_id}-{secrets.token_hex(3)}"
            )
            log.warning(
                "device %s already exists and its token is unknown here; registering %s",
                driver.unique_id,
                renamed.unique_id,
            )
            driver = renamed
            status, body = await self._register(driver)
        if status != 201 or not isinstance(body.get("token"), str):
            raise SimulateError(
                f"registering {driver.unique_id} failed: HTTP {status} {body.get('message', '')}"
            )
        token: str = body["token"]
        self._tokens[driver.unique_id] = token
        _write_tokens(self._path, self._tokens)
        return driver, token

    async def _register(self, driver: Driver) -> tuple[int, dict[str, Any]]:
        if not self._admin_token:
            raise SimulateError(
                f"no token known for {driver.unique_id}: pass --admin-token "
                "(or set TRACKER_ADMIN_TOKEN) to register the demo devices"
            )
        try:
            r = await self._client.post(
                "/api/v1/devices",
                json={"name": driver.name, "unique_id": driver.unique_id},
                headers={"Authorization": f"Bearer {self._admin_token}"},
            )
        except httpx.HTTPError as exc:
            raise SimulateError(f"cannot reach the server: {exc}") from exc
        if r.status_code in (401, 403):
            raise SimulateError("the server refused the admin token")
        try:
            body = r.json()
        except ValueError:
            body = {}
        return r.status_code, body if isinstance(body, dict) else {}


async def _post(
    client: httpx.AsyncClient, token: str, body: dict[str, Any], stats: Stats
) -> int | None:
    """Post one ping; count the outcome. The HTTP status, or None when nothing answered."""
    stats.posted += 1
    try:
        r = await client.post(
            "/api/v1/positions", json=body, headers={"Authorization": f"Bearer {token}"}
        )
    except httpx.HTTPError as exc:
        stats.failed += 1
        stats.reasons[type(exc).__name__] += 1
        return None
    try:
        result = r.json()
    except ValueError:
        result = {}
    if r.status_code in (202, 422) and isinstance(result, dict):
        stats.stored += int(result.get("stored", 0) or 0)
        rejects = result.get("rejects") or []
        stats.rejected += len(rejects)
        for reject in rejects:
            reason = str(reject.get("reason", "?")) if isinstance(reject, dict) else "?"
            stats.reasons[reason.split(":")[0]] += 1
    else:
        stats.failed += 1
        stats.reasons[f"HTTP {r.status_code}"] += 1
    return r.status_code


async def _drive(
    client: httpx.AsyncClient,
    registry: Registry,
    driver: Driver,
    token: str,
    cfg: SimulateConfig,
    start: float,
    stats: Stats,
    stop: asyncio.Event,
) -> None:
    """One driver's posting loop: a ping every interval, on a fixed schedule."""
    loop = asyncio.get_running_loop()
    tick = 0
    while not stop.is_set():
        due = start + tick * cfg.interval_s
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.0, due - loop.time()))
            return
        elapsed = loop.time() - start
        body = ping(driver.sample(elapsed, cfg.speed), datetime.now(UTC), cfg.speed)
        status = await _post(client, token, body, stats)
        if status == 401:
            # The server forgot the device (e.g. a fresh database): register it again.
            try:
                driver, token = await registry.token(driver, fresh=True)
            except SimulateError as exc:
                log.warning("%s", exc)
        # A slow server makes us skip ticks rather than queue a backlog of stale pings.
        tick = max(tick + 1, math.ceil((loop.time() - start) / cfg.interval_s))


async def run(cfg: SimulateConfig, stop: asyncio.Event | None = None) -> Stats:
    """Register the fleet and replay until `cfg.duration_s` passes or `stop` is set."""
    if cfg.speed <= 0 or cfg.interval_s <= 0:
        raise SimulateError("--speed and --interval must be positive")
    try:
        drive = load_drive(cfg.drive_path)
    except (OSError, ValueError) as exc:
        raise SimulateError(f"cannot load the drive: {exc}") from exc
    warning = speed_warning(drive, cfg.speed)
    if warning:
        log.warning("%s", warning)
    stop = stop or asyncio.Event()
    stats = Stats()
    tokens_path = cfg.tokens_path or default_tokens_path(cfg.url)
    limits = httpx.Limits(max_connections=min(100, cfg.drivers), max_keepalive_connections=100)
    async with httpx.AsyncClient(base_url=cfg.url, timeout=10.0, limits=limits) as client:
        registry = Registry(client, cfg.admin_token, tokens_path)
        gate = asyncio.Semaphore(_REGISTER_CONCURRENCY)

        async def enrol(driver: Driver) -> tuple[Driver, str]:
            async with gate:
                return await registry.token(driver)

        members = await asyncio.gather(
            *(enrol(d) for d in fleet(drive, cfg.drivers, cfg.prefix, cfg.spacing_m))
        )
        if cfg.routes and cfg.admin_token:
            from tracker.tools import demo_routes

            now = datetime.now(UTC)
            for d, _ in members:
                await demo_routes.plan(client, cfg.admin_token, d, now)
        log.info(
            "replaying a %.0f s drive there and back as %d drivers at %gx (%s)",
            drive.duration,
            len(members),
            cfg.speed,
            ", ".join(d.unique_id for d, _ in members),
        )
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        tasks = [
            asyncio.create_task(
                # Staggered starts spread the fleet's posts over the interval.
                _drive(
                    client,
                    registry,
                    d,
                    tok,
                    cfg,
                    t0 + cfg.interval_s * i / len(members),
                    stats,
                    stop,
                )
            )
            for i, (d, tok) in enumerate(members)
        ]
        reporter = asyncio.create_task(_report(stats, stop))
        try:
            if cfg.duration_s is None:
                await stop.wait()
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), cfg.duration_s)
        finally:
            stop.set()
            await asyncio.gather(*tasks, reporter, return_exceptions=True)
    log.info("%s", stats.summary())
    return stats


async def _report(stats: Stats, stop: asyncio.Event, every_s: float = 10.0) -> None:
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)
            return
        log.info("%s", stats.summary())


# ---- command line ------------------------------------------------------------------


def _command(args: argparse.Namespace) -> int:
    from tracker.config import Settings

    cfg = SimulateConfig(
        url=args.url.rstrip("/"),
        admin_token=args.admin_token or Settings.from_env().admin_token,
        drivers=args.drivers,
        speed=args.speed,
        interval_s=args.interval,
        prefix=args.prefix,
        spacing_m=args.spacing,
        duration_s=args.duration,
        drive_path=args.drive,
        tokens_path=args.tokens_file,
        routes=args.routes,
    )
    # One INFO line per request would drown the periodic summaries.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        asyncio.run(run(cfg))
    except SimulateError as exc:
        log.error("%s", exc)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `tracker simulate` to the CLI."""
    p = sub.add_parser(
        "simulate",
        help="replay a real recorded drive as a fleet of demo drivers posting live pings",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--url", default="http://127.0.0.1:8000", help="server base URL")
    p.add_argument(
        "--admin-token",
        help="registers the demo devices (default: TRACKER_ADMIN_TOKEN); not needed once "
        "their tokens are remembered in --tokens-file",
    )
    p.add_argument("--drivers", type=_positive_int, default=5, help="how many cars (default 5)")
    p.add_argument("--speed", type=float, default=1.0, help="replay speed factor (default 1)")
    p.add_argument("--interval", type=float, default=1.0, help="wall seconds between a car's pings")
    p.add_argument("--prefix", default="demo", help="unique id prefix of the demo devices")
    p.add_argument("--spacing", type=float, default=300.0, help="metres between cars' offsets")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--drive", type=Path, default=None, help="a CSV with time_utc,lat,lon")
    p.add_argument(
        "--routes",
        action="store_true",
        help="give each car a route of stops ahead of it, the drive as its path",
    )
    p.add_argument(
        "--tokens-file",
        type=Path,
        default=None,
        help="where demo device tokens are remembered (default ~/.cache/tracker/...)",
    )
    p.set_defaults(func=_command)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value
