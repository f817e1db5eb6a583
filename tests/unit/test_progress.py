"""The per-route state machine: progress, arrivals, off-route, statuses, ETAs and events.

Routes are laid out in metres on a local plane (east x, north y) around a point in Munich
and converted to WGS84 with the same kind of projection the core uses, so distances in the
tests are the distances the core measures.
"""

from __future__ import annotations

import itertools
import json
import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from tracker.core.geo import LocalProjection
from tracker.core.model import Event, EventType, Fix, Route, Stop, StopStatus
from tracker.core.route import progress as prog

T0 = datetime(2024, 5, 6, 8, 0, tzinfo=UTC)
FRAME = LocalProjection(48.137, 11.575)
CFG = prog.EtaConfig()


def ll(x: float, y: float) -> tuple[float, float]:
    return FRAME.to_latlon(x, y)


def route(
    path_xy: Sequence[tuple[float, float]],
    stops_xy: Sequence[tuple[float, float]],
    **stop_kw: object,
) -> Route:
    stops = tuple(
        Stop(id=10 + k, seq=k + 1, lat=ll(*p)[0], lon=ll(*p)[1], **stop_kw)  # type: ignore[arg-type]
        for k, p in enumerate(stops_xy)
    )
    return Route(1, 7, T0, stops, tuple(ll(x, y) for x, y in path_xy))


def fix(sec: float, x: float, y: float, speed: float | None = None, acc: float | None = 5.0) -> Fix:
    lat, lon = ll(x, y)
    return Fix(7, T0 + timedelta(seconds=sec), lat, lon, speed=speed, accuracy=acc)


def run(
    plan: prog.RoutePlan,
    fixes: Iterable[Fix],
    state: prog.RouteState | None = None,
    cfg: prog.EtaConfig = CFG,
) -> tuple[prog.RouteState, list[Event], list[prog.Progress]]:
    st = prog.start(plan) if state is None else state
    events: list[Event] = []
    progresses: list[prog.Progress] = []
    for f in fixes:
        st, evs, p = prog.step(plan, st, f, cfg)
        events.extend(evs)
        if p is not None:
            progresses.append(p)
    return st, events, progresses


def types(events: Iterable[Event], stop_id: int | None = None) -> list[str]:
    return [e.type for e in events if stop_id is None or e.stop_id == stop_id]


def eta_of(p: prog.Progress, stop_id: int) -> datetime:
    e = p.eta_for(stop_id)
    assert e is not None and e.eta is not None
    return e.eta


STRAIGHT = [(0.0, 0.0), (5000.0, 0.0)]


def drive(x0: float, x1: float, t0: float, speed: float = 10.0, y: float = 0.0) -> list[Fix]:
    """Fixes once a second along y=const from x0 to x1 (inclusive of x0)."""
    n = round(abs(x1 - x0) / speed)
    step = (x1 - x0) / n if n else 0.0
    return [fix(t0 + i, x0 + i * step, y, speed) for i in range(n + 1)]


def wait(x: float, t0: float, seconds: int, y: float = 0.0, jitter: float = 0.0) -> list[Fix]:
    """Standing still with Gaussian noise of `jitter` metres per axis, reported honestly
    (a phone states the radius holding about 68 % of its fixes: 1.5 sigma)."""
    rng = random.Random(int(x) + seconds)
    acc = max(5.0, 1.5 * jitter)
    return [
        fix(t0 + i, x + rng.gauss(0, jitter), y + rng.gauss(0, jitter), 0.0, acc)
        for i in range(seconds)
    ]


# -- linear referencing on awkward paths ------------------------------------------------------


def densify(path: Sequence[tuple[float, float]], step: float) -> list[tuple[float, float]]:
    pts: list[tuple[float, float]] = []
    for a, b in itertools.pairwise(path):
        n = max(1, round(math.dist(a, b) / step))
        pts += [(a[0] + (b[0] - a[0]) * i / n, a[1] + (b[1] - a[1]) * i / n) for i in range(n)]
    return [*pts, path[-1]]


def test_progress_follows_a_path_that_crosses_itself() -> None:
    # A small figure of eight: east, a tight loop north and back south over the crossing
    # at (200, 0), then east again. The second pass is only 220 m further along, close
    # enough that both passes are candidates for the same fix.
    path = [(0, 0), (250, 0), (250, 60), (200, 60), (200, -60), (500, -60)]
    plan = prog.plan(route(path, [(500, -60)]))
    pts = densify(path, 5.0)
    rng = random.Random(3)
    fixes = [
        fix(i * 0.5, x + rng.gauss(0, 2), y + rng.gauss(0, 2), 10.0) for i, (x, y) in enumerate(pts)
    ]
    _, events, ps = run(plan, fixes)
    along = [p.progress_m for p in ps]
    assert max(b - a for a, b in itertools.pairwise(along)) < 30.0
    assert min(b - a for a, b in itertools.pairwise(along)) > -30.0
    at_crossing = [p.progress_m for p, q in zip(ps, pts, strict=True) if q == (200, 0)]
    assert at_crossing == [pytest.approx(200.0, abs=12.0), pytest.approx(420.0, abs=12.0)]
    assert along[-1] == pytest.approx(plan.index.length_m, abs=12.0)
    assert EventType.OFF_ROUTE not in types(events)


