"""Linear referencing near known progress, the speed estimate, pace and the ETA chain."""

from __future__ import annotations

import itertools
import math

import pytest
from shapely import LineString

from tracker.core.route.eta import Pace, PathIndex, Profile, SpeedEstimate, Trust, chain

# -- PathIndex ----------------------------------------------------------------------------------


def test_locate_on_a_straight_path_gives_along_and_offset() -> None:
    idx = PathIndex(LineString([(0, 0), (100, 0), (100, 100)]))
    assert idx.length_m == pytest.approx(200.0)
    loc = idx.locate(30.0, 4.0, (0.0, 200.0), (0.0, 200.0))
    assert loc.along_m == pytest.approx(30.0)
    assert loc.offset_m == pytest.approx(4.0)
    loc = idx.locate(103.0, 60.0, (0.0, 200.0), (0.0, 200.0))
    assert loc.along_m == pytest.approx(160.0)
    assert loc.offset_m == pytest.approx(3.0)


def test_locate_only_looks_inside_the_window() -> None:
    # A path that comes back along the same street: (50, 0) is 50 m and 150 m along.
    idx = PathIndex(LineString([(0, 0), (100, 0), (0, 0)]))
    assert idx.locate(50.0, 0.0, (120.0, 200.0), (120.0, 200.0)).along_m == pytest.approx(150.0)
    assert idx.locate(50.0, 0.0, (0.0, 90.0), (0.0, 90.0)).along_m == pytest.approx(50.0)


def test_locate_prefers_the_pass_near_the_expected_progress() -> None:
    # A square loop closing on itself: the start corner is 0 m and 400 m along.
    idx = PathIndex(LineString([(0, 0), (100, 0), (100, 100), (0, 100), (0, 0), (0, -50)]))
    everywhere = (0.0, idx.length_m)
    assert idx.locate(1.0, 1.0, everywhere, (0.0, 10.0)).along_m == pytest.approx(1.0)
    assert idx.locate(1.0, 1.0, everywhere, (390.0, 420.0)).along_m == pytest.approx(399.0)
    # Without an expectation the nearer pass wins even if it lies far ahead.
    near_end = idx.locate(0.0, -1.0, everywhere, (0.0, 0.0), ahead_cost=0.0)
    assert near_end.along_m == pytest.approx(401.0)


def test_stops_are_placed_in_visiting_order_along_a_path_that_repeats_a_street() -> None:
    # Out and back on the same street: a stop visited on the way back sits on the return.
    idx = PathIndex(LineString([(0, 0), (300, 0), (0, 0)]))
    along = idx.locate_in_order([(250, 5), (280, -5), (100, 5)], tolerance_m=25.0)
    assert along[0] == pytest.approx(250.0)
    assert along[1] == pytest.approx(280.0)
    assert along[2] == pytest.approx(500.0)
    assert along == sorted(along)


def test_a_path_without_length_is_refused() -> None:
    with pytest.raises(ValueError):
        PathIndex(LineString([(0, 0), (0, 0)]))


# -- SpeedEstimate and Pace ---------------------------------------------------------------------


def test_without_observations_the_estimate_is_the_plan() -> None:
    assert SpeedEstimate().speed(8.0, 60.0, 1.0, 40.0) == pytest.approx(8.0)


def test_observations_outweigh_the_prior_as_they_accumulate() -> None:
    est = SpeedEstimate()
    speeds = []
    for _ in range(3000):
        est = est.learn(15.0, 1.0, 300.0)
        speeds.append(est.speed(8.0, 60.0, 1.0, 40.0))
    assert all(b >= a for a, b in itertools.pairwise(speeds))
    assert speeds[0] < 9.0
    # The plan keeps its 60 s against the ~300 s of observation the time constant retains.
    assert speeds[-1] == pytest.approx((15.0 * 300.0 + 8.0 * 60.0) / 360.0, rel=0.01)


def test_a_wait_lowers_the_estimate_gradually_and_the_prior_keeps_it_up() -> None:
    est = SpeedEstimate()
    for _ in range(300):
        est = est.learn(10.0, 1.0, 120.0)
    moving = est.speed(8.0, 60.0, 1.0, 40.0)
    for _ in range(60):
        est = est.learn(0.0, 1.0, 120.0)
    waited = est.speed(8.0, 60.0, 1.0, 40.0)
    assert 0.4 * moving < waited < moving
    for _ in range(3600):
        est = est.learn(0.0, 1.0, 120.0)
    # Even after an hour standing still the estimate stays at or above the floor.
    assert est.speed(8.0, 60.0, 1.0, 40.0) >= 1.0


