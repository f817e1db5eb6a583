"""Learned travel times (cell crossings, the learned profile) and the ETA interval."""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pytest

from tracker.core.geo import LocalProjection
from tracker.core.model import Fix, Route, Stop
from tracker.core.route import history as hist
from tracker.core.route import progress as prog
from tracker.core.route.interval import Spread

T0 = datetime(2024, 5, 6, 8, 0, tzinfo=UTC)  # a Monday, 08:00 UTC
FRAME = LocalProjection(48.137, 11.575)


def ll(x: float, y: float) -> tuple[float, float]:
    return FRAME.to_latlon(x, y)


def track(
    speed: float, x0: float = 0.0, x1: float = 3000.0, t0: float = 0.0
) -> list[tuple[float, float, float]]:
    """(epoch s, lat, lon) once a second eastwards at `speed` m/s."""
    out = []
    n = round((x1 - x0) / speed)
    for i in range(n + 1):
        lat, lon = ll(x0 + i * speed, 0.0)
        out.append((T0.timestamp() + t0 + i, lat, lon))
    return out


def snapshot(crossings: list[hist.Crossing]) -> dict[tuple[int, int, int], list[hist.CellStats]]:
    sums: dict[tuple[int, int, int, int], list[float]] = defaultdict(lambda: [0, 0.0, 0.0])
    for c in crossings:
        s = sums[(c.cell_y, c.cell_x, c.heading, c.hour_of_week)]
        s[0] += 1
        s[1] += c.log_pace
        s[2] += c.log_pace**2
    out: dict[tuple[int, int, int], list[hist.CellStats]] = defaultdict(list)
    for (y, x, h, how), (n, s1, s2) in sums.items():
        out[(y, x, h)].append(hist.CellStats(how, int(n), s1, s2))
    return dict(out)


def test_crossings_measure_the_pace_heading_and_hour_of_each_cell() -> None:
    cs = hist.crossings(track(10.0))
    assert len(cs) >= 20  # 3 km of cells about 75 m wide (0.001 degree of longitude)
    for c in cs:
        assert c.heading == 2  # east
        assert c.hour_of_week == 8  # Monday 08:00 UTC
        assert c.seconds / c.metres == pytest.approx(0.1, rel=0.05)
    # The first cell was not entered, and the last not left: neither is a crossing.
    first = hist.cell_of(*ll(0.0, 0.0))
    assert (cs[0].cell_y, cs[0].cell_x) != first


def test_a_long_stand_and_a_silence_are_no_travel_time() -> None:
    stand = track(10.0, 0.0, 1000.0)
    t_end = stand[-1][0]
    lat, lon = ll(1000.0, 0.0)
    stand += [(t_end + i, lat, lon) for i in range(1, 900)]  # a 15-minute layover
    stand += [(t + 900, la, lo) for t, la, lo in track(10.0, 1000.0, 2000.0, 100.0)[1:]]
    assert all(c.seconds <= hist.MAX_CROSSING_S for c in hist.crossings(stand))
    gap = track(10.0, 0.0, 1000.0) + [
        (t + 500, la, lo) for t, la, lo in track(10.0, 1010.0, 2000.0, 101.0)
    ]
    assert all(c.seconds / c.metres < 0.2 for c in hist.crossings(gap))


def route(planned_s: float) -> Route:
    path = (ll(0.0, 0.0), ll(5000.0, 0.0))
    stops = (
        Stop(1, 1, *ll(2500.0, 0.0), planned_arrival=T0 + timedelta(seconds=planned_s / 2)),
        Stop(2, 2, *ll(5000.0, 0.0), planned_arrival=T0 + timedelta(seconds=planned_s)),
    )
    return Route(1, 7, T0, stops, path)


def test_history_replaces_the_plans_timing_shrunk_toward_it() -> None:
    # Planned at 10 m/s; twenty earlier drives took the road at 5 m/s.
    r = route(500.0)
    slow = [c for _ in range(20) for c in hist.crossings(track(5.0, 0.0, 5000.0))]
    learned = prog.plan(r, snapshot(slow))
    plain = prog.plan(r)
    assert learned.learned and not plain.learned
    assert plain.planned_speed_mps == pytest.approx(10.0, rel=0.01)
    # Mostly the history (20 crossings against the plan's 3), a little the plan.
    assert 5.0 < learned.planned_speed_mps < 6.0  # type: ignore[operator]
    st = prog.start(learned)
    f = Fix(7, T0, *ll(0.0, 0.0), speed=0.0)
    _, _, p = prog.step(learned, st, f, prog.EtaConfig())
    assert p is not None
    eta = p.etas[-1].eta
    assert eta is not None
    assert 850.0 < (eta - T0).total_seconds() < 1000.0
    # One crossing per cell moves the plan only a little.
    once = prog.plan(r, snapshot(hist.crossings(track(5.0, 0.0, 5000.0))))
    assert 7.5 < once.planned_speed_mps < 9.0  # type: ignore[operator]


def test_history_expects_the_mean_crossing_time_not_the_median() -> None:
    # Half the earlier drives took the road at 5 m/s, half at 10 m/s: 0.15 s/m on
    # average (6.7 m/s), though the mean log pace alone says 0.14 s/m (7.1 m/s).
    r = route(500.0)
    runs = [track(5.0 if k % 2 else 10.0, 0.0, 5000.0) for k in range(20)]
    mixed = [c for run in runs for c in hist.crossings(run)]
    learned = prog.plan(r, snapshot(mixed))
    # Shrunk toward the plan's 10 m/s by three crossings' worth, and no faster than the
    # geometric mean would give (7.4 m/s with that shrinkage).
    assert learned.planned_speed_mps is not None
    assert 6.7 < learned.planned_speed_mps < 7.2


def test_history_of_another_road_or_direction_changes_nothing() -> None:
    r = route(500.0)
    westward = [
        (t, la, lo) for (t, _, _), (_, la, lo) in zip(track(5.0), reversed(track(5.0)), strict=True)
    ]
    plan = prog.plan(r, snapshot(hist.crossings(westward)))
    assert not plan.learned
    assert plan.planned_speed_mps == pytest.approx(10.0, rel=0.01)


def test_time_of_week_picks_the_same_hour_when_it_has_enough() -> None:
    r = route(500.0)  # planned to start Monday 08:00
    rush = [c for _ in range(5) for c in hist.crossings(track(4.0, 0.0, 5000.0))]
    night = [
        c
        for _ in range(20)
        for c in hist.crossings(track(12.0, 0.0, 5000.0, t0=14 * 3600.0))  # 22:00
    ]
    plan = prog.plan(r, snapshot(rush + night))
    assert plan.planned_speed_mps is not None and plan.planned_speed_mps < 6.0


def test_the_interval_holds_the_eta_and_widens_with_the_horizon() -> None:
    s = Spread()
    now = T0.timestamp()
    widths = []
    for h in (30.0, 300.0, 1200.0, 3600.0):
        lo, hi = s.bounds(now, now + h)
        assert now <= lo < now + h < hi
        widths.append(hi - lo)
        # Later more than earlier: delays are longer than gains.
        assert hi - (now + h) > (now + h) - lo
    assert widths == sorted(widths)
    lo, hi = s.bounds(now, now + 10.0)
    assert lo == now and hi == pytest.approx(now + 40.0)  # never narrower than the floor
    with pytest.raises(ValueError):
        Spread(low=(1.2,) * 5)
    assert math.isfinite(s.bounds(now, now - 50.0)[1])