def test_a_u_turn_on_the_same_street_is_followed_back() -> None:
    # Out 150 m along a dead end and back over exactly the same line, then north.
    path = [(0, 0), (150, 0), (0, 0), (0, 600)]
    plan = prog.plan(route(path, [(0, 600)]))
    pts = densify(path, 5.0)
    rng = random.Random(5)
    fixes = [
        fix(i * 0.5, x + rng.gauss(0, 2), y + rng.gauss(0, 2), 10.0) for i, (x, y) in enumerate(pts)
    ]
    _, events, ps = run(plan, fixes)
    along = [p.progress_m for p in ps]
    truth = [min(i * 5.0, plan.index.length_m) for i in range(len(pts))]
    # x=100 is 100 m along going out and 200 m along coming back.
    assert max(abs(a - t) for a, t in zip(along, truth, strict=True)) < 15.0
    assert EventType.OFF_ROUTE not in types(events)


def test_gps_jitter_at_a_standstill_neither_moves_nor_arrives() -> None:
    r = route(STRAIGHT, [(3000, 0)], service_s=60.0)
    plan = prog.plan(r)
    st, _, ps = run(plan, drive(0, 1000, 0))
    before = ps[-1]
    st, events, ps = run(plan, wait(1000, 101, 300, jitter=8.0), st)
    along = [before.progress_m] + [p.progress_m for p in ps]
    assert max(abs(a - before.progress_m) for a in along) < 40.0
    # Noise never walks progress backwards (a real reversal would be far larger).
    assert all(b >= a for a, b in itertools.pairwise(along))
    assert EventType.ARRIVED not in types(events)
    assert EventType.OFF_ROUTE not in types(events)
    # Standing still, the ETA slides later with the clock, about one second per second.
    slid = (eta_of(ps[-1], 10) - eta_of(before, 10)).total_seconds()
    assert 200.0 < slid < 600.0


def test_waiting_at_a_red_light_delays_but_does_not_arrive() -> None:
    r = route(STRAIGHT, [(2000, 0)], service_s=60.0)
    plan = prog.plan(r)
    st, _, ps = run(plan, drive(0, 1200, 0))
    at_light = ps[-1]
    st, events, waiting = run(plan, wait(1200, 121, 60, jitter=2.0), st)
    assert EventType.ARRIVED not in types(events)
    # The stop is 800 m ahead: the ETA moves later by about the wait, not by much more.
    delay = (eta_of(waiting[-1], 10) - eta_of(at_light, 10)).total_seconds()
    assert 40.0 < delay < 150.0
    assert waiting[-1].speed_mps >= CFG.min_speed_mps
    st, events, ps = run(plan, drive(1200, 2000, 181) + wait(2000, 262, 40), st)
    arrived = [e for e in events if e.type == EventType.ARRIVED]
    assert [e.stop_id for e in arrived] == [10]


# -- arrival, departure, completion -----------------------------------------------------------


def test_arrive_dwell_depart_records_a_visit_that_the_driver_completes() -> None:
    r = route(STRAIGHT, [(1000, 0), (2000, 0)], service_s=60.0, radius_m=40.0)
    plan = prog.plan(r)
    fixes = (
        drive(0, 1000, 0)
        + wait(1000, 101, 60, jitter=3.0)
        + drive(1000, 2000, 161)
        + wait(2000, 262, 30)
        + drive(2000, 2300, 292)
    )
    st, events, ps = run(plan, fixes)
    assert types(events, 10) == [
        EventType.ETA_CHANGED,
        EventType.ARRIVING,
        EventType.ARRIVED,
        EventType.DEPARTED,
        EventType.VISITED,
    ]
    # Leaving is no proof of delivery: the stops wait for the driver, the route goes on.
    assert [s.status for s in st.stops] == [StopStatus.VISITED, StopStatus.VISITED]
    assert EventType.ROUTE_COMPLETED not in types(events)
    assert ps[-1].next_stop_id is None
    arrived = next(e for e in events if e.type == EventType.ARRIVED and e.stop_id == 10)
    departed = next(e for e in events if e.type == EventType.DEPARTED and e.stop_id == 10)
    assert (arrived.time - T0).total_seconds() == pytest.approx(97.0, abs=5.0)
    assert departed.data["dwell_s"] == pytest.approx(70.0, abs=8.0)
    assert all(e.device_id == 7 and e.route_id == 1 for e in events)
    later = T0 + timedelta(seconds=400)
    st, done = prog.set_status(plan, st, 10, StopStatus.COMPLETED, later)
    assert types(done) == [EventType.COMPLETED]
    st, done = prog.set_status(plan, st, 11, StopStatus.COMPLETED, later)
    assert types(done) == [EventType.COMPLETED, EventType.ROUTE_COMPLETED]


def test_with_auto_complete_on_departure_leaving_completes_the_stop_and_the_route() -> None:
    r = route(STRAIGHT, [(1000, 0), (2000, 0)], service_s=60.0, radius_m=40.0)
    plan = prog.plan(r)
    fixes = (
        drive(0, 1000, 0)
        + wait(1000, 101, 60, jitter=3.0)
        + drive(1000, 2000, 161)
        + wait(2000, 262, 30)
        + drive(2000, 2300, 292)
    )
    st, events, _ = run(plan, fixes, cfg=prog.EtaConfig(auto_complete="departure"))
    assert types(events, 10) == [
        EventType.ETA_CHANGED,
        EventType.ARRIVING,
        EventType.ARRIVED,
        EventType.DEPARTED,
        EventType.COMPLETED,
    ]
    assert [s.status for s in st.stops] == [StopStatus.COMPLETED, StopStatus.COMPLETED]
    assert types(events)[-1] == EventType.ROUTE_COMPLETED