def test_old_observations_fade() -> None:
    slow_then_fast = SpeedEstimate()
    for _ in range(600):
        slow_then_fast = slow_then_fast.learn(5.0, 1.0, 120.0)
    for _ in range(600):
        slow_then_fast = slow_then_fast.learn(20.0, 1.0, 120.0)
    assert slow_then_fast.speed(10.0, 0.0, 1.0, 40.0) == pytest.approx(20.0, rel=0.01)


def test_speed_is_clamped() -> None:
    fast = SpeedEstimate(100_000.0, 100.0)
    assert fast.speed(10.0, 60.0, 1.0, 40.0) == 40.0
    assert SpeedEstimate(0.0, 10_000.0).speed(10.0, 60.0, 1.0, 40.0) == 1.0


def test_pace_hands_over_from_the_recent_to_the_long_run_speed() -> None:
    pace = Pace(near_mps=5.0, far_mps=20.0, near_s=100.0)
    # The first metres go at the recent speed ...
    assert pace.drive_s(5.0) == pytest.approx(1.0, rel=0.01)
    # ... the marginal pace slides toward the long-run one ...
    marginal = [pace.drive_s(d + 1.0) - pace.drive_s(d) for d in (0.0, 500.0, 1000.0, 5000.0)]
    assert marginal == sorted(marginal, reverse=True)
    assert marginal[0] == pytest.approx(1 / 5.0, rel=0.01)
    assert marginal[-1] == pytest.approx(1 / 20.0, rel=0.01)
    # ... and far away the recent conditions cost what ~100 s of them would: 75 s here.
    assert pace.drive_s(50_000.0) == pytest.approx(50_000.0 / 20.0 + 100.0 * (1 - 5 / 20))
    assert Pace(5.0, 20.0, 0.0).drive_s(1000.0) == pytest.approx(50.0)


def test_pace_counts_planned_metres_beyond_the_hand_over() -> None:
    # A leg the plan expects twice as slow as average: 1 km there is 2 km planned.
    pace = Pace(near_mps=10.0, far_mps=20.0, near_s=60.0, local=2.0)
    assert pace.drive_s(50_000.0, 100_000.0) == pytest.approx(100_000.0 / 20.0)
    # Driving at the recent speed is just what the plan expects here: no excess.
    assert pace.drive_s(300.0, 600.0) == pytest.approx(30.0)


# -- Trust: the long-run pace relative to the plan --------------------------------------------


def test_before_any_driving_the_pace_is_the_plan_at_its_median() -> None:
    trust = Trust.of(0.3, 0.4, 0.3, 300.0, knows_roads=False)
    # Plans give mean times; the median of a lognormal with sd 0.3 is 4.4 % below.
    assert trust.factor(0.0, 0.0, 1000.0) == pytest.approx(math.exp(-0.045))
    exact = Trust.of(0.0, 0.4, 0.3, 300.0, knows_roads=False)
    assert exact.factor(0.0, 0.0, 1000.0) == 1.0
    assert exact.factor(900.0, 600.0, 1000.0) == 1.0  # a plan believed exactly: no learning


def test_a_default_speed_gives_way_to_the_pace_driven() -> None:
    trust = Trust.of(0.3, 0.4, 0.3, 300.0, knows_roads=False)
    assert trust.shape_s == 0.0
    assert trust.fit_s == pytest.approx((0.16 + 0.09) * 300.0 / 0.09)
    # Driving at half the planned speed: the factor moves from 1 toward 2 with evidence.
    factors = [trust.factor(2.0 * p, p, 5000.0) for p in (60.0, 600.0, 6000.0, 60_000.0)]
    assert factors == sorted(factors)
    assert factors[0] < 1.05
    assert factors[-1] == pytest.approx(2.0, rel=0.02)
    # Faster than planned works the same way down.
    assert trust.factor(3000.0, 6000.0, 5000.0) < 0.75


