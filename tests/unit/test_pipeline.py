"""The pipeline: its steps in order, and one fix through all of them."""

from __future__ import annotations

from datetime import timedelta

from tests.unit.test_progress import CFG, STRAIGHT, T0, fix, route, run
from tracker.core import messages, pipeline
from tracker.core.filters import FilterConfig
from tracker.core.model import Event, EventType, Fix, JsonDict, RejectCode
from tracker.core.route import progress as prog

FILTERS = FilterConfig(max_future_s=60.0, max_speed_mps=70.0)
NOW = T0 + timedelta(hours=1)


def test_the_steps_are_listed_in_the_order_a_fix_takes_them() -> None:
    assert [s.name for s in pipeline.STEPS] == [
        "decode",
        "filter",
        "store",
        "route progress",
        "motion/stop events",
        "ETA",
        "publish",
    ]


def drive_fixes() -> list[Fix]:
    # 10 m/s along the street, standing 120 s at the stop at 1000 m, then on.
    out = [fix(float(t), 10.0 * t, 0.0, speed=10.0) for t in range(0, 100, 5)]
    out += [fix(100.0 + t, 1000.0, 0.0, speed=0.0) for t in range(0, 120, 5)]
    out += [fix(220.0 + t, 1000.0 + 10.0 * t, 0.0, speed=10.0) for t in range(0, 100, 5)]
    return out


def test_process_gives_the_route_what_the_route_steps_alone_give_it() -> None:
    plan = prog.plan(route(STRAIGHT, [(1000.0, 0.0), (3000.0, 0.0)]))
    state = pipeline.DeviceState("van-1", "Van 1", None, plan, prog.start(plan))
    published: list[tuple[str, JsonDict]] = []
    events: list[Event] = []
    for f in drive_fixes():
        out = pipeline.process(state, f, NOW, FILTERS, CFG)
        assert out.reject is None
        state = out.state
        published.extend(out.messages)
        events.extend(out.events)
    alone, alone_events, _ = run(plan, drive_fixes())
    assert state.route == alone
    assert events == alone_events
    assert EventType.ARRIVED in [e.type for e in events]
    # Every fix moved the last position; each event went out after its fix's position.
    positions = [m for ch, m in published if ch == messages.POSITIONS]
    assert len(positions) == len(drive_fixes())
    assert [m["event"]["type"] for ch, m in published if ch == messages.EVENTS] == [
        e.type for e in events
    ]
    assert state.reference == drive_fixes()[-1]


def test_a_rejected_fix_changes_nothing() -> None:
    plan = prog.plan(route(STRAIGHT, [(1000.0, 0.0)]))
    first = fix(0.0, 0.0, 0.0, speed=10.0)
    state = pipeline.process(
        pipeline.DeviceState("van-1", None, None, plan, prog.start(plan)), first, NOW, FILTERS, CFG
    ).state
    # 4 km in 5 s: a jump, judged against the reference fix.
    jump = fix(5.0, 4000.0, 0.0, speed=10.0)
    out = pipeline.process(state, jump, NOW, FILTERS, CFG)
    assert out.reject is not None and out.reject.code == RejectCode.IMPLAUSIBLE_JUMP
    assert out.state == state and out.messages == () and out.events == ()


def test_advance_applies_each_fix_once_in_time_order() -> None:
    plan = prog.plan(route(STRAIGHT, [(1000.0, 0.0)]))
    fixes = drive_fixes()
    once = pipeline.advance(plan, prog.start(plan), fixes, CFG)
    again = pipeline.advance(plan, once.state, fixes, CFG)  # the same fixes a second time
    assert once.applied == len(fixes) and once.events
    assert again.applied == 0 and again.events == [] and again.state == once.state
    newest = pipeline.newest([(0, fixes[3]), (1, fixes[7]), (2, fixes[5])], [True, True, False])
    assert newest == fixes[7]