def test_auto_complete_takes_only_known_policies() -> None:
    with pytest.raises(ValueError, match="auto_complete"):
        prog.EtaConfig(auto_complete="sometimes")


def test_one_wild_fix_does_not_end_a_visit() -> None:
    r = route(STRAIGHT, [(1000, 0), (3000, 0)], service_s=300.0)
    plan = prog.plan(r)
    st, _, _ = run(plan, drive(0, 1000, 0) + wait(1000, 101, 30))
    assert st.at_stop == 0
    wild = [fix(131, 1300, 200, 0.0)]
    st, events, _ = run(plan, wild + wait(1000, 132, 30), st)
    assert st.at_stop == 0 and st.stops[0].status == StopStatus.ARRIVED
    assert EventType.DEPARTED not in types(events)


def test_time_spent_serving_a_stop_does_not_slow_the_speed_estimate() -> None:
    r = route(STRAIGHT, [(1000, 0), (3000, 0)], service_s=60.0)
    plan = prog.plan(r)
    st, _, ps = run(plan, drive(0, 1000, 0))
    before = ps[-1].speed_mps
    st, _, ps = run(plan, wait(1000, 101, 600), st)
    assert st.at_stop == 0
    assert ps[-1].speed_mps == pytest.approx(before, rel=0.02)


def test_a_stop_set_back_from_the_road_is_a_visit_not_a_detour() -> None:
    # The stop is a yard 150 m north of the path; the vehicle drives in, waits, drives out.
    r = route(STRAIGHT, [(1000, 150)], service_s=60.0)
    plan = prog.plan(r)
    yard_in = [fix(101 + i, 1000, 10.0 * i, 5.0) for i in range(1, 16)]
    yard_out = [fix(196 + i, 1000, 150 - 10.0 * i, 5.0) for i in range(1, 16)]
    fixes = drive(0, 1000, 0) + yard_in + wait(1000, 116, 80, y=150) + yard_out
    fixes += drive(1000, 1500, 212)
    # The same excursion with no stop there is a detour.
    detour = prog.plan(route(STRAIGHT, [(3000, 0)]))
    assert EventType.OFF_ROUTE in types(run(detour, fixes)[1])
    _, events, _ = run(plan, fixes)
    assert EventType.OFF_ROUTE not in types(events)
    assert types(events, 10)[-3:] == [EventType.ARRIVED, EventType.DEPARTED, EventType.VISITED]


def test_the_next_stop_arrives_even_when_reached_by_another_road() -> None:
    # The stop is 100 m off the path; the vehicle leaves the path early and comes to it
    # from the north, so its progress along the path is still far behind the stop.
    r = route(STRAIGHT, [(2000, 100), (4000, 0)], service_s=60.0)
    plan = prog.plan(r)
    fixes = drive(0, 500, 0)
    fixes += [fix(50 + i, 500, 10.0 * i, 10.0) for i in range(1, 31)]  # north 300 m
    fixes += [fix(80 + i, 500 + 10.0 * i, 300, 10.0) for i in range(1, 151)]  # east 1.5 km
    fixes += [fix(230 + i, 2000, 300 - 10.0 * i, 10.0) for i in range(1, 21)]  # south
    fixes += wait(2000, 251, 40, y=100)
    _, events, _ = run(plan, fixes)
    assert EventType.OFF_ROUTE in types(events)
    assert EventType.ARRIVED in types(events, 10)


def test_passing_a_stop_at_speed_is_not_an_arrival() -> None:
    r = route(STRAIGHT, [(1000, 0), (3000, 0)])
    plan = prog.plan(r)
    _, events, _ = run(plan, drive(0, 2000, 0, speed=15.0))
    assert EventType.ARRIVED not in types(events)


def test_while_serving_a_stop_the_next_eta_counts_the_remaining_service() -> None:
    r = route(STRAIGHT, [(1000, 0), (2000, 0)], service_s=120.0)
    plan = prog.plan(r)
    st, _, _ = run(plan, drive(0, 1000, 0))
    st, _, ps = run(plan, wait(1000, 101, 31), st)
    assert st.at_stop == 0
    p = ps[-1]
    served = p.eta_for(10)
    assert served is not None and served.status == StopStatus.ARRIVED
    # Arrived at ~t=100..101; 120 s of service; then 1000 m of driving.
    remaining_service = 120.0 - (p.time - served.eta).total_seconds()  # type: ignore[operator]
    drive_s = (eta_of(p, 11) - p.time).total_seconds() - remaining_service
    assert 1000.0 / CFG.max_speed_mps < drive_s < 1000.0 / CFG.min_speed_mps
    assert drive_s == pytest.approx(1000.0 / 10.0, rel=0.35)


# -- explicit statuses ------------------------------------------------------------------------


def test_a_skipped_stop_drops_out_of_the_chain_and_its_visit_does_not_count() -> None:
    r = route(STRAIGHT, [(1000, 0), (2000, 0), (3000, 0)], service_s=90.0)
    plan = prog.plan(r)
    st, _, ps = run(plan, drive(0, 500, 0))
    before = ps[-1]
    st, events = prog.set_status(plan, st, 11, StopStatus.SKIPPED, T0 + timedelta(seconds=50))
    assert [(e.type, e.stop_id) for e in events] == [(EventType.SKIPPED, 11)]
    st, events, ps = run(plan, drive(510, 600, 51), st)
    after = ps[-1]
    skipped = after.eta_for(11)
    assert skipped is not None and skipped.eta is None and skipped.status == StopStatus.SKIPPED
    # The stop after the skipped one no longer waits for its 90 s of service.
    gained = (eta_of(before, 12) - eta_of(after, 12)).total_seconds()
    assert gained > 60.0
    # Driving through the skipped stop and waiting there is no arrival at it.
    st, events, _ = run(plan, drive(600, 2000, 60) + wait(2000, 201, 90), st)
    assert EventType.ARRIVED not in types(events, 11)