def test_a_schedule_that_knows_the_roads_expects_a_slow_start_to_be_made_up() -> None:
    trust = Trust.of(0.15, 0.4, 0.3, 300.0, knows_roads=True)
    assert trust.shape_s > 0.0
    median = trust.factor(0.0, 0.0, 900.0)
    # A 20-minute schedule, 5 minutes of it driven in 8: the faster roads ahead are
    # expected to win some of the time back, so the rest goes faster than planned ...
    assert trust.factor(480.0, 300.0, 900.0) < median
    # ... while on a long schedule the same start mostly says the plan is slow.
    assert trust.factor(480.0, 300.0, 20_000.0) > 1.0
    # A schedule believed exactly keeps its total: 180 s behind with 900 s to go.
    exact = Trust.of(0.0, 0.4, 0.3, 300.0, knows_roads=True)
    assert exact.factor(480.0, 300.0, 900.0) == pytest.approx((900.0 - 180.0) / 900.0)


def test_no_deviation_turns_the_rest_of_a_schedule_into_a_sprint() -> None:
    trust = Trust.of(0.15, 0.4, 0.3, 300.0, knows_roads=True)
    # A 5-minute schedule: 1 planned minute took 21 (a jam). Some of it may be made up on
    # faster roads, but the rest is not expected at several times the planned speed.
    assert 0.5 < trust.factor(1260.0, 60.0, 240.0) < 1.0
    # The other way round: far ahead of a long schedule means the plan is slow.
    assert trust.factor(100.0, 600.0, 20_000.0) < 0.8


# -- Profile: a schedule's own pace along the path ------------------------------------------


def test_profile_gives_each_timed_leg_its_planned_pace() -> None:
    # 2 km planned in 400 s (city), then 6 km in 400 s (arterial): average 100 s per km.
    prof = Profile([(2000.0, 400.0), (8000.0, 800.0)])
    assert not prof.flat
    assert prof.ratio(1000.0) == pytest.approx(2.0)
    assert prof.ratio(5000.0) == pytest.approx(2.0 / 3.0)
    assert prof.planned_m(2000.0) == pytest.approx(4000.0)
    assert prof.planned_m(8000.0) == pytest.approx(8000.0)
    # Beyond the last timed stop the average pace holds.
    assert prof.ratio(9000.0) == 1.0 and prof.planned_m(9000.0) == pytest.approx(9000.0)


def test_profile_is_flat_without_two_usable_times() -> None:
    assert Profile([]).flat and Profile([(3000.0, 300.0)]).flat
    assert Profile([]).planned_m(1234.0) == 1234.0
    # A time not later than the one before is inconsistent and ignored.
    assert Profile([(3000.0, 300.0), (5000.0, 250.0)]).flat


# -- chain ------------------------------------------------------------------------------------


def flat(v: float) -> Pace:
    return Pace(v, v, 0.0)


def test_chain_adds_travel_and_the_service_of_earlier_stops() -> None:
    ch = chain(
        0.0,
        1000.0,
        flat(10.0),
        [100.0, 300.0, 600.0],
        [30.0, 60.0, 0.0],
        [None] * 3,
        [True] * 3,
        [None] * 3,
    )
    assert ch.etas == [
        pytest.approx(1010.0),
        pytest.approx(1010.0 + 30.0 + 20.0),
        pytest.approx(1060.0 + 60.0 + 30.0),
    ]
    assert ch.dists == [pytest.approx(100.0), pytest.approx(300.0), pytest.approx(600.0)]
    assert ch.moved == [0, 1, 2]


def test_chain_skips_inactive_stops_and_their_service() -> None:
    ch = chain(
        0.0,
        0.0,
        flat(10.0),
        [100.0, 300.0, 600.0],
        [30.0, 60.0, 0.0],
        [None] * 3,
        [True, False, True],
        [None] * 3,
    )
    assert ch.etas[1] is None and ch.dists[1] is None
    assert ch.etas[2] == pytest.approx(60.0 + 30.0)


def test_chain_waits_for_a_window_and_carries_the_wait_forward() -> None:
    ch = chain(
        0.0,
        0.0,
        flat(10.0),
        [100.0, 200.0],
        [50.0, 0.0],
        [500.0, None],
        [True, True],
        [None, None],
    )
    assert ch.etas[0] == pytest.approx(500.0)
    assert ch.etas[1] == pytest.approx(500.0 + 50.0 + 10.0)
    opened = chain(0.0, 0.0, flat(10.0), [100.0], [0.0], [5.0], [True], [None])
    assert opened.etas[0] == pytest.approx(10.0)


