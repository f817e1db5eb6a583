"""The rule for stop.eta_changed events: published when what is shown changes materially."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime

from tests.unit.test_progress import CFG, STRAIGHT, T0, fix, route, run
from tracker.core.model import EventType, StopStatus
from tracker.core.route import progress as prog
from tracker.core.route import stages
from tracker.core.route.events import Emitter
from tracker.core.route.publication import became_next_s, material, minute
from tracker.core.route.state import RouteState, StopState

T0S = T0.timestamp()
T = 1_800_000_000.0  # a whole minute (epoch s)
assert T % 60 == 0


def test_the_first_eta_is_always_news() -> None:
    assert material(None, T + 600, T, None, False, CFG)


def test_an_eta_that_still_shows_the_same_minute_is_no_news() -> None:
    # Even relaxed (next stop, arriving): 10:42:05 and 10:42:55 both read 10:42.
    assert not material(T + 605, T + 655, T, T - 600, True, CFG)
    assert minute(T + 605) == minute(T + 655)


def test_the_move_must_be_a_minute_and_a_tenth_of_the_time_to_go() -> None:
    # 5 min out: the floor is 60 s.
    assert not material(T + 300, T + 359, T, None, False, CFG)
    assert material(T + 300, T + 361, T, None, False, CFG)
    # 40 min out: 10 % is 240 s; a 3-minute move (past minute boundaries) is noise.
    assert not material(T + 2400, T + 2580, T, None, False, CFG)
    assert material(T + 2400, T + 2700, T, None, False, CFG)
    # Earlier counts like later.
    assert material(T + 2400, T + 2100, T, None, False, CFG)


def test_a_recent_event_holds_the_next_one_unless_the_move_is_large() -> None:
    old, new = T + 1200, T + 1340  # 140 s against a floor of max(60, 134) = 134 s
    assert material(old, new, T, T - CFG.eta_hold_s, False, CFG)
    assert not material(old, new, T, T - 30, False, CFG)  # told 30 s ago: hold
    # Twice the floor or more is told at once.
    assert material(old, T + 1600, T, T - 30, False, CFG)


def test_no_hold_in_the_last_quarter_hour() -> None:
    # 12 min out, told 30 s ago, moved 80 s (floor 72 s): told at once.
    assert material(T + 720, T + 800, T, T - 30, False, CFG)
    # 16 min out, told 30 s ago, moved 100 s (floor 96 s): held.
    assert not material(T + 860, T + 960, T, T - 30, False, CFG)
    assert material(T + 860, T + 960, T, T - CFG.eta_hold_s, False, CFG)


def test_relaxed_moments_need_only_a_new_minute() -> None:
    # The stop just became next (or is arriving): 20 s that cross a minute are told.
    assert material(T + 1190, T + 1210, T, T - 10, True, CFG)
    assert not material(T + 1190, T + 1210, T, T - 10, False, CFG)


def test_a_stop_becomes_next_when_the_one_before_is_left_or_done() -> None:
    assert became_next_s([StopState(), StopState()]) == 0.0
    stops = [
        StopState(status=StopStatus.COMPLETED, arrived_s=T - 300, departed_s=T - 100),
        StopState(status=StopStatus.SKIPPED, done_s=T - 50),
        StopState(),
    ]
    assert became_next_s(stops) == T - 50


def test_thresholds_are_validated() -> None:
    for bad in ({"eta_change_s": -1.0}, {"eta_hold_s": -1.0}, {"eta_jump": 0.5}):
        try:
            prog.EtaConfig(**bad)  # type: ignore[arg-type]
        except ValueError:
            continue
        raise AssertionError(f"{bad} accepted")


def test_publication_times_round_trip_and_old_states_load() -> None:
    st = RouteState(stops=(StopState(), StopState()), published=(T, None), published_s=(T, None))
    assert RouteState.from_json(st.to_json()) == st
    old = st.to_json()
    del old["published_s"]
    assert RouteState.from_json(old).published_s == ()


def test_a_noisy_drive_makes_few_events_and_every_one_is_material() -> None:
    # A van whose speed wobbles from fix to fix (lights, traffic): the old rule (30 s and
    # 5 %) fired for most stops every minute or so; now each stop hears of real changes.
    stops = [(400.0 * (k + 1), 0.0) for k in range(10)]
    plan = prog.plan(route(STRAIGHT, stops))
    rng = random.Random(3)
    fixes = []
    x = 0.0
    for t in range(0, 400):
        v = max(0.0, 8.0 + rng.gauss(0, 4.0)) if (t // 40) % 3 else 1.0
        x += v
        fixes.append(fix(t, x, 0.0, v))
    _, events, _ = run(plan, fixes)
    _, old_events, _ = run(
        plan, fixes, cfg=replace(CFG, eta_change_s=30.0, eta_change_frac=0.05, eta_hold_s=0.0)
    )
    changed = [e for e in events if e.type == EventType.ETA_CHANGED]
    # Beyond the first ETA of each stop (always news):
    now = sum(e.data["previous"] is not None for e in changed)
    before = sum(
        e.type == EventType.ETA_CHANGED and e.data["previous"] is not None for e in old_events
    )
    assert now < 0.65 * before, (now, before)
    for e in changed:
        if e.data["previous"] is not None:
            eta = datetime.fromisoformat(e.data["eta"]).timestamp()
            prev = datetime.fromisoformat(e.data["previous"]).timestamp()
            assert minute(eta) != minute(prev)


def _next_stop_case(told_after_departure: bool) -> list[str]:
    """A van that left stop 10 at T0+100 s, 200 m on; stop 11's ETA was published in
    another minute but within the floor, before or after the departure."""
    plan = prog.plan(route(STRAIGHT, [(1000, 0), (4500, 0)]))
    t = T0S + 120.0
    st = replace(
        prog.start(plan),
        stops=(
            StopState(StopStatus.COMPLETED, arrived_s=T0S, departed_s=T0S + 100.0),
            StopState(),
        ),
        progress_m=1200.0,
        last_s=t,
        x=1200.0,
        y=0.0,
    )
    e = prog.current(plan, st, datetime.fromtimestamp(t, UTC), CFG).eta_for(11)
    assert e is not None and e.eta is not None
    eta = e.eta.timestamp()
    start = minute(eta) * 60.0
    shown = start - 1.0 if eta - start < 30.0 else start + 60.0  # within 31 s, other minute
    at = t - 10.0 if told_after_departure else T0S + 90.0
    st = replace(st, published=(None, shown), published_s=(None, at))
    emit = Emitter(plan, datetime.fromtimestamp(t, UTC))
    stages.publish(plan, st, t, CFG, emit)
    return [ev.type for ev in emit.events if ev.stop_id == 11]


def test_the_stop_that_becomes_next_is_told_its_new_minute() -> None:
    assert EventType.ETA_CHANGED in _next_stop_case(told_after_departure=False)
    # Told since it became next: the usual floor holds again.
    assert EventType.ETA_CHANGED not in _next_stop_case(told_after_departure=True)
