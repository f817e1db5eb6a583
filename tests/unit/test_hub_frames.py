"""Frames of the live hub stay under the frame limit: a snapshot in parts, a delta as several
deltas, the content and its order unchanged."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

from tracker.live.fleet import Changes, Update, delta_message, snapshot_message
from tracker.live.hub import encode, frames

NOW = datetime(2026, 12, 4, 8, 0, tzinfo=UTC)


def vehicle(k: int, name_len: int = 200) -> dict[str, object]:
    name = ("Zustellfahrzeug Süd " * 20)[:name_len]
    return {"id": f"v{k}", "name": name, "time": NOW.isoformat(), "lat": 48.1, "lon": 11.5}


def test_a_small_snapshot_is_one_frame_as_before() -> None:
    message = snapshot_message(NOW, [vehicle(k) for k in range(3)])
    [text] = frames(message, encode, 64 * 1024)
    assert orjson.loads(text) == message


def test_a_large_snapshot_comes_in_ordered_parts_under_the_limit() -> None:
    vehicles = [vehicle(k, name_len=k % 300) for k in range(2000)]
    texts = frames(snapshot_message(NOW, vehicles), encode, 16 * 1024)
    assert len(texts) > 10
    assert all(len(t.encode()) <= 16 * 1024 for t in texts)  # bytes, names are not ASCII
    parts = [orjson.loads(t) for t in texts]
    assert [p["part"] for p in parts] == list(range(len(parts)))
    assert [p["final"] for p in parts] == [False] * (len(parts) - 1) + [True]
    assert [v for p in parts for v in p["vehicles"]] == vehicles
    assert {p["time"] for p in parts} == {NOW.isoformat()}


def test_a_large_delta_is_several_deltas_vehicles_first_then_events_in_order() -> None:
    changes = Changes(max_events=5000)
    for k in range(300):
        changes.add(Update(f"v{k}", vehicle=vehicle(k)))
    for k in range(300):
        changes.add(Update(f"v{k}", event={"type": "stop.eta_changed", "n": k}))
    message = delta_message(NOW, changes)
    texts = frames(message, encode, 8 * 1024)
    deltas = [orjson.loads(t) for t in texts]
    assert all(len(t.encode()) <= 8 * 1024 for t in texts)
    assert all(d["type"] == "delta" and "part" not in d for d in deltas)
    assert [v for d in deltas for v in d["vehicles"]] == message["vehicles"]
    assert [e for d in deltas for e in d["events"]] == message["events"]
    # No vehicle comes after an event: a client applying them in turn sees the same order.
    kinds = [kind for d in deltas for kind in ["v"] * len(d["vehicles"]) + ["e"] * len(d["events"])]
    assert kinds == sorted(kinds, reverse=True)


def test_one_vehicle_larger_than_the_limit_travels_alone() -> None:
    huge = vehicle(0) | {"route": {"stops": ["x" * 500] * 100}}
    texts = frames(snapshot_message(NOW, [vehicle(1), huge, vehicle(2)]), encode, 4096)
    parts = [orjson.loads(t) for t in texts]
    assert [len(p["vehicles"]) for p in parts if p["vehicles"][0]["id"] == "v0"] == [1]
    assert [v["id"] for p in parts for v in p["vehicles"]] == ["v1", "v0", "v2"]


def test_an_encoder_writing_more_than_plain_json_is_still_bounded() -> None:
    def roomy(message: dict[str, object]) -> str:
        return orjson.dumps(message, option=orjson.OPT_INDENT_2).decode()

    vehicles = [vehicle(k) for k in range(300)]
    texts = frames(snapshot_message(NOW, vehicles), roomy, 8 * 1024)
    assert all(len(t.encode()) <= 8 * 1024 for t in texts)
    assert [v for t in texts for v in orjson.loads(t)["vehicles"]] == vehicles