def test_a_stop_behind_is_reached_by_going_back() -> None:
    ch = chain(
        500.0, 0.0, flat(10.0), [200.0, 900.0], [0.0, 0.0], [None] * 2, [True] * 2, [None] * 2
    )
    assert ch.dists == [pytest.approx(300.0), pytest.approx(1000.0)]


def test_moved_needs_both_thirty_seconds_and_five_percent() -> None:
    # Stop 0 is ~100 s away, stop 1 ~1000 s away.
    base = chain(
        0.0, 0.0, flat(10.0), [1000.0, 10000.0], [0.0, 0.0], [None] * 2, [True] * 2, [None] * 2
    )
    published = list(base.etas)
    same = chain(
        0.0, 0.0, flat(10.0), [1000.0, 10000.0], [0.0, 0.0], [None] * 2, [True] * 2, published
    )
    assert same.moved == []
    # 35 s later: more than 30 s for both, 35 % of the first but only ~3.4 % of the second.
    later = chain(
        0.0, 35.0, flat(10.0), [1000.0, 10000.0], [0.0, 0.0], [None] * 2, [True] * 2, published
    )
    assert later.moved == [0]
    # 80 s later: more than 5 % of the second too.
    much = chain(
        0.0, 80.0, flat(10.0), [1000.0, 10000.0], [0.0, 0.0], [None] * 2, [True] * 2, published
    )
    assert much.moved == [0, 1]


def test_chain_uses_the_recent_speed_first_then_the_long_run_one() -> None:
    pace = Pace(5.0, 20.0, 100.0)
    ch = chain(0.0, 0.0, pace, [250.0, 20_000.0], [0.0, 0.0], [None] * 2, [True] * 2, [None] * 2)
    assert ch.etas[0] == pytest.approx(pace.drive_s(250.0))
    assert 250.0 / 20.0 < (ch.etas[0] or 0.0) < 250.0 / 5.0
    assert ch.etas[1] == pytest.approx(pace.drive_s(20_000.0))
    assert math.isclose(ch.dists[1] or 0.0, 20_000.0)


def test_chain_follows_the_planned_pace_of_each_leg() -> None:
    # A slow first leg (planned metres = 2 x metres) and a fast one (0.5 x).
    along, planned = [1000.0, 3000.0], [2000.0, 3000.0]
    ch = chain(
        0.0,
        0.0,
        flat(10.0),
        along,
        [0.0, 0.0],
        [None] * 2,
        [True] * 2,
        [None] * 2,
        planned_m=planned,
        start_planned_m=0.0,
    )
    assert ch.etas == [pytest.approx(200.0), pytest.approx(300.0)]
    assert ch.dists == [pytest.approx(1000.0), pytest.approx(3000.0)]


def test_deferred_stops_come_after_the_others() -> None:
    # At 1500 m, stop 0 (at 1000 m) was passed without a visit.
    ch = chain(
        1500.0,
        0.0,
        flat(10.0),
        [1000.0, 2000.0, 3000.0],
        [60.0, 60.0, 0.0],
        [None] * 3,
        [True] * 3,
        [None] * 3,
        later=[True, False, False],
    )
    # The rest of the sequence from where the vehicle is ...
    assert ch.etas[1] == pytest.approx(50.0)
    assert ch.etas[2] == pytest.approx(50.0 + 60.0 + 100.0)
    # ... then back to the deferred stop, after the last one's service (none here).
    assert ch.etas[0] == pytest.approx(210.0 + 200.0)
    assert ch.dists[0] == pytest.approx(500.0 + 1000.0 + 2000.0)
    assert ch.moved == [0, 1, 2]


def test_service_times_scale_with_how_long_visits_take() -> None:
    ch = chain(
        0.0,
        0.0,
        flat(10.0),
        [100.0, 200.0],
        [60.0, 60.0],
        [None] * 2,
        [True] * 2,
        [None] * 2,
        service_scale=1.5,
    )
    assert ch.etas[1] == pytest.approx(20.0 + 90.0)
