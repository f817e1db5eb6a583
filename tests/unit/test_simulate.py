"""The demo fleet's replay arithmetic, on the real Munich drive shipped with the package."""

from __future__ import annotations

import itertools
import json
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pyproj import Geod

from tracker.core.model import Fix
from tracker.protocols import native
from tracker.tools import tracks
from tracker.tools.cli import build_parser
from tracker.tools.simulate import (
    Drive,
    Sample,
    _read_tokens,
    _write_tokens,
    default_tokens_path,
    fleet,
    from_fixes,
    load_drive,
    ping,
    plausible,
    shifted,
    speed_warning,
    there_and_back,
    with_motion,
)

GEOD = Geod(ellps="WGS84")
MUNICH = (48.137, 11.575)


def metres(a: Sample, b: Sample) -> float:
    return float(GEOD.inv(a.lon, a.lat, b.lon, b.lat)[2])


def step_speeds(drive: Drive) -> list[float]:
    return [metres(a, b) / (b.t - a.t) for a, b in itertools.pairwise(drive.samples)]


@pytest.fixture(scope="module")
def munich() -> Drive:
    return load_drive()


def straight_line(
    bearing: float, step_m: float, dt: float, n: int
) -> list[tuple[float, float, float]]:
    """(t, lat, lon) points moving `step_m` every `dt` seconds along a fixed bearing."""
    points = [(0.0, *MUNICH)]
    for i in range(1, n):
        _, lat, lon = points[-1]
        lon2, lat2, _ = GEOD.fwd(lon, lat, bearing, step_m)
        points.append((i * dt, lat2, lon2))
    return points


def test_munich_drive_loads_whole_and_clean(munich: Drive) -> None:
    raw = tracks.sample_drive()
    # The recording has a GPS glitch far beyond any car; the replay leaves such points out.
    raw_speeds = step_speeds(from_fixes(raw))
    assert max(raw_speeds) > 100
    assert max(step_speeds(munich)) <= 50.0
    assert len(munich.samples) >= 0.98 * len(raw)
    assert munich.duration == pytest.approx((raw[-1].time - raw[0].time).total_seconds())
    courses = [s.course for s in munich.samples if s.course is not None]
    assert courses and all(0.0 <= c < 360.0 for c in courses)


def test_plausible_keeps_a_clean_track_and_drops_a_lone_spike() -> None:
    t0 = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
    pts = straight_line(90.0, 10.0, 1.0, 20)
    fixes = [Fix(0, t0 + timedelta(seconds=t), lat, lon) for t, lat, lon in pts]
    assert plausible(fixes) == fixes
    spiked = list(fixes)
    spiked[10] = Fix(0, fixes[10].time, fixes[10].lat + 0.05, fixes[10].lon)  # ~5.5 km off
    assert plausible(spiked) == fixes[:10] + fixes[11:]


@pytest.mark.parametrize("bearing", [0.0, 90.0, 225.0])
def test_speed_and_course_come_from_each_step(bearing: float) -> None:
    drive = with_motion(straight_line(bearing, 25.0, 2.0, 6))
    assert drive.samples[0].speed is None
    for s in drive.samples[1:]:
        assert s.speed == pytest.approx(12.5, rel=1e-6)
        assert s.course is not None
        # Forward azimuth of a geodesic changes slightly along a line; 0.1° over 125 m is ample.
        assert abs((s.course - bearing + 180.0) % 360.0 - 180.0) < 0.1


def test_a_standing_car_keeps_its_last_heading() -> None:
    moving = straight_line(90.0, 20.0, 1.0, 3)
    t_end, lat, lon = moving[-1]
    standing = [*moving, (t_end + 1, lat, lon), (t_end + 2, lat, lon)]
    drive = with_motion(standing)
    assert drive.samples[-1].speed == 0.0
    assert drive.samples[-1].course == drive.samples[2].course


def test_at_interpolates_between_samples_and_clamps() -> None:
    drive = with_motion(straight_line(0.0, 10.0, 1.0, 5))
    assert drive.at(-3.0) is drive.samples[0]
    assert drive.at(0.0) is drive.samples[0]
    assert drive.at(2.0) is drive.samples[2]
    assert drive.at(99.0) is drive.samples[-1]
    mid = drive.at(2.25)
    assert mid.t == 2.25
    assert metres(drive.samples[2], mid) == pytest.approx(2.5, abs=1e-3)
    assert metres(mid, drive.samples[3]) == pytest.approx(7.5, abs=1e-3)
    assert (mid.speed, mid.course) == (drive.samples[3].speed, drive.samples[3].course)


def test_replay_speed_is_true_at_any_ping_rate(munich: Drive) -> None:
    """Pinging every 0.3 s of drive time, the distance between consecutive positions over
    that time never exceeds the fastest step of the recording."""
    top = max(step_speeds(munich))
    positions = [munich.at(k * 0.3) for k in range(int(munich.duration / 0.3))]
    implied = [metres(a, b) / 0.3 for a, b in itertools.pairwise(positions)]
    assert max(implied) <= top * (1 + 1e-4)  # a straight line in degrees is not a geodesic
    # ...and the replay covers the whole road, corners included (to within 1 %).
    path = sum(metres(a, b) for a, b in itertools.pairwise(munich.samples))
    assert sum(implied) * 0.3 == pytest.approx(path, rel=0.01)


def test_drive_rejects_unusable_samples() -> None:
    with pytest.raises(ValueError, match="two samples"):
        Drive((Sample(0.0, *MUNICH),))
    with pytest.raises(ValueError, match="increasing"):
        Drive((Sample(0.0, *MUNICH), Sample(0.0, *MUNICH)))
    with pytest.raises(ValueError, match="t = 0"):
        Drive((Sample(1.0, *MUNICH), Sample(2.0, *MUNICH)))


