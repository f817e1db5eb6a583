"""The hub's metrics follow what it does: clients per channel kind, frames sent, frames
merged for a slow reader, stuck clients dropped (in-memory sinks, this process's registry)."""

from __future__ import annotations

from prometheus_client import REGISTRY

from tests.unit.test_hub_fanout import Clock, MemorySink, make_hub, position, settle
from tracker.live.fleet import POSITIONS
from tracker.live.hub import DISPATCH, channel_kind


def sample(name: str, channel: str) -> float:
    return REGISTRY.get_sample_value(name, {"channel": channel}) or 0.0


def snapshot_of(names: tuple[str, ...], channel: str) -> dict[str, float]:
    return {name: sample(name, channel) for name in names}


NAMES = (
    "tracker_ws_clients",
    "tracker_ws_frames_sent_total",
    "tracker_ws_frames_merged_total",
    "tracker_ws_clients_stuck_total",
)


def test_channels_are_labelled_by_kind_only() -> None:
    assert channel_kind(DISPATCH) == "dispatch"
    assert channel_kind("track:1234") == "track"


async def test_a_slow_and_a_stuck_client_show_in_the_metrics() -> None:
    clock = Clock()
    hub = await make_hub(clock=clock)
    before = snapshot_of(NAMES, "dispatch")
    slow, fast = MemorySink(), MemorySink()
    slow_sub = hub.subscribe(DISPATCH, slow)
    fast_sub = hub.subscribe(DISPATCH, fast)
    await hub.send_snapshot(slow_sub)
    await hub.send_snapshot(fast_sub)
    await settle()
    assert sample("tracker_ws_clients", "dispatch") == before["tracker_ws_clients"] + 2
    slow.gate.clear()
    for n in range(1, 6):
        hub.on_bus(POSITIONS, position("a", n))
        hub.flush()
        await settle()
    clock.now += 10.0
    assert hub.reap() == 1
    after = snapshot_of(NAMES, "dispatch")
    sent = len(fast.frames) + len(slow.frames)
    assert after["tracker_ws_frames_sent_total"] - before["tracker_ws_frames_sent_total"] == sent
    merged = after["tracker_ws_frames_merged_total"] - before["tracker_ws_frames_merged_total"]
    assert merged == slow_sub.frames_merged >= 3
    assert after["tracker_ws_clients_stuck_total"] == before["tracker_ws_clients_stuck_total"] + 1
    assert after["tracker_ws_clients"] == before["tracker_ws_clients"] + 1  # the stuck one left
    hub.unsubscribe(fast_sub)
    hub.unsubscribe(fast_sub)  # idempotent: counted out once
    assert sample("tracker_ws_clients", "dispatch") == before["tracker_ws_clients"]
    await hub.close()


async def test_closing_the_hub_counts_its_clients_out() -> None:
    hub = await make_hub()
    before = sample("tracker_ws_clients", "track")
    subs = [hub.subscribe(f"track:{n}", MemorySink()) for n in range(3)]
    assert sample("tracker_ws_clients", "track") == before + 3
    await hub.close()
    assert sample("tracker_ws_clients", "track") == before
    for sub in subs:
        hub.unsubscribe(sub)  # the endpoints still unsubscribe afterwards
    assert sample("tracker_ws_clients", "track") == before
