"""Geofence rules, online stays and dwell detection on synthetic and real tracks."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from tracker.core import motion
from tracker.core.geo import LocalProjection
from tracker.core.model import Fix
from tracker.tools.tracks import sample_drive

T0 = datetime(2024, 5, 6, 8, 0, tzinfo=UTC)
FRAME = LocalProjection(52.0, 4.36)


def at(sec: float, x: float, y: float) -> Fix:
    lat, lon = FRAME.to_latlon(x, y)
    return Fix(1, T0 + timedelta(seconds=sec), lat, lon)


def test_accuracy_widens_a_geofence_up_to_a_cap() -> None:
    assert motion.slack(None, 50.0) == 0.0
    assert motion.slack(-3.0, 50.0) == 0.0
    assert motion.slack(math.nan, 50.0) == 0.0
    assert motion.slack(12.0, 50.0) == 12.0
    assert motion.slack(900.0, 50.0) == 50.0
    assert motion.inside(60.0, 50.0, 12.0)
    assert not motion.inside(63.0, 50.0, 12.0)


def test_departure_needs_to_be_clearly_outside() -> None:
    assert not motion.outside(65.0, 50.0, 10.0, 10.0)
    assert motion.outside(71.0, 50.0, 10.0, 10.0)


def test_arrival_needs_to_be_slow_or_staying() -> None:
    kw = {"slow_mps": 2.0, "dwell_s": 30.0}
    assert motion.arrives(20.0, 50.0, 5.0, 1.0, 0.0, **kw)
    assert not motion.arrives(20.0, 50.0, 5.0, 9.0, 10.0, **kw)  # passing through
    assert motion.arrives(20.0, 50.0, 5.0, 9.0, 31.0, **kw)  # jittery speed, but staying
    assert not motion.arrives(20.0, 50.0, 5.0, None, 0.0, **kw)
    assert not motion.arrives(80.0, 50.0, 5.0, 0.0, 300.0, **kw)  # outside


def test_speed_between_two_positions() -> None:
    assert motion.speed_between(0, 0, 10.0, 30, 40, 15.0) == pytest.approx(10.0)
    assert motion.speed_between(0, 0, 10.0, 30, 40, 10.0) is None


def test_a_stay_holds_while_within_its_radius() -> None:
    stay = motion.Stay(0.0, 0.0, 100.0)
    stay = stay.update(5.0, -8.0, 110.0, 20.0)
    assert stay.since == 100.0 and stay.duration(130.0) == 30.0
    moved = stay.update(25.0, 0.0, 131.0, 20.0)
    assert (moved.x, moved.y, moved.since) == (25.0, 0.0, 131.0)
    assert moved.duration(131.0) == 0.0


def test_find_dwells_on_a_synthetic_drive() -> None:
    fixes = [at(i, 10.0 * i, 0) for i in range(60)]  # 600 m at 10 m/s
    fixes += [at(60 + i, 600 + (i % 3), (i % 2) * 4.0) for i in range(90)]  # 90 s parked
    fixes += [at(150 + i, 600 + 10.0 * i, 0) for i in range(1, 30)]
    fixes += [at(179 + i, 890 + (i % 2), 0) for i in range(40)]  # 40 s at a light
    dwells = motion.find_dwells(fixes, radius_m=30.0, min_s=60.0)
    assert len(dwells) == 1
    d = dwells[0]
    assert d.seconds >= 89.0
    assert (d.start - T0).total_seconds() == pytest.approx(58.0, abs=3.0)
    x, y = FRAME.to_xy(d.lat, d.lon)
    assert math.hypot(x - 601.0, y - 2.0) < 10.0
    assert fixes[d.first].time == d.start and fixes[d.last].time == d.end
    assert motion.find_dwells([], 30.0, 60.0) == []


def test_find_dwells_on_the_real_munich_drive() -> None:
    fixes = sample_drive()
    dwells = motion.find_dwells(fixes, radius_m=30.0, min_s=60.0)
    t0 = fixes[0].time
    starts = [(d.start - t0).total_seconds() for d in dwells]
    # The two stops of the recording (a few seconds either side for the radius).
    assert len(dwells) == 2
    assert starts[0] == pytest.approx(407.0, abs=15.0)
    assert starts[1] == pytest.approx(1030.0, abs=15.0)
    assert all(60.0 <= d.seconds <= 120.0 for d in dwells)
