"""`tracker import`: real recorded drives through a running server's ingest API into PostGIS.

The Munich drive (Apache-2.0) is packaged with tracker (src/tracker/data/ATTRIBUTION.md).
The Delft GPX is GPL-2.0 and never copied into the repository: it is read from the shared
real-data folder next to the checkout when that folder is there.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from importlib import resources
from pathlib import Path

import asyncpg
import gpxpy
import gpxpy.gpx
import httpx
import pytest

from tests.conftest import DeviceCreds, Server, add_device, stored_positions
from tracker.core.model import Fix
from tracker.tools import importer, tracks

SHARED_TRACKS = Path(__file__).resolve().parents[3] / "shared" / "realdata" / "tracks"
DELFT_GPX = SHARED_TRACKS / "car_delft_gpsbabel_sbn-v13.gpx"


def munich_csv() -> Path:
    path = Path(str(resources.files("tracker").joinpath("data", tracks.SAMPLE_DRIVE)))
    assert path.is_file()
    return path


async def last_time(db: asyncpg.Pool, unique_id: str) -> object:
    return await db.fetchval(
        "SELECT l.fix_time FROM last_positions l JOIN devices d ON d.id = l.device_id "
        "WHERE d.unique_id = $1",
        unique_id,
    )


def assert_subset_of_track(rows: list[asyncpg.Record], fixes: list[Fix]) -> None:
    by_time = {fix.time: fix for fix in fixes}
    for row in rows:
        fix = by_time[row["fix_time"]]
        assert row["lat"] == pytest.approx(fix.lat, abs=1e-9)
        assert row["lon"] == pytest.approx(fix.lon, abs=1e-9)


def assert_same_track(rows: list[asyncpg.Record], fixes: list[Fix]) -> None:
    assert len(rows) == len(fixes)
    for row, fix in zip(rows, fixes, strict=True):
        assert row["fix_time"] == fix.time
        assert row["lat"] == pytest.approx(fix.lat, abs=1e-9)
        assert row["lon"] == pytest.approx(fix.lon, abs=1e-9)


async def run_import(
    srv: Server, dev: DeviceCreds, path: Path, **kw: object
) -> importer.ImportSummary:
    return await importer.import_track(
        path, url=srv.base_url, token=dev.token, device=dev.unique_id, **kw
    )


async def test_the_munich_csv_goes_through_the_servers_pipeline(
    server: Server, db: asyncpg.Pool
) -> None:
    dev = await add_device(server)
    fixes = tracks.read_track(munich_csv())
    assert len(fixes) == 1194
    summary = await run_import(server, dev, munich_csv(), batch_size=250)
    assert summary.sent == 1194 and summary.duplicates == 0
    assert summary.stored + summary.rejected == 1194
    # The recording has one 470 m glitch between two 1 Hz points; the server's jump filter
    # refuses it and the few points after it until the distance is plausible again.
    assert 0 < summary.rejected <= 10
    assert all(r.startswith("implausible jump") for r in summary.reasons)
    rows = await stored_positions(db, dev.unique_id)
    assert len(rows) == summary.stored
    assert_subset_of_track(rows, fixes)
    # It went through the live path: the device's last position is the drive's end.
    assert await last_time(db, dev.unique_id) == fixes[-1].time
    # An interrupted import is simply run again: nothing stored is stored twice.
    again = await run_import(server, dev, munich_csv(), batch_size=500)
    assert again.duplicates == summary.stored
    assert len(await stored_positions(db, dev.unique_id)) == summary.stored + again.stored


async def test_a_gpx_track_keeps_elevation_speed_course_and_hdop(
    server: Server, db: asyncpg.Pool, tmp_path: Path
) -> None:
    # The Munich drive written as GPX 1.0 (which has <speed> and <course>) by gpxpy.
    fixes = tracks.read_track(munich_csv())[:300]
    doc = gpxpy.gpx.GPX()
    doc.version = "1.0"
    segment = gpxpy.gpx.GPXTrackSegment()
    for i, fix in enumerate(fixes):
        point = gpxpy.gpx.GPXTrackPoint(
            fix.lat, fix.lon, elevation=500.0 + i % 7, time=fix.time, speed=float(i % 13)
        )
        point.course = float(i % 360)  # type: ignore[assignment]
        point.horizontal_dilution = 1.5
        segment.points.append(point)
    track = gpxpy.gpx.GPXTrack()
    track.segments.append(segment)
    doc.tracks.append(track)
    path = tmp_path / "munich.gpx"
    path.write_text(doc.to_xml(version="1.0"), encoding="utf-8")

    dev = await add_device(server)
    summary = await run_import(server, dev, path, batch_size=64)
    assert (summary.stored, summary.rejected) == (300, 0)
    rows = await stored_positions(db, dev.unique_id)
    assert_same_track(rows, fixes)
    for i, row in enumerate(rows):
        assert row["altitude"] == 500.0 + i % 7
        assert row["speed"] == float(i % 13)
        assert row["course"] == float(i % 360)
        assert row["attributes"] == {"hdop": 1.5}


async def test_a_gpx_without_time_zones_imports_as_utc(server: Server, db: asyncpg.Pool) -> None:
    # `tracker import` refused it before ("GPX time without a zone cannot be placed in UTC").
    path = Path(__file__).parents[1] / "data" / "tracks" / "munich_no_zone.gpx"
    dev = await add_device(server)
    tracker = str(Path(sys.executable).with_name("tracker"))
    args = [tracker, "import", str(path), "--device", dev.unique_id, "--url", server.base_url]
    env = {**os.environ, "TRACKER_DEVICE_TOKEN": dev.token}
    done = await asyncio.to_thread(
        subprocess.run, [*args, "--quiet"], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "120 pings sent: 120 stored, 0 duplicates, 0 rejected" in done.stdout
    rows = await stored_positions(db, dev.unique_id)
    assert_same_track(rows, tracks.sample_drive()[:120])


async def test_the_servers_filters_judge_imported_pings(
    server: Server, db: asyncpg.Pool, tmp_path: Path
) -> None:
    # A teleport in the middle of a real drive: the server's jump filter refuses it.
    lines = munich_csv().read_text().splitlines()
    header, rows = lines[0], lines[1:21]
    time, lat, lon, original = rows[10].split(",")
    rows[10] = ",".join([time, str(float(lat) + 1.0), lon, original])
    path = tmp_path / "jump.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    dev = await add_device(server)
    summary = await run_import(server, dev, path)
    assert (summary.stored, summary.rejected) == (19, 1)
    [(reason, count)] = summary.reasons.items()
    assert count == 1
    assert reason.startswith("implausible jump")
    assert len(await stored_positions(db, dev.unique_id)) == 19


async def test_refusals_stop_the_import_with_the_servers_reason(
    server: Server, db: asyncpg.Pool
) -> None:
    dev = await add_device(server)
    other = await add_device(server)
    with pytest.raises(importer.ImportFailed, match="401"):
        await importer.import_track(
            munich_csv(), url=server.base_url, token="not-a-token", device=dev.unique_id
        )
    # The token decides the device; naming another one is refused, not silently redirected.
    with pytest.raises(importer.ImportFailed, match="403"):
        await importer.import_track(
            munich_csv(), url=server.base_url, token=dev.token, device=other.unique_id
        )
    assert await stored_positions(db, dev.unique_id) == []
    assert await stored_positions(db, other.unique_id) == []


class FlakyTransport(httpx.AsyncBaseTransport):
    """The real server behind a network that drops the first request and then answers 503."""

    def __init__(self, real: httpx.AsyncBaseTransport) -> None:
        self.real = real
        self.calls = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        if self.calls == 1:
            raise httpx.ConnectError("connection refused", request=request)
        if self.calls == 2:
            return httpx.Response(503, headers={"Retry-After": "2"}, json={"error": "unavailable"})
        return await self.real.handle_async_request(request)

    async def aclose(self) -> None:
        await self.real.aclose()


async def test_unavailable_and_unreachable_are_retried(server: Server, db: asyncpg.Pool) -> None:
    dev = await add_device(server)
    transport = FlakyTransport(httpx.AsyncHTTPTransport())
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    async with httpx.AsyncClient(base_url=server.base_url, transport=transport) as client:
        summary = await importer.import_track(
            munich_csv(),
            url=server.base_url,
            token=dev.token,
            device=dev.unique_id,
            client=client,
            sleep=sleep,
            backoff_s=0.25,
        )
    assert summary.sent == 1194
    assert waits == [0.25, 2.0]  # backoff after the network error, then Retry-After
    assert transport.calls == 2 + 3  # two failed attempts, then three batches of 500
    assert len(await stored_positions(db, dev.unique_id)) == summary.stored > 1000


async def test_tracker_import_command(server: Server, db: asyncpg.Pool) -> None:
    dev = await add_device(server)
    tracker = str(Path(sys.executable).with_name("tracker"))
    env = {**os.environ, "TRACKER_DEVICE_TOKEN": dev.token}
    args = [
        tracker,
        "import",
        str(munich_csv()),
        "--device",
        dev.unique_id,
        "--url",
        server.base_url,
    ]

    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*args, *extra], env=env, capture_output=True, text=True, timeout=120)

    done = await asyncio.to_thread(run, "--quiet")
    assert done.returncode == 0, done.stderr
    counts = re.search(r"1194 pings sent: (\d+) stored, 0 duplicates, (\d+) rejected", done.stdout)
    assert counts is not None, done.stdout
    stored_count, rejected_count = int(counts[1]), int(counts[2])
    assert stored_count + rejected_count == 1194
    assert "rejected: implausible jump" in done.stdout
    assert len(await stored_positions(db, dev.unique_id)) == stored_count
    env["TRACKER_DEVICE_TOKEN"] = "wrong"
    refused = await asyncio.to_thread(run, "--quiet")
    assert refused.returncode == 1
    assert "import stopped: HTTP 401" in refused.stderr


@pytest.mark.skipif(not DELFT_GPX.is_file(), reason="shared real-data folder not present")
async def test_the_delft_gpx_from_the_shared_folder(server: Server, db: asyncpg.Pool) -> None:
    fixes = tracks.read_track(DELFT_GPX)
    assert len(fixes) > 3000
    dev = await add_device(server)
    summary = await run_import(server, dev, DELFT_GPX)
    assert summary.stored + summary.rejected == len(fixes)
    assert summary.rejected == 0, summary.reasons
    rows = await stored_positions(db, dev.unique_id)
    assert_same_track(rows, fixes)
    with_speed = [(row, fix) for row, fix in zip(rows, fixes, strict=True) if fix.speed is not None]
    assert with_speed, "the Delft GPX carries speeds"
    for row, fix in with_speed:
        assert row["speed"] == pytest.approx(fix.speed, rel=1e-6)
