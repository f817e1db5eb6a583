"""The hub's pure state: fleet updates from bus messages, coalescing, views, message shapes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from tracker.live.fleet import (
    EVENTS,
    POSITIONS,
    ROUTES,
    Changes,
    Fleet,
    FleetView,
    Update,
    Vehicle,
    delta_message,
    snapshot_message,
    through,
)

T0 = datetime(2024, 5, 6, 8, 0, tzinfo=UTC)
VEHICLE_KEYS = {"id", "name", "time", "lat", "lon", "speed", "course", "accuracy", "route"}


def position(device: str, seconds: float, lat: float = 52.0, **extra: Any) -> dict[str, Any]:
    return {
        "type": "position",
        "device": device,
        "name": f"Van {device}",
        "time": (T0 + timedelta(seconds=seconds)).isoformat(),
        "lat": lat,
        "lon": 4.35,
        "speed": 8.5,
        "course": 90.0,
        "accuracy": 5.0,
        **extra,
    }


def test_position_becomes_a_vehicle_with_exactly_the_contract_keys() -> None:
    fleet = Fleet()
    update = fleet.apply(POSITIONS, position("a", 0))
    assert update is not None and update.vehicle is not None
    assert set(update.vehicle) == VEHICLE_KEYS
    assert update.vehicle["id"] == "a"
    assert update.vehicle["name"] == "Van a"
    assert update.vehicle["route"] is None
    assert fleet.get("a") == update.vehicle


def test_older_or_repeated_position_never_moves_a_vehicle_backward() -> None:
    fleet = Fleet()
    fleet.apply(POSITIONS, position("a", 10, lat=52.1))
    assert fleet.apply(POSITIONS, position("a", 5, lat=52.0)) is None
    assert fleet.apply(POSITIONS, position("a", 10, lat=52.0)) is None
    known = fleet.get("a")
    assert known is not None and known["lat"] == 52.1
    assert fleet.apply(POSITIONS, position("a", 11, lat=52.2)) is not None


def test_malformed_or_foreign_messages_change_nothing() -> None:
    fleet = Fleet()
    bad = [
        (POSITIONS, {"type": "position", "device": "a", "time": "yesterday", "lat": 1, "lon": 2}),
        (POSITIONS, {"type": "position", "device": "a", "time": T0.isoformat()}),
        (POSITIONS, {"type": "position", "time": T0.isoformat(), "lat": 1, "lon": 2}),
        (POSITIONS, {"type": "something-new", "device": "a"}),
        (ROUTES, position("a", 0)),  # a position on the wrong channel
        (EVENTS, {"type": "event", "device": "a", "event": "not an object"}),
    ]
    for channel, message in bad:
        assert fleet.apply(channel, message) is None, message  # type: ignore[arg-type]
    assert len(fleet) == 0


def test_route_summary_is_merged_into_the_vehicle_and_kept_for_later_positions() -> None:
    fleet = Fleet()
    # A summary before any position is remembered but shows nothing yet.
    assert fleet.apply(ROUTES, {"type": "route", "device": "a", "next_stop": "S1"}) is None
    first = fleet.apply(POSITIONS, position("a", 0))
    assert first is not None and first.vehicle is not None
    assert first.vehicle["route"] == {"next_stop": "S1"}
    changed = fleet.apply(ROUTES, {"type": "route", "v": 1, "device": "a", "next_stop": "S2"})
    assert changed is not None and changed.vehicle is not None
    assert changed.vehicle["route"] == {"next_stop": "S2"}
    assert changed.vehicle["lat"] == first.vehicle["lat"]
    later = fleet.apply(POSITIONS, position("a", 1))
    assert later is not None and later.vehicle is not None
    assert later.vehicle["route"] == {"next_stop": "S2"}
    cleared = fleet.apply(ROUTES, {"type": "route", "device": "a"})
    assert cleared is not None and cleared.vehicle is not None
    assert cleared.vehicle["route"] is None
    # The earlier vehicle dicts were not mutated: frames already encoded stay true.
    assert first.vehicle["route"] == {"next_stop": "S1"}


def test_event_message_becomes_an_event_naming_its_device() -> None:
    fleet = Fleet()
    update = fleet.apply(
        EVENTS, {"type": "event", "device": "a", "event": {"type": "arrived", "stop": "S1"}}
    )
    assert update == Update("a", event={"type": "arrived", "stop": "S1", "device": "a"})


def test_absorb_keeps_the_newer_of_database_and_bus() -> None:
    fleet = Fleet()
    fleet.apply(POSITIONS, position("a", 10, lat=52.5))
    fleet.apply(ROUTES, {"type": "route", "device": "b", "eta": "soon"})
    loaded: list[Vehicle] = [
        {**_vehicle("a", 5), "lat": 51.0},  # older than the bus: ignored
        {**_vehicle("b", 5), "lat": 50.0},  # unknown to the bus: taken, with its route
        {"id": "broken"},  # no time: skipped
    ]
    merged = {v["id"]: v for v in fleet.absorb(loaded)}
    assert set(merged) == {"a", "b"}
    assert merged["a"]["lat"] == 52.5
    assert merged["b"]["lat"] == 50.0
    assert merged["b"]["route"] == {"eta": "soon"}
    assert all(set(v) == VEHICLE_KEYS for v in merged.values())


def _vehicle(device: str, seconds: float) -> Vehicle:
    return {
        "id": device,
        "name": device,
        "time": (T0 + timedelta(seconds=seconds)).isoformat(),
        "lat": 52.0,
        "lon": 4.0,
        "speed": None,
        "course": None,
        "accuracy": None,
        "route": None,
    }


def test_changes_keep_the_latest_state_per_vehicle_and_every_event_in_order() -> None:
    changes = Changes(max_events=10)
    assert not changes
    changes.add(Update("a", vehicle=_vehicle("a", 1)))
    changes.add(Update("b", vehicle=_vehicle("b", 1)))
    changes.add(Update("a", vehicle=_vehicle("a", 2), event={"n": 1}))
    changes.add(Update("b", event={"n": 2}))
    assert changes
    assert list(changes.vehicles) == ["b", "a"]  # ordered by latest change
    assert changes.vehicles["a"]["time"] == _vehicle("a", 2)["time"]
    assert changes.events == [{"n": 1}, {"n": 2}]


def test_merge_folds_later_changes_in_and_copy_is_independent() -> None:
    first = Changes(max_events=10)
    first.add(Update("a", vehicle=_vehicle("a", 1), event={"n": 1}))
    mine = first.copy()
    later = Changes(max_events=10)
    later.add(Update("a", vehicle=_vehicle("a", 3), event={"n": 2}))
    later.add(Update("c", vehicle=_vehicle("c", 3)))
    mine.merge(later)
    assert mine.vehicles["a"]["time"] == _vehicle("a", 3)["time"]
    assert set(mine.vehicles) == {"a", "c"}
    assert mine.events == [{"n": 1}, {"n": 2}]
    # The shared original is untouched.
    assert set(first.vehicles) == {"a"} and first.events == [{"n": 1}]


@given(st.lists(st.tuples(st.sampled_from("abcde"), st.booleans()), max_size=200))
def test_events_stay_bounded_keeping_the_newest(ops: list[tuple[str, bool]]) -> None:
    changes = Changes(max_events=7)
    for n, (device, with_vehicle) in enumerate(ops):
        vehicle = _vehicle(device, n) if with_vehicle else None
        changes.add(Update(device, vehicle=vehicle, event={"n": n}))
    assert len(changes.events) == min(7, len(ops))
    assert [e["n"] for e in changes.events] == list(range(len(ops)))[-7:]
    assert changes.dropped_events == max(0, len(ops) - 7)
    # Latest wins: each vehicle holds the state of its last update.
    for device in changes.vehicles:
        last = max(n for n, (d, v) in enumerate(ops) if d == device and v)
        assert changes.vehicles[device]["time"] == _vehicle(device, last)["time"]


class OnlyDevice:
    """A filtered view, as a customer channel would have: one device, no name."""

    def __init__(self, device: str) -> None:
        self.device = device

    def vehicle(self, vehicle: Vehicle) -> Vehicle | None:
        if vehicle["id"] != self.device:
            return None
        return {k: v for k, v in vehicle.items() if k != "name"}

    def event(self, event: dict[str, Any]) -> dict[str, Any] | None:
        return event if event.get("device") == self.device else None


def test_views_filter_and_reshape_updates() -> None:
    update = Update("a", vehicle=_vehicle("a", 1), event={"device": "a", "n": 1})
    assert through(FleetView(), update) is update
    seen = through(OnlyDevice("a"), update)
    assert seen is not None and seen.vehicle is not None
    assert "name" not in seen.vehicle and seen.event == {"device": "a", "n": 1}
    assert through(OnlyDevice("b"), update) is None


def test_message_shapes_are_versioned() -> None:
    changes = Changes()
    changes.add(Update("a", vehicle=_vehicle("a", 1)))
    delta = delta_message(T0, changes)
    assert delta == {
        "type": "delta",
        "v": 1,
        "time": T0.isoformat(),
        "vehicles": [_vehicle("a", 1)],
        "events": [],
    }
    snap = snapshot_message(T0, [_vehicle("a", 1)])
    assert snap["type"] == "snapshot" and snap["v"] == 1 and len(snap["vehicles"]) == 1