def test_there_and_back_loops_without_a_jump(munich: Drive) -> None:
    loop = there_and_back(munich)
    assert loop.duration == pytest.approx(2 * munich.duration)
    first, last = loop.samples[0], loop.samples[-1]
    assert metres(first, last) < 1e-6  # ends where it started...
    # ...and no step of the loop (wrap-around included) is faster than the drive's own steps.
    assert max(step_speeds(loop)) <= max(step_speeds(munich)) + 1e-6
    turn = loop.at(munich.duration)
    assert metres(turn, munich.samples[-1]) < 1e-6
    # The way back drives the same road in the opposite direction.
    mid = munich.samples[len(munich.samples) // 2]
    back = loop.at(2 * munich.duration - mid.t)
    assert metres(back, mid) < 1e-6
    assert back.course is not None and mid.course is not None
    assert abs((back.course - mid.course) % 360.0 - 180.0) < 30.0


def test_shifted_moves_every_sample_by_the_offset(munich: Drive) -> None:
    moved = shifted(munich, north_m=300.0, east_m=400.0)
    assert [s.t for s in moved.samples] == [s.t for s in munich.samples]
    for a, b in zip(munich.samples[::97], moved.samples[::97], strict=True):
        assert metres(a, b) == pytest.approx(500.0, abs=0.5)
        assert b.lat > a.lat and b.lon > a.lon
        assert (b.speed, b.course) == (a.speed, a.course)


def test_fleet_spreads_drivers_in_time_and_space(munich: Drive) -> None:
    drivers = fleet(munich, 8, prefix="van", spacing_m=300.0)
    assert [d.unique_id for d in drivers] == [f"van-{i:02d}" for i in range(1, 9)]
    assert len({d.name for d in drivers}) == 8
    period = drivers[0].loop.duration
    assert [d.phase_s for d in drivers] == pytest.approx([period * i / 8 for i in range(8)])
    # Nobody starts on top of anybody else.
    starts = [d.sample(0.0, 1.0) for d in drivers]
    gaps = [metres(a, b) for a, b in itertools.combinations(starts, 2)]
    assert min(gaps) > 150.0
    # Each driver's loop is the same loop moved by spacing·√i.
    base = there_and_back(munich)
    for i, d in enumerate(drivers):
        assert metres(base.samples[0], d.loop.samples[0]) == pytest.approx(300.0 * i**0.5, abs=0.5)
    with pytest.raises(ValueError):
        fleet(munich, 0)


def test_driver_replays_at_the_speed_factor_and_wraps(munich: Drive) -> None:
    driver = fleet(munich, 3)[1]
    period = driver.loop.duration

    def same(a: Sample, b: Sample) -> bool:
        return (a.t, a.lat, a.lon) == pytest.approx((b.t, b.lat, b.lon), abs=1e-9)

    assert same(driver.sample(10.0, 5.0), driver.loop.at(driver.phase_s + 50.0))
    assert same(driver.sample(period, 1.0), driver.loop.at(driver.phase_s))
    assert same(driver.sample(period - driver.phase_s + 7.5, 1.0), driver.loop.at(7.5))


def test_ping_is_a_native_ping_moving_at_the_replay_speed() -> None:
    sample = Sample(t=12.0, lat=48.1234567891, lon=11.5, speed=12.5, course=271.26)
    now = datetime(2024, 5, 1, 8, 0, 0, 250000, tzinfo=UTC)
    body = ping(sample, now, speed=4.0)
    fix, named = native.parse_ping(json.loads(json.dumps(body)))
    assert named is None
    assert fix.time == now
    assert (fix.lat, fix.lon) == pytest.approx((48.1234568, 11.5), abs=1e-9)
    assert fix.speed == pytest.approx(50.0)
    assert fix.course == pytest.approx(271.3)
    assert fix.attributes == {"source": "tracker simulate"}
    bare = ping(Sample(0.0, *MUNICH), now, speed=1.0)
    assert "speed" not in bare and "course" not in bare


def test_speed_warning_only_when_the_server_would_reject(munich: Drive) -> None:
    assert speed_warning(munich, 1.0) is None
    assert speed_warning(munich, 2.0) is None
    message = speed_warning(munich, 10.0)
    assert message is not None and "TRACKER_MAX_SPEED_MPS=" in message
    suggested = int(message.split("TRACKER_MAX_SPEED_MPS=")[1].split(",")[0])
    assert suggested >= max(step_speeds(munich)) * 10.0
    assert speed_warning(munich, 10.0, server_max=1000.0) is None


def test_tokens_file_round_trip_is_private(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "tokens.json"
    assert _read_tokens(path) == {}
    _write_tokens(path, {"demo-01": "secret-1"})
    assert _read_tokens(path) == {"demo-01": "secret-1"}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.write_text("not json")
    assert _read_tokens(path) == {}


def test_default_tokens_path_names_the_server(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_tokens_path("http://127.0.0.1:8000") == (
        tmp_path / "tracker" / "simulate-127.0.0.1-8000.json"
    )
    assert default_tokens_path("https://track.example.com").name == (
        "simulate-track.example.com-443.json"
    )


def test_cli_parses_the_demo_command() -> None:
    args = build_parser().parse_args(
        [
            "simulate",
            "--url",
            "http://127.0.0.1:8000",
            "--admin-token",
            "T",
            "--drivers",
            "5",
            "--speed",
            "5",
        ]
    )
    assert (args.command, args.drivers, args.speed, args.admin_token) == ("simulate", 5, 5.0, "T")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["simulate", "--drivers", "0"])
