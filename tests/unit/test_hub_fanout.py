"""The hub's fan-out logic with in-memory sinks: one encode per channel per tick, shared by
the clients keeping up; a blocked client gets one merged catch-up frame; stuck ones go."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from tracker.live.fleet import POSITIONS, ROUTES, Vehicle
from tracker.live.hub import DISPATCH, Hub

T0 = datetime(2024, 5, 6, 8, 0, tzinfo=UTC)


class MemorySink:
    """Records frames; `gate` cleared makes its writes hang like a client not reading."""

    def __init__(self) -> None:
        self.frames: list[str] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.aborted = False

    async def send(self, text: str) -> None:
        await self.gate.wait()
        self.frames.append(text)

    def abort(self) -> None:
        self.aborted = True

    def messages(self) -> list[dict[str, Any]]:
        return [orjson.loads(f) for f in self.frames]


def position(device: str, seconds: float) -> dict[str, Any]:
    return {
        "type": "position",
        "device": device,
        "name": device,
        "time": (T0 + timedelta(seconds=seconds)).isoformat(),
        "lat": 52.0 + seconds / 1000,
        "lon": 4.0,
        "speed": None,
        "course": None,
        "accuracy": None,
    }


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def make_hub(loaded: list[Vehicle] | None = None, clock: Clock | None = None) -> Hub:
    async def load() -> list[Vehicle]:
        return list(loaded or [])

    return Hub(load, tick_s=0.05, stuck_s=5.0, clock=clock or Clock())


async def test_nothing_before_the_snapshot_then_deltas() -> None:
    hub = await make_hub()
    sink = MemorySink()
    sub = hub.subscribe(DISPATCH, sink)
    hub.on_bus(POSITIONS, position("a", 0))
    hub.flush()
    await settle()
    assert sink.frames == []  # no delta may precede the snapshot
    await hub.send_snapshot(sub)
    await settle()
    hub.on_bus(POSITIONS, position("a", 1))
    hub.flush()
    await settle()
    kinds = [m["type"] for m in sink.messages()]
    assert kinds == ["snapshot", "delta"]
    snapshot, delta = sink.messages()
    # The position that arrived before the snapshot is in it, not sent as a stale delta.
    assert [v["id"] for v in snapshot["vehicles"]] == ["a"]
    assert delta["vehicles"][0]["time"] == position("a", 1)["time"]
    await hub.close()


async def test_one_encode_per_tick_shared_by_every_client_keeping_up() -> None:
    hub = await make_hub()
    sinks = [MemorySink() for _ in range(5)]
    subs = [hub.subscribe(DISPATCH, s) for s in sinks]
    for sub in subs:
        await hub.send_snapshot(sub)
    await settle()
    for n in range(3):
        hub.on_bus(POSITIONS, position("a", n + 1))
        hub.on_bus(POSITIONS, position("b", n + 1))
        hub.flush()
        await settle()
    for sink in sinks:
        assert len(sink.frames) == 1 + 3
    for i in range(1, 4):
        # The very same str object: encoded once, shared.
        assert all(s.frames[i] is sinks[0].frames[i] for s in sinks)
    await hub.close()


async def test_a_blocked_client_gets_one_fresher_frame_and_never_delays_others() -> None:
    hub = await make_hub()
    slow, fast = MemorySink(), MemorySink()
    slow_sub = hub.subscribe(DISPATCH, slow)
    fast_sub = hub.subscribe(DISPATCH, fast)
    await hub.send_snapshot(slow_sub)
    await hub.send_snapshot(fast_sub)
    await settle()
    slow.gate.clear()  # the slow client stops reading
    for n in range(1, 11):
        hub.on_bus(POSITIONS, position("a", n))
        hub.on_bus(POSITIONS, position(f"v{n}", n))
        hub.flush()
        await settle()
    assert len(fast.frames) == 1 + 10  # every tick, on time
    assert len(slow.frames) == 1  # only the snapshot got through
    assert slow_sub.busy_since is not None
    assert slow_sub.frames_merged >= 8
    slow.gate.set()
    await settle()
    # One frame was in flight when it blocked, then one merged catch-up frame.
    assert len(slow.frames) == 1 + 2
    catch_up = slow.messages()[-1]
    ids = [v["id"] for v in catch_up["vehicles"]]
    assert ids.count("a") == 1  # coalesced: one entry per vehicle, the latest state
    latest_a = next(v for v in catch_up["vehicles"] if v["id"] == "a")
    assert latest_a["time"] == position("a", 10)["time"]
    assert {f"v{n}" for n in range(2, 11)} <= set(ids)
    await hub.close()


async def test_a_client_stuck_past_the_limit_is_dropped() -> None:
    clock = Clock()
    hub = await make_hub(clock=clock)
    stuck, ok = MemorySink(), MemorySink()
    stuck_sub = hub.subscribe(DISPATCH, stuck)
    ok_sub = hub.subscribe(DISPATCH, ok)
    await hub.send_snapshot(stuck_sub)
    await hub.send_snapshot(ok_sub)
    await settle()
    stuck.gate.clear()
    hub.on_bus(POSITIONS, position("a", 1))
    hub.flush()
    await settle()
    clock.now += 4.0
    assert hub.reap() == 0  # slow but within the limit
    clock.now += 2.0
    assert hub.reap() == 1
    assert stuck.aborted and stuck_sub.closed
    assert hub.stats()["subscribers"] == 1 and hub.stats()["closed_stuck"] == 1
    hub.on_bus(POSITIONS, position("a", 2))
    hub.flush()
    await settle()
    assert len(ok.frames) == 3
    await hub.close()


async def test_resync_drops_waiting_vehicle_changes_but_keeps_events() -> None:
    hub = await make_hub(loaded=[])
    sink = MemorySink()
    sub = hub.subscribe(DISPATCH, sink)
    await hub.send_snapshot(sub)
    await settle()
    sink.gate.clear()
    hub.on_bus(POSITIONS, position("a", 1))
    hub.flush()
    await settle()  # this frame is now in flight, blocked
    hub.on_bus(POSITIONS, position("a", 2))
    hub.on_bus("events", {"type": "event", "device": "a", "event": {"type": "arrived"}})
    hub.flush()
    await hub.send_snapshot(sub)
    sink.gate.set()
    await settle()
    kinds = [m["type"] for m in sink.messages()]
    assert kinds == ["snapshot", "delta", "snapshot", "delta"]
    last_snapshot, tail = sink.messages()[2:]
    assert last_snapshot["vehicles"][0]["time"] == position("a", 2)["time"]
    assert tail["vehicles"] == [] and tail["events"] == [{"type": "arrived", "device": "a"}]
    await hub.close()


async def test_bus_resume_resends_snapshots_from_a_fresh_load() -> None:
    loaded: list[Vehicle] = []
    hub = await make_hub(loaded=loaded)
    sink = MemorySink()
    sub = hub.subscribe(DISPATCH, sink)
    await hub.send_snapshot(sub)
    await settle()
    # Something was committed while the bus was down: only the database knows it.
    loaded.append(
        {
            "id": "missed",
            "name": "missed",
            "time": T0.isoformat(),
            "lat": 1.0,
            "lon": 2.0,
            "speed": None,
            "course": None,
            "accuracy": None,
            "route": None,
        }
    )
    hub.on_bus_resumed()
    for _ in range(20):
        await settle()
    snapshots = [m for m in sink.messages() if m["type"] == "snapshot"]
    assert len(snapshots) == 2
    assert [v["id"] for v in snapshots[1]["vehicles"]] == ["missed"]
    await hub.close()


async def test_route_messages_reach_clients_merged_into_the_vehicle() -> None:
    hub = await make_hub()
    sink = MemorySink()
    sub = hub.subscribe(DISPATCH, sink)
    await hub.send_snapshot(sub)
    hub.on_bus(POSITIONS, position("a", 1))
    hub.flush()
    await settle()
    hub.on_bus(ROUTES, {"type": "route", "device": "a", "eta": "08:30"})
    hub.flush()
    await settle()
    last = sink.messages()[-1]
    assert last["vehicles"][0]["route"] == {"eta": "08:30"}
    assert last["vehicles"][0]["lat"] == position("a", 1)["lat"]
    await hub.close()


async def test_the_tick_loop_sends_at_most_one_frame_per_tick() -> None:
    hub = Hub(_empty, tick_s=0.1, stuck_s=5.0)
    sink = MemorySink()
    sub = hub.subscribe(DISPATCH, sink)
    await hub.send_snapshot(sub)
    loop_task = asyncio.create_task(hub.run())
    start = asyncio.get_running_loop().time()
    n = 0
    while asyncio.get_running_loop().time() - start < 0.55:
        n += 1
        hub.on_bus(POSITIONS, position("a", n))
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.15)
    loop_task.cancel()
    deltas = [m for m in sink.messages() if m["type"] == "delta"]
    assert n > 50
    # ~0.55 s of changes at 0.1 s ticks: about 6 frames (the first goes out at once).
    assert 4 <= len(deltas) <= 8
    assert deltas[-1]["vehicles"][0]["time"] == position("a", n)["time"]
    await hub.close()


async def _empty() -> list[Vehicle]:
    return []