def test_status_transitions_are_validated() -> None:
    r = route(STRAIGHT, [(1000, 0), (2000, 0)])
    plan = prog.plan(r)
    st = prog.start(plan)
    now = T0
    with pytest.raises(ValueError, match="no stop 99"):
        prog.set_status(plan, st, 99, StopStatus.COMPLETED, now)
    with pytest.raises(ValueError, match="status must be one of"):
        prog.set_status(plan, st, 10, StopStatus.ARRIVED, now)
    with pytest.raises(ValueError, match="needs a reason"):
        prog.set_status(plan, st, 10, StopStatus.FAILED, now, "  ")
    st, events = prog.set_status(plan, st, 10, StopStatus.FAILED, now, "nobody home")
    assert events[0].data == {"explicit": True, "reason": "nobody home"}
    assert st.stops[0].reason == "nobody home"
    again, none = prog.set_status(plan, st, 10, StopStatus.FAILED, now, "nobody home")
    assert again == st and none == []
    with pytest.raises(ValueError, match="already failed"):
        prog.set_status(plan, st, 10, StopStatus.COMPLETED, now)
    st, events = prog.set_status(plan, st, 11, StopStatus.COMPLETED, now)
    assert types(events) == [EventType.COMPLETED, EventType.ROUTE_COMPLETED]
    assert st.completed


# -- time, order and windows ------------------------------------------------------------------


def test_a_late_ping_changes_nothing() -> None:
    r = route(STRAIGHT, [(3000, 0)])
    plan = prog.plan(r)
    st, _, _ = run(plan, drive(0, 500, 0))
    late = fix(20, 200, 0, 10.0)
    same, events, p = prog.step(plan, st, late, CFG)
    assert same is st and events == [] and p is None
    duplicate = fix(50, 500, 0, 10.0)
    assert prog.step(plan, st, duplicate, CFG) == (st, [], None)


def test_etas_come_from_the_fix_time_so_a_replay_reproduces_them() -> None:
    r = route(STRAIGHT, [(1000, 0), (3000, 0)], service_s=30.0)
    plan = prog.plan(r)
    fixes = drive(0, 1000, 0) + wait(1000, 101, 40) + drive(1000, 2500, 141)
    a_state, a_events, a_ps = run(plan, fixes)
    b_state, b_events, b_ps = run(prog.plan(r), fixes)
    assert a_events == b_events and a_state == b_state
    assert [p.to_json() for p in a_ps] == [p.to_json() for p in b_ps]
    # Shifting the whole drive by a day shifts every ETA by exactly a day.
    day = timedelta(days=1)
    shifted = [
        Fix(f.device_id, f.time + day, f.lat, f.lon, f.speed, accuracy=f.accuracy) for f in fixes
    ]
    _, _, c_ps = run(plan, shifted)
    assert all(eta_of(c, 11) - eta_of(a, 11) == day for a, c in zip(a_ps, c_ps, strict=True))


def test_a_time_window_holds_the_eta_until_it_opens() -> None:
    opens = T0 + timedelta(minutes=30)
    stops = (
        Stop(10, 1, *ll(1000, 0), service_s=120.0, window_start=opens),
        Stop(11, 2, *ll(2000, 0), service_s=0.0),
    )
    r = Route(1, 7, T0, stops, tuple(ll(x, y) for x, y in STRAIGHT))
    plan = prog.plan(r)
    _, _, ps = run(plan, drive(0, 300, 0))
    p = ps[-1]
    assert eta_of(p, 10) == opens
    after = (eta_of(p, 11) - opens).total_seconds()
    assert after == pytest.approx(120.0 + 1000.0 / p.speed_mps, rel=0.3)
    # A window that opened long ago changes nothing.
    early = (Stop(10, 1, *ll(1000, 0), window_start=T0 - timedelta(hours=1)),)
    plan2 = prog.plan(Route(1, 7, T0, early, tuple(ll(x, y) for x, y in STRAIGHT)))
    _, _, ps2 = run(plan2, drive(0, 300, 0))
    assert eta_of(ps2[-1], 10) < opens


# -- off route --------------------------------------------------------------------------------


def test_off_route_after_several_far_fixes_and_back_on_when_rejoining() -> None:
    r = route(STRAIGHT, [(4000, 0)])
    plan = prog.plan(r)
    st, _, ps = run(plan, drive(0, 1000, 0))
    on_route = ps[-1]
    detour = [fix(101 + i, 1000 + 10 * i, 300.0, 10.0) for i in range(60)]
    st, events, off = run(plan, detour, st)
    off_events = [e for e in events if e.type == EventType.OFF_ROUTE]
    assert len(off_events) == 1
    assert off_events[0].time == detour[CFG.off_route_fixes - 1].time
    assert off_events[0].data["distance_m"] == pytest.approx(300.0, abs=5.0)
    assert not off[CFG.off_route_fixes - 2].off_route and off[-1].off_route
    # The ETA counts the way back to the path, so it is later than driving along it.
    assert eta_of(off[-1], 10) > eta_of(on_route, 10) + timedelta(seconds=30)
    rejoin = drive(1600, 2500, 161)
    st, events, back = run(plan, rejoin, st)
    assert types(events).count(EventType.BACK_ON_ROUTE) == 1
    assert not back[-1].off_route
    assert back[-1].progress_m == pytest.approx(2500.0, abs=15.0)


