"""The customer channel's rule: only this stop's ETA and status, the vehicle only on its way
here, nothing about other stops, recipients, the path or the device, never a position once
the stop is done."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tracker.core import privacy
from tracker.core.privacy import Position, Rule, TrackedStop

T0 = datetime(2024, 6, 3, 8, 0, tzinfo=UTC)
NOW = T0 + timedelta(minutes=30)
RULE = Rule(max_stops_away=1, arriving_s=300.0, lead_s=1800.0)
DEVICE = "van-secret-7731"
STOP_IDS = (9101, 9102, 9103, 9104)
VAN = Position(48.1371234, 11.5612345, NOW - timedelta(seconds=2), 93.4)

Json = dict[str, Any]


def route_json(statuses: tuple[str, ...] = ("pending",) * 4, **extra: Any) -> Json:
    """A Route JSON as the routes API and the `routes` bus messages carry it."""
    stops = []
    for k, (sid, status) in enumerate(zip(STOP_IDS, statuses, strict=True)):
        eta = None if status != "pending" else (NOW + timedelta(minutes=10 * (k + 1))).isoformat()
        stops.append(
            {
                "id": sid,
                "seq": k + 1,
                "name": f"Street {k + 1} No. {k * 7 + 3}",
                "recipient": f"Recipient-{k + 1}-Private",
                "lat": 48.1 + k / 100,
                "lon": 11.5 + k / 100,
                "radius_m": 40.0,
                "service_s": 60.0,
                "status": status,
                "eta": eta,
                "arrived_at": (NOW - timedelta(minutes=1)).isoformat()
                if status != "pending"
                else None,
                "completed_at": NOW.isoformat()
                if status in ("completed", "failed", "skipped")
                else None,
                "reason": "dog bites" if status == "failed" else None,
                "tracking_url": None,
            }
        )
    route: Json = {
        "id": 5501,
        "device": DEVICE,
        "planned_start": T0.isoformat(),
        "status": "active",
        "straight_line": False,
        "off_route": False,
        "next_stop": STOP_IDS[0],
        "stops": stops,
    }
    route.update(extra)
    return route


def tracked(k: int = 2, statuses: tuple[str, ...] = ("pending",) * 4, **extra: Any) -> TrackedStop:
    found = privacy.from_route(route_json(statuses, **extra), STOP_IDS[k])
    assert found is not None
    return found


def event(kind: str, stop: int | None, **data: Any) -> Json:
    return {
        "type": kind,
        "time": (NOW + timedelta(seconds=5)).isoformat(),
        "route_id": 5501,
        "stop_id": None if stop is None else STOP_IDS[stop],
        "data": data,
        "device": DEVICE,
    }


# -- what a message may carry ---------------------------------------------------------------


def test_message_carries_only_this_stop_and_no_identifiers() -> None:
    msg = privacy.customer_message(
        tracked(1, ("completed", "pending", "pending", "pending")), VAN, NOW, RULE
    )
    assert set(msg) == {
        "destination",
        "phase",
        "eta",
        "eta_earliest",
        "eta_latest",
        "approximate",
        "arrived_at",
        "done_at",
        "vehicle",
    }
    assert msg["destination"] == {"name": "Street 2 No. 10", "lat": 48.11, "lon": 11.51}
    assert msg["eta"] == (NOW + timedelta(minutes=20)).isoformat()
    assert msg["vehicle"] == {
        "lat": 48.13712,
        "lon": 11.56123,
        "time": VAN.time.isoformat(),
        "course": 93,
    }
    text = orjson.dumps(msg).decode()
    for secret in (DEVICE, "Recipient", "Street 1", "Street 3", "Street 4", "dog bites"):
        assert secret not in text
    for number in (*STOP_IDS, 5501):
        assert str(number) not in text


def test_from_route_keeps_only_the_statuses_of_earlier_stops() -> None:
    t = tracked(2, ("completed", "arrived", "pending", "pending"))
    assert t.ahead == ((STOP_IDS[0], "completed"), (STOP_IDS[1], "arrived"))
    assert (t.stop_id, t.route_id, t.name) == (STOP_IDS[2], 5501, "Street 3 No. 17")
    assert privacy.from_route(route_json(), 4242) is None
    assert privacy.from_route({"id": 1, "stops": "nope"}, STOP_IDS[0]) is None


# -- the visibility rule -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("k", "statuses", "max_away", "visible"),
    [
        (0, ("pending",) * 4, 0, True),  # heading here
        (1, ("pending",) * 4, 0, False),  # one stop before this one
        (1, ("pending",) * 4, 1, True),
        (2, ("pending",) * 4, 1, False),  # two stops away
        (2, ("completed", "pending", "pending", "pending"), 1, True),
        (2, ("skipped", "failed", "pending", "pending"), 0, True),
        (2, ("completed", "arrived", "pending", "pending"), 0, False),  # being served there
        (2, ("pending", "pending", "arrived", "pending"), 0, True),  # at this stop
        (3, ("pending",) * 4, 3, True),
        (2, ("pending", "pending", "completed", "pending"), 3, False),  # done: never
        (2, ("pending", "pending", "failed", "pending"), 3, False),
        (2, ("pending", "pending", "skipped", "pending"), 3, False),
    ],
)
def test_vehicle_shown_only_on_its_way_here(
    k: int, statuses: tuple[str, ...], max_away: int, visible: bool
) -> None:
    rule = Rule(max_stops_away=max_away)
    t = tracked(k, statuses)
    assert privacy.vehicle_visible(t, VAN, NOW, rule) is visible
    msg = privacy.customer_message(t, VAN, NOW, rule)
    assert (msg["vehicle"] is not None) is visible


def test_vehicle_hidden_before_the_drive_and_on_routes_not_active() -> None:
    early = T0 - timedelta(minutes=20)
    # Not started yet: the planned start lies ahead and no stop has moved.
    assert not privacy.vehicle_visible(tracked(0), VAN, early, RULE)
    # Started by the clock, but the vehicle's last fix is from before the drive (its depot
    # overnight, the driver's home): not this route's position.
    stale = Position(48.0, 11.0, T0 - timedelta(seconds=RULE.lead_s + 1))
    assert not privacy.vehicle_visible(tracked(0), stale, NOW, RULE)
    ready = Position(48.0, 11.0, T0 - timedelta(seconds=RULE.lead_s - 1))
    assert privacy.vehicle_visible(tracked(0), ready, NOW, RULE)
    for status in ("cancelled", "completed"):
        assert not privacy.vehicle_visible(tracked(0, status=status), VAN, NOW, RULE)
    assert not privacy.vehicle_visible(tracked(0), None, NOW, RULE)


def test_vehicle_hidden_once_it_drives_another_route() -> None:
    # The device got a newer route while this one still has open stops: the van is not on
    # its way here any more, so this customer must not follow it.
    t = tracked(0)
    assert privacy.vehicle_visible(t, VAN, NOW, RULE, driving_route=5501)
    assert not privacy.vehicle_visible(t, VAN, NOW, RULE, driving_route=5502)
    assert privacy.customer_message(t, VAN, NOW, RULE, driving_route=5502)["vehicle"] is None


# -- phases --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("k", "statuses", "now", "extra", "expected"),
    [
        (1, ("pending",) * 4, T0 - timedelta(minutes=5), {}, "scheduled"),
        (
            1,
            ("completed", "pending", "pending", "pending"),
            T0 - timedelta(minutes=5),
            {},
            "next_stop",
        ),  # started early: the first stop is already done
        (2, ("pending",) * 4, NOW, {}, "out_for_delivery"),
        (1, ("completed", "pending", "pending", "pending"), NOW, {}, "next_stop"),
        (
            1,
            ("completed", "pending", "pending", "pending"),
            NOW + timedelta(minutes=16),
            {},
            "arriving",
        ),  # ETA NOW+20 min is under 5 minutes away
        (1, ("completed", "arrived", "pending", "pending"), NOW, {}, "arrived"),
        (1, ("completed", "completed", "pending", "pending"), NOW, {}, "delivered"),
        (1, ("completed", "failed", "pending", "pending"), NOW, {}, "failed"),
        (1, ("completed", "skipped", "pending", "pending"), NOW, {}, "failed"),
        (
            1,
            ("completed", "pending", "pending", "pending"),
            NOW,
            {"status": "cancelled"},
            "cancelled",
        ),
    ],
)
def test_phases(
    k: int, statuses: tuple[str, ...], now: datetime, extra: Json, expected: str
) -> None:
    t = tracked(k, statuses, **extra)
    assert privacy.phase(t, now, RULE) == expected
    assert privacy.customer_message(t, VAN, now, RULE)["phase"] == expected


def test_done_stop_reports_its_outcome_time_and_no_eta() -> None:
    t = tracked(0, ("completed", "pending", "pending", "pending"))
    msg = privacy.customer_message(t, VAN, NOW, RULE)
    assert (msg["eta"], msg["done_at"], msg["vehicle"]) == (None, NOW.isoformat(), None)


# -- keeping the stop current --------------------------------------------------------------


def test_events_move_earlier_stops_and_this_one_forward() -> None:
    t = tracked(2)
    assert privacy.stops_away(t) == 2
    t = privacy.apply_event(t, event("stop.completed", 0))
    t = privacy.apply_event(t, event("stop.arrived", 1))
    assert privacy.stops_away(t) == 1
    t = privacy.apply_event(t, event("stop.skipped", 1))
    assert privacy.stops_away(t) == 0
    eta = NOW + timedelta(minutes=3)
    t = privacy.apply_event(t, event("stop.eta_changed", 2, eta=eta.isoformat()))
    assert t.eta == eta and privacy.phase(t, NOW, RULE) == "arriving"
    t = privacy.apply_event(t, event("stop.arrived", 2))
    assert (t.status, t.eta, t.arrived_at) == ("arrived", None, NOW + timedelta(seconds=5))
    t = privacy.apply_event(t, event("stop.failed", 2, reason="closed"))
    assert (t.status, t.done_at) == ("failed", NOW + timedelta(seconds=5))
    # Another route's events, and event kinds without a status, change nothing.
    other = {**event("stop.completed", 3), "route_id": 1}
    assert privacy.apply_event(t, other) == t
    assert privacy.apply_event(t, event("stop.departed", 2)) == t
    assert privacy.apply_event(t, event("route.completed", None)).route_status == "completed"


def test_route_summaries_never_move_a_stop_back() -> None:
    t = tracked(1, ("completed", "arrived", "pending", "pending"))
    stale = route_json(("pending",) * 4)
    kept = privacy.merge_route(t, stale)
    assert kept.status == "arrived" and kept.ahead == ((STOP_IDS[0], "completed"),)
    newer = route_json(("completed", "completed", "pending", "pending"))
    done = privacy.merge_route(kept, newer)
    assert (done.status, done.done_at) == ("completed", NOW)
    assert (
        privacy.merge_route(done, route_json(("completed", "failed", "pending", "pending"))) == done
    )
    # The ETA of a still pending stop follows the latest summary; another route is ignored.
    p = tracked(2)
    later = route_json()
    later["stops"][2]["eta"] = (NOW + timedelta(hours=1)).isoformat()
    assert privacy.merge_route(p, later).eta == NOW + timedelta(hours=1)
    assert privacy.merge_route(p, {**later, "id": 77}) == p
    cancelled = privacy.merge_route(p, route_json(status="cancelled"))
    assert cancelled.route_status == "cancelled"
    assert privacy.merge_route(cancelled, route_json()).route_status == "cancelled"


_statuses = st.sampled_from(["pending", "arrived", "completed", "failed", "skipped"])
_summary = st.tuples(_statuses, _statuses, _statuses, _statuses).map(
    lambda s: ("summary", route_json(s))
)
_event = st.tuples(
    st.sampled_from(
        [
            "stop.arrived",
            "stop.completed",
            "stop.failed",
            "stop.skipped",
            "stop.eta_changed",
            "stop.arriving",
            "route.back_on_route",
        ]
    ),
    st.sampled_from([0, 1, 2, 3]),
).map(lambda e: ("event", event(e[0], e[1], eta=NOW.isoformat())))


@settings(max_examples=300, deadline=None)
@given(
    outcome=st.sampled_from(["completed", "failed", "skipped"]),
    later=st.lists(st.one_of(_summary, _event), max_size=12),
    max_away=st.integers(0, 4),
    minutes=st.integers(-60, 600),
)
def test_after_the_stop_is_done_no_position_ever_again(
    outcome: str, later: list[tuple[str, Json]], max_away: int, minutes: int
) -> None:
    rule = Rule(max_stops_away=max_away)
    t = privacy.apply_event(tracked(1), event(f"stop.{outcome}", 1))
    assert t.done
    for kind, message in later:
        t = (
            privacy.merge_route(t, message)
            if kind == "summary"
            else privacy.apply_event(t, message)
        )
        now = NOW + timedelta(minutes=minutes)
        van = Position(48.2, 11.6, now)
        msg = privacy.customer_message(t, van, now, rule)
        assert msg["vehicle"] is None
        assert msg["phase"] == ("delivered" if outcome == "completed" else "failed")
        assert msg["eta"] is None


def test_the_interval_reaches_the_customer_from_the_route_and_from_eta_events() -> None:
    raw = route_json()
    lo, hi = NOW + timedelta(minutes=18), NOW + timedelta(minutes=26)
    raw["stops"][1]["eta_earliest"] = lo.isoformat()
    raw["stops"][1]["eta_latest"] = hi.isoformat()
    t = privacy.from_route(raw, STOP_IDS[1])
    assert t is not None
    msg = privacy.customer_message(t, VAN, NOW, RULE)
    assert (msg["eta_earliest"], msg["eta_latest"]) == (lo.isoformat(), hi.isoformat())
    later = NOW + timedelta(minutes=30)
    moved = privacy.apply_event(
        t,
        event(
            "stop.eta_changed",
            1,
            eta=later.isoformat(),
            eta_earliest=(later - timedelta(minutes=3)).isoformat(),
            eta_latest=(later + timedelta(minutes=6)).isoformat(),
        ),
    )
    assert moved.eta == later and moved.eta_latest == later + timedelta(minutes=6)


def test_a_stop_driven_past_is_not_the_next_stop() -> None:
    # Stop 1 was passed by without a visit: its customer is not told "you are next".
    t = tracked(0)
    assert privacy.phase(t, NOW, RULE) in (privacy.NEXT_STOP, privacy.ARRIVING)
    passed = privacy.apply_event(t, event("stop.deferred", 0, passed_m=250.0))
    assert passed.deferred
    assert privacy.phase(passed, NOW, RULE) == privacy.OUT_FOR_DELIVERY
    assert not privacy.vehicle_visible(passed, VAN, NOW, RULE)
    # The same from a Route JSON that marks it deferred.
    raw = route_json()
    raw["stops"][0]["deferred"] = True
    again = privacy.from_route(raw, STOP_IDS[0])
    assert again is not None and privacy.phase(again, NOW, RULE) == privacy.OUT_FOR_DELIVERY
    visited = privacy.apply_event(tracked(1), event("stop.visited", 1, dwell_s=40.0))
    assert visited.status == "visited" and visited.eta is None
    assert privacy.phase(visited, NOW, RULE) == privacy.ARRIVED
