"""Each named filter, on its own and in `screen`."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from tracker.core import filters
from tracker.core.filters import FilterConfig
from tracker.core.model import Fix

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
CFG = FilterConfig()


def fix(seconds: float = 0, lat: float = 48.0, lon: float = 11.0, **kw: float) -> Fix:
    return Fix(1, NOW + timedelta(seconds=seconds), lat, lon, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("field", ["lat", "lon", "speed", "course", "accuracy", "altitude"])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_invalid_catches_non_finite_numbers(field: str, bad: float) -> None:
    base = {"lat": 48.0, "lon": 11.0}
    f = Fix(device_id=1, time=NOW, **{**base, field: bad})  # type: ignore[arg-type]
    assert filters.invalid(f, None, NOW, CFG) == f"{field}: must be a finite number"
    assert filters.invalid(fix(), None, NOW, CFG) is None


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        ({"lat": 90.0001}, "lat"),
        ({"lat": -91.0}, "lat"),
        ({"lon": 180.5}, "lon"),
        ({"lon": -181.0}, "lon"),
        ({"speed": -1.0}, "speed"),
        ({"accuracy": -5.0}, "accuracy"),
    ],
)
def test_out_of_range(kw: dict[str, float], needle: str) -> None:
    reason = filters.out_of_range(fix(**kw), None, NOW, CFG)
    assert reason is not None and reason.startswith(needle)


def test_range_edges_are_allowed() -> None:
    for lat, lon in [(90.0, 180.0), (-90.0, -180.0), (0.0, 0.0)]:
        assert filters.out_of_range(fix(lat=lat, lon=lon), None, NOW, CFG) is None


def test_future_allows_ten_minutes_of_clock_skew() -> None:
    assert filters.future(fix(599), None, NOW, CFG) is None
    reason = filters.future(fix(601), None, NOW, CFG)
    assert reason is not None and "future" in reason
    assert filters.future(fix(-10 * 365 * 86400), None, NOW, CFG) is None


def test_poor_accuracy_only_when_configured() -> None:
    assert filters.poor_accuracy(fix(accuracy=500), None, NOW, CFG) is None
    strict = FilterConfig(max_accuracy_m=100)
    assert filters.poor_accuracy(fix(accuracy=99), None, NOW, strict) is None
    assert filters.poor_accuracy(fix(accuracy=101), None, NOW, strict) is not None


def test_implausible_jump_uses_distance_over_time() -> None:
    prev = fix(0)
    # 0.01 degrees of latitude is about 1.1 km.
    assert filters.implausible_jump(fix(60, lat=48.01), prev, NOW, CFG) is None  # ~18 m/s
    reason = filters.implausible_jump(fix(5, lat=48.01), prev, NOW, CFG)  # ~220 m/s
    assert reason is not None and "implausible" in reason
    assert filters.implausible_jump(fix(0, lat=48.01), prev, NOW, CFG) is None  # same time
    assert filters.implausible_jump(fix(5, lat=48.01), None, NOW, CFG) is None


def test_haversine_matches_a_known_distance() -> None:
    # Munich Marienplatz to Munich central station: about 1.3 km.
    d = filters.haversine_m(48.13743, 11.57549, 48.14006, 11.55965)
    assert 1150 < d < 1250


def test_screen_keeps_indexes_and_does_not_let_one_bad_point_poison_the_rest() -> None:
    fixes = [(0, fix(0)), (1, fix(1, lat=49.0)), (2, fix(2, lat=48.0001)), (3, fix(3, lat=95))]
    accepted, rejects = filters.screen(fixes, None, NOW, CFG)
    assert [i for i, _ in accepted] == [0, 2]
    assert [r.index for r in rejects] == [1, 3]
    assert "implausible" in rejects[0].reason and rejects[1].reason.startswith("lat")


def test_screen_checks_jump_against_last_known_fix_but_not_for_late_pings() -> None:
    last = fix(100)
    # A late ping far away is history from while the phone was offline, not a jump.
    late = [(0, fix(0, lat=49.0))]
    assert filters.screen(late, last, NOW, CFG)[1] == []
    jump = [(0, fix(101, lat=49.0))]
    assert len(filters.screen(jump, last, NOW, CFG)[1]) == 1


def test_unstorable_attributes_are_refused_before_they_reach_the_database() -> None:
    clean = Fix(1, NOW, 48.0, 11.0, attributes={"note": "ok", "nested": [{"a": "b"}]})
    assert filters.unstorable(clean, None, NOW, CFG) is None
    for bad in ({"\x00": None}, {"k": "a\x00b"}, {"k": [{"x": "\x00"}]}):
        reason = filters.unstorable(Fix(1, NOW, 48.0, 11.0, attributes=bad), None, NOW, CFG)
        assert reason is not None and "NUL" in reason


def test_past_retention_only_when_a_retention_is_set() -> None:
    month = FilterConfig(max_age_s=30 * 86400.0)
    assert filters.past_retention(fix(-31 * 86400), None, NOW, month) == (
        "time: 31 days old, past the retention of 30 days"
    )
    assert filters.past_retention(fix(-29 * 86400), None, NOW, month) is None
    assert filters.past_retention(fix(-3650 * 86400), None, NOW, CFG) is None
    accepted, rejects = filters.screen([(0, fix(-31 * 86400)), (1, fix())], None, NOW, month)
    assert [i for i, _ in accepted] == [1]
    assert [(r.index, r.code) for r in rejects] == [(0, "past_retention")]


def test_a_time_before_gps_existed_is_out_of_range() -> None:
    year_one = Fix(1, datetime(1, 1, 1, tzinfo=UTC), 48.0, 11.0)
    assert filters.out_of_range(year_one, None, NOW, CFG) == (
        "time: before the GPS epoch (1980-01-06)"
    )
    gps_start = Fix(1, datetime(1980, 1, 6, tzinfo=UTC), 48.0, 11.0)
    assert filters.out_of_range(gps_start, None, NOW, CFG) is None