def test_off_route_etas_head_back_for_the_current_leg() -> None:
    # A U-shaped path; the first stop is on its first leg, the second on its last. The
    # vehicle leaves the first leg northwards until the last leg is nearer than the first.
    path = [(0, 0), (1000, 0), (1000, 1000), (0, 1000)]
    plan = prog.plan(route(path, [(900, 0), (100, 1000)]))
    st, _, _ = run(plan, drive(0, 300, 0))
    north = [fix(31 + i, 300, 10.0 * i, 10.0) for i in range(1, 71)]
    st, events, ps = run(plan, north, st)
    assert st.off_route and EventType.OFF_ROUTE in types(events)
    first = ps[-1].eta_for(10)
    assert first is not None and first.distance_m is not None
    # Back 700 m to (300, 0) (crow-flies, times the detour factor), then 600 m along.
    assert first.distance_m == pytest.approx(700.0 * CFG.detour_factor + 600.0, abs=20.0)
    assert eta_of(ps[-1], 10) < eta_of(ps[-1], 11)


def test_a_short_excursion_is_not_off_route() -> None:
    r = route(STRAIGHT, [(4000, 0)])
    plan = prog.plan(r)
    fixes = drive(0, 500, 0)
    fixes += [fix(51, 510, 200, 10.0), fix(52, 520, 200, 10.0), *drive(530, 800, 53)]
    _, events, _ = run(plan, fixes)
    assert EventType.OFF_ROUTE not in types(events)


# -- events and publication -------------------------------------------------------------------


def test_eta_changes_are_published_only_when_they_matter() -> None:
    r = route(STRAIGHT, [(1000, 0), (4500, 0)])
    plan = prog.plan(r)
    st, events, _ = run(plan, [fix(0, 0, 0, 10.0)])
    assert types(events).count(EventType.ETA_CHANGED) == 2  # the first ETAs are news
    assert all(e.data["previous"] is None for e in events if e.type == EventType.ETA_CHANGED)
    # Steady driving at the speed the ETAs assume changes them little: few events.
    v = plan.prior_speed(CFG)
    steady = [fix(i, v * i, 0, v) for i in range(1, 90)]
    st, events, _ = run(plan, steady, st)
    assert types(events).count(EventType.ETA_CHANGED) <= 2
    # A long stop pushes the ETAs out by more than 60 s and 10 % of the time to go: published.
    st, events, _ps = run(plan, wait(v * 89, 90, 150), st)
    changed = [e for e in events if e.type == EventType.ETA_CHANGED]
    assert {e.stop_id for e in changed} == {10, 11}
    for e in changed:
        moved = datetime.fromisoformat(e.data["eta"]) - datetime.fromisoformat(e.data["previous"])
        to_go = (datetime.fromisoformat(e.data["eta"]) - e.time).total_seconds()
        assert moved.total_seconds() > max(CFG.eta_change_s, CFG.eta_change_frac * to_go)


def test_arriving_is_announced_once() -> None:
    r = route(STRAIGHT, [(3000, 0)])
    plan = prog.plan(r)
    _, events, ps = run(plan, drive(0, 2900, 0))
    arriving = [e for e in events if e.type == EventType.ARRIVING]
    assert len(arriving) == 1
    i = next(i for i, p in enumerate(ps) if p.time == arriving[0].time)
    assert (eta_of(ps[i], 10) - ps[i].time).total_seconds() <= CFG.arriving_s
    assert (eta_of(ps[i - 1], 10) - ps[i - 1].time).total_seconds() > CFG.arriving_s


# -- state, snapshots, plans ------------------------------------------------------------------


def test_state_round_trips_through_json_mid_route() -> None:
    r = route(STRAIGHT, [(1000, 0), (2000, 0), (3000, 0)], service_s=60.0)
    plan = prog.plan(r)
    fixes = drive(0, 1000, 0) + wait(1000, 101, 40) + drive(1000, 1500, 141)
    st, _, _ = run(plan, fixes)
    st, _ = prog.set_status(plan, st, 12, StopStatus.FAILED, T0, "closed")
    restored = prog.RouteState.from_json(json.loads(json.dumps(st.to_json())))
    assert restored == st
    more = drive(1510, 2100, 192)
    assert run(plan, more, restored)[:2] == run(plan, more, st)[:2]
    # A state stored before deferral, service learning and the on-path time existed loads.
    assert st.on_path_s == fixes[-1].time.timestamp()
    gone = ("deferred", "service", "on_path_s")
    old = {k: v for k, v in st.to_json().items() if k not in gone}
    assert prog.RouteState.from_json(old) == replace(
        st, served_s=0.0, service_planned_s=0.0, on_path_s=None
    )
    with pytest.raises(ValueError):
        prog.RouteState.from_json({"v": 99})
    with pytest.raises(ValueError):
        prog.RouteState.from_json({**st.to_json(), "stops": None})


