"""A visited stop (the vehicle came and left, nobody closed it) on the customer's page: the
driver has been there, and only the completion says Delivered."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tracker.core import privacy
from tracker.core.privacy import Position, Rule

T0 = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)


def route(status: str) -> dict[str, object]:
    return {
        "id": 7,
        "planned_start": T0.isoformat(),
        "status": "active",
        "straight_line": False,
        "stops": [
            {
                "id": 1,
                "seq": 1,
                "name": "A",
                "lat": 48.1,
                "lon": 11.5,
                "status": status,
                "eta": None,
                "arrived_at": (T0 + timedelta(minutes=5)).isoformat(),
                "completed_at": None,
            },
            {
                "id": 2,
                "seq": 2,
                "name": "B",
                "lat": 48.2,
                "lon": 11.6,
                "status": "pending",
                "eta": (T0 + timedelta(minutes=20)).isoformat(),
                "arrived_at": None,
                "completed_at": None,
            },
        ],
    }


def test_a_visited_stop_still_opens_its_page_and_is_not_delivered() -> None:
    tracked = privacy.from_route(route("visited"), 1)
    assert tracked is not None and not tracked.done
    now = T0 + timedelta(minutes=10)
    assert privacy.phase(tracked, now, Rule()) == privacy.ARRIVED
    vehicle = Position(48.15, 11.55, now)
    message = privacy.customer_message(tracked, vehicle, now, Rule())
    assert message["vehicle"] is None and message["done_at"] is None


def test_events_move_arrived_to_visited_to_completed_never_back() -> None:
    tracked = privacy.from_route(route("arrived"), 1)
    assert tracked is not None
    when = (T0 + timedelta(minutes=8)).isoformat()
    visited = privacy.apply_event(
        tracked, {"type": "stop.visited", "route_id": 7, "stop_id": 1, "time": when}
    )
    assert visited.status == "visited" and visited.arrived_at == tracked.arrived_at
    # A late "arrived" summary does not take it back.
    assert privacy.merge_route(visited, route("arrived")).status == "visited"
    done = privacy.apply_event(
        visited, {"type": "stop.completed", "route_id": 7, "stop_id": 1, "time": when}
    )
    assert done.done and privacy.phase(done, T0, Rule()) == privacy.DELIVERED
    # The next customer: the visited stop ahead is not done yet.
    other = privacy.from_route(route("visited"), 2)
    assert other is not None and privacy.stops_away(other) == 1