def test_current_matches_the_last_step() -> None:
    r = route(STRAIGHT, [(1000, 0), (2000, 0)], service_s=60.0)
    plan = prog.plan(r)
    st, _, ps = run(plan, drive(0, 800, 0))
    later = T0 + timedelta(hours=3)  # the snapshot time does not move the ETAs
    assert prog.current(plan, st, later, CFG) == ps[-1]
    fresh = prog.current(plan, prog.start(plan), T0 - timedelta(hours=1), CFG)
    # Before any fix the drive starts at the planned start, at the plan's median pace.
    first = eta_of(fresh, 10)
    median = plan.trust(CFG).factor(0.0, 0.0, 2000.0 / plan.prior_speed(CFG))
    assert median < 1.0
    assert (first - T0).total_seconds() == pytest.approx(1000.0 * median / plan.prior_speed(CFG))


def test_straight_line_routes_say_so() -> None:
    stops = (Stop(10, 1, *ll(0, 0)), Stop(11, 2, *ll(3000, 0)))
    r = Route(1, 7, T0, stops, tuple((s.lat, s.lon) for s in stops), straight_line=True)
    plan = prog.plan(r)
    _, events, ps = run(plan, [fix(0, 0, 0, 0.0)])
    assert ps[-1].straight_line
    assert all(e.data["straight_line"] for e in events if e.type == EventType.ETA_CHANGED)
    # The planned speed is spread over road metres, so straight-line progress is slower.
    assert plan.prior_speed(CFG) == pytest.approx(CFG.planned_speed_mps / CFG.detour_factor)


def test_without_a_path_the_way_to_the_next_stop_is_its_straight_distance() -> None:
    # Stops joined: the path starts at the first stop, 2 km from where the vehicle is.
    stops = (Stop(10, 1, *ll(2000, 0)), Stop(11, 2, *ll(2000, 3000)))
    r = Route(1, 7, T0, stops, tuple((s.lat, s.lon) for s in stops), straight_line=True)
    plan = prog.plan(r)
    # The vehicle drives a dog-leg: 1.5 km north-east first, never near the straight line.
    fixes = [fix(i, 7.0 * i, 7.0 * i, 10.0) for i in range(150)]
    _, events, ps = run(plan, fixes)
    assert EventType.OFF_ROUTE not in types(events)
    first = ps[0].eta_for(10)
    assert first is not None and first.distance_m == pytest.approx(2000.0, abs=1.0)
    last = ps[-1]
    x = y = 7.0 * 149
    to_first = math.hypot(2000 - x, y)
    assert last.eta_for(10).distance_m == pytest.approx(to_first, abs=1.0)  # type: ignore[union-attr]
    assert last.eta_for(11).distance_m == pytest.approx(to_first + 3000.0, abs=1.0)  # type: ignore[union-attr]
    # Speed is learnt from how fast the next stop gets closer, not from the line.
    closing = (2000.0 - to_first) / 149.0
    assert last.speed_mps == pytest.approx(closing, rel=0.35)


def test_planned_arrivals_set_the_prior_speed() -> None:
    stops = (
        Stop(10, 1, *ll(1200, 0), service_s=100.0),
        Stop(11, 2, *ll(3000, 0), planned_arrival=T0 + timedelta(seconds=400)),
    )
    plan = prog.plan(Route(1, 7, T0, stops, tuple(ll(x, y) for x, y in STRAIGHT)))
    # 3000 m in 400 s of which 100 s is service at the first stop.
    assert plan.prior_speed(CFG) == pytest.approx(3000.0 / 300.0, rel=1e-3)
    assert plan.average_speed(CFG) == pytest.approx(3000.0 / 400.0, rel=1e-3)


def test_a_default_speed_gives_way_to_the_drive_more_readily_than_a_schedule() -> None:
    far = 40_000.0
    path = [(0.0, 0.0), (far + 100.0, 0.0)]
    default = prog.plan(route(path, [(far, 0)]))
    v0 = CFG.planned_speed_mps
    timed = (Stop(10, 1, *ll(far, 0), planned_arrival=T0 + timedelta(seconds=far / v0)),)
    scheduled = prog.plan(Route(1, 7, T0, timed, tuple(ll(x, y) for x, y in path)))
    assert scheduled.prior_speed(CFG) == pytest.approx(v0, rel=1e-3)
    fast = drive(0, 18_000, 0, speed=15.0)  # 20 minutes at 15 m/s, nearly twice the plan
    _, _, by_default = run(default, fast)
    _, _, by_schedule = run(scheduled, fast)
    left = far - 18_000.0
    default_s = (eta_of(by_default[-1], 10) - by_default[-1].time).total_seconds()
    schedule_s = (eta_of(by_schedule[-1], 10) - by_schedule[-1].time).total_seconds()
    # Both learn that this drive is faster than planned ...
    assert schedule_s < left / v0 - 120.0
    # ... but a default guess gives way to the speed actually driven far more.
    assert default_s < schedule_s - 300.0
    assert default_s > left / 15.0 - 60.0


def test_a_schedule_expects_a_slow_start_to_be_made_up_on_the_roads_ahead() -> None:
    # 6 km planned in 10 minutes; the first 2 km take 5 minutes (red lights, city).
    path = [(0.0, 0.0), (6100.0, 0.0)]
    planned = T0 + timedelta(seconds=600)
    stops = (Stop(10, 1, *ll(6000, 0), planned_arrival=planned),)
    plan = prog.plan(Route(1, 7, T0, stops, tuple(ll(x, y) for x, y in path)))
    slow = drive(0, 2000, 0, speed=2000.0 / 300.0)
    _, _, ps = run(plan, slow)
    left = (eta_of(ps[-1], 10) - ps[-1].time).total_seconds()
    # Kept at the planned pace from here, the delay would stand in full: 4 km at 10 m/s.
    # The schedule knows its 10 minutes include slow streets; part of the delay is won back
    # (though the slow street goes on for a minute or two).
    assert left < 4000.0 / 10.0
    assert eta_of(ps[-1], 10) > planned  # but not all of it
    # The same start against a default speed says only that this drive is slow.
    default = prog.plan(
        Route(1, 7, T0, (replace(stops[0], planned_arrival=None),), plan.route.path)
    )
    _, _, dps = run(default, slow)
    assert (eta_of(dps[-1], 10) - dps[-1].time).total_seconds() > left


def test_waiting_before_the_drive_starts_is_a_late_start_not_a_slow_pace() -> None:
    r = route(STRAIGHT, [(3000, 0)])
    plan = prog.plan(r)
    st, _, _ = run(plan, wait(0, 0, 1200) + drive(0, 600, 1200))
    assert st.trend.time_s == pytest.approx(60.0, abs=2.0)
    # Driven at 10 m/s from the start, the rest is expected at about that pace.
    _, _, prompt = run(plan, drive(0, 600, 0))
    st, _, late = run(plan, wait(0, 0, 1200) + drive(0, 600, 1200))
    left_prompt = (eta_of(prompt[-1], 10) - prompt[-1].time).total_seconds()
    left_late = (eta_of(late[-1], 10) - late[-1].time).total_seconds()
    assert left_late == pytest.approx(left_prompt, rel=0.02)


def test_planned_arrivals_at_several_stops_set_each_legs_pace() -> None:
    # A slow first leg (2 km in 400 s) and a fast second one (6 km in 300 s after 60 s
    # of service at the first stop).
    stops = (
        Stop(10, 1, *ll(2000, 0), service_s=60.0, planned_arrival=T0 + timedelta(seconds=400)),
        Stop(11, 2, *ll(8000, 0), planned_arrival=T0 + timedelta(seconds=760)),
    )
    path = tuple(ll(x, 0.0) for x in (0.0, 8100.0))
    plan = prog.plan(Route(1, 7, T0, stops, path))
    assert not plan.profile.flat
    fresh = prog.current(plan, prog.start(plan), T0, CFG)
    median = plan.trust(CFG).factor(0.0, 0.0, 700.0)
    # Before the drive starts, the ETAs are the schedule's (at its median pace).
    assert (eta_of(fresh, 10) - T0).total_seconds() == pytest.approx(400.0 * median)
    assert (eta_of(fresh, 11) - T0).total_seconds() == pytest.approx(700.0 * median + 60.0)
    # Driving the slow leg as slowly as planned is on schedule: nothing to learn.
    _, _, ps = run(plan, drive(0, 1000, 0, speed=5.0))
    ahead = (eta_of(ps[-1], 11) - ps[-1].time).total_seconds()
    assert ahead == pytest.approx((200.0 + 300.0) * median + 60.0, rel=0.03)


# -- stops passed without a visit ------------------------------------------------------------


def test_a_stop_passed_without_a_visit_is_deferred_to_the_end_of_the_chain() -> None:
    r = route(STRAIGHT, [(1000, 0), (2000, 0), (3000, 0)], service_s=60.0)
    plan = prog.plan(r)
    st, events, ps = run(plan, drive(0, 1500, 0))
    assert types(events, 10).count(prog.DEFERRED) == 1
    deferral = next(e for e in events if e.type == prog.DEFERRED)
    assert (deferral.time - T0).total_seconds() == pytest.approx(120.0, abs=2.0)
    assert deferral.data["passed_m"] == pytest.approx(200.0, abs=15.0)
    assert st.deferred == (0,)
    p = ps[-1]
    # The rest of the sequence from where the vehicle is, without going back first ...
    assert p.next_stop_id == 11
    assert eta_of(p, 11) < eta_of(p, 12) < eta_of(p, 10)
    assert p.eta_for(11).distance_m == pytest.approx(500.0, abs=15.0)  # type: ignore[union-attr]
    # ... then back to the passed stop after the last one.
    assert p.eta_for(10).distance_m == pytest.approx(500 + 1000 + 2000, abs=30.0)  # type: ignore[union-attr]
    assert st.stops[0].status == StopStatus.PENDING
    # Still pending: the route is not complete without it, and it survives a restart.
    restored = prog.RouteState.from_json(json.loads(json.dumps(st.to_json())))
    assert restored.deferred == (0,)
    st, events = prog.set_status(plan, st, 10, StopStatus.SKIPPED, T0 + timedelta(seconds=151))
    assert st.deferred == ()


def test_coming_back_to_a_deferred_stop_puts_it_back_in_sequence() -> None:
    r = route(STRAIGHT, [(1000, 0), (2000, 0)], service_s=60.0, radius_m=40.0)
    plan = prog.plan(r)
    st, _, _ = run(plan, drive(0, 1400, 0))
    assert st.deferred == (0,)
    # A U-turn: back along the street to the stop, and a delivery there.
    st, events, ps = run(plan, drive(1400, 1000, 141) + wait(1000, 182, 60), st)
    assert st.deferred == ()
    assert types(events, 10)[-1] == EventType.ARRIVED
    assert ps[-1].next_stop_id == 10


def test_a_deferred_stop_visited_from_another_road_still_arrives() -> None:
    r = route(STRAIGHT, [(1000, 0), (3000, 0)], service_s=60.0, radius_m=40.0)
    plan = prog.plan(r)
    st, _, _ = run(plan, drive(0, 1500, 0))
    assert st.deferred == (0,)
    # Off the path 300 m north, back west, and down to the stop (never along the path).
    fixes = [fix(151 + i, 1500, 10.0 * i, 10.0) for i in range(1, 31)]
    fixes += [fix(181 + i, 1500 - 10.0 * i, 300, 10.0) for i in range(1, 51)]
    fixes += [fix(231 + i, 1000, 300 - 10.0 * i, 10.0) for i in range(1, 31)]
    st, events, _ = run(plan, fixes + wait(1000, 262, 40), st)
    assert EventType.ARRIVED in types(events, 10)
    assert st.deferred == ()


def test_off_the_path_progress_gets_no_farther_than_the_vehicle_could_drive() -> None:
    # East 1 km, a turn north and back west to above the start: 2.1 km along the path, a
    # point 10 m off its last stretch lies 110 m off its first.
    path = [(0, 0), (1000, 0), (1000, 120), (0, 120)]
    plan = prog.plan(route(path, [(500, 0), (1000, 60), (0, 120)]))
    fixes = [fix(float(i), 0.0, 10.0 * i, 10.0) for i in range(12)]  # north to (0, 110)
    fixes += wait(0.0, 12.0, 20, y=110.0)
    st, events, ps = run(plan, fixes)
    # Eleven seconds from the path cannot be 2 km along it: no jump, nothing passed.
    assert max(p.progress_m for p in ps) < 600.0
    assert prog.DEFERRED not in types(events)
    assert st.deferred == ()


def test_arriving_at_a_stop_brings_progress_that_ran_ahead_back_to_it() -> None:
    r = route(densify(STRAIGHT, 50.0), [(100, 0), (1000, 0), (2000, 0)], radius_m=30.0)
    plan = prog.plan(r)
    # Progress matched 1.5 km ahead (on a street the path uses twice, say), yet the
    # vehicle stands at the first stop.
    st = replace(prog.start(plan), progress_m=1500.0, last_s=T0.timestamp() - 1.0)
    st, events, ps = run(plan, wait(100.0, 0.0, 30), st)
    assert types(events, 10)[0] == EventType.ARRIVED
    assert st.progress_m == pytest.approx(100.0, abs=1.0)
    assert st.deferred == ()
    assert eta_of(ps[-1], 11) < eta_of(ps[-1], 12)


def test_visits_longer_than_planned_lengthen_the_service_ahead() -> None:
    r = route(STRAIGHT, [(1000, 0), (2000, 0), (3000, 0)], service_s=60.0, radius_m=40.0)
    plan = prog.plan(r)
    fixes = drive(0, 1000, 0) + wait(1000, 101, 240) + drive(1000, 1500, 341)
    st, _, ps = run(plan, fixes)
    assert st.stops[0].status == StopStatus.VISITED
    assert st.served_s > 240.0 and st.service_planned_s == 60.0
    ignoring = prog.EtaConfig(service_prior_s=math.inf)
    plain = prog.current(plan, st, ps[-1].time, ignoring)
    learnt = ps[-1]
    # Stop 12 comes after stop 11's service, now expected to take longer than 60 s.
    scale = (st.served_s + CFG.service_prior_s) / (60.0 + CFG.service_prior_s)
    extra = (eta_of(learnt, 12) - eta_of(plain, 12)).total_seconds()
    assert extra == pytest.approx(60.0 * (scale - 1.0), abs=1.0)
    assert extra > 30.0
    assert eta_of(learnt, 11) == eta_of(plain, 11)


def test_progress_lists_every_stop_in_sequence() -> None:
    r = route(STRAIGHT, [(1000, 0), (2000, 0), (3000, 0)])
    plan = prog.plan(r)
    _st, _, ps = run(plan, drive(0, 200, 0))
    p = ps[-1]
    assert [e.stop_id for e in p.etas] == [10, 11, 12]
    assert [e.seq for e in p.etas] == [1, 2, 3]
    etas = [e.eta for e in p.etas]
    assert all(e is not None for e in etas) and etas == sorted(etas)  # type: ignore[type-var]
    assert p.next_stop_id == 10
    assert p.remaining_m == pytest.approx(2800.0, abs=15.0)
    doc = json.loads(json.dumps(p.to_json()))
    assert doc["etas"][0]["eta"] == p.etas[0].eta.isoformat()  # type: ignore[union-attr]
    assert p.eta_for(999) is None


def test_plans_refuse_unusable_routes() -> None:
    with pytest.raises(ValueError, match="at least one stop"):
        prog.plan(Route(1, 7, T0, (), (ll(0, 0), ll(1, 1))))
    dup = (Stop(10, 1, *ll(0, 0)), Stop(10, 2, *ll(100, 0)))
    with pytest.raises(ValueError, match="unique"):
        prog.plan(Route(1, 7, T0, dup, (ll(0, 0), ll(100, 0))))
    with pytest.raises(ValueError):
        prog.EtaConfig(off_route_fixes=0)
    with pytest.raises(ValueError, match="negative"):
        prog.EtaConfig(default_error=-0.1)
    with pytest.raises(ValueError, match="positive"):
        prog.EtaConfig(stretch_s=0.0)
