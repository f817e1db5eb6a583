"""A dispatch WebSocket client that stops reading, under sustained load: the server's memory
stays bounded (the hub folds what that client misses into one pending state per vehicle,
and the transport buffers at most one frame past its high-water mark), a normal client
keeps receiving every vehicle's latest position, and the stuck one is dropped after
TRACKER_WS_STUCK_S."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import select
import socket
import time
from datetime import UTC, datetime, timedelta

import orjson
from websockets.asyncio.client import ClientConnection, connect

from tests.conftest import ADMIN_TOKEN
from tests.faults.conftest import HOST, HttpConnection, Phone, TrackerProcess, record
from tracker.store.db import create_pool
from tracker.store.devices import add_device

DEVICES = 500
CONNECTIONS = 12  # posting connections, each cycling through its share of the devices
BATCH = 4  # pings per request (one device per request)
# Paced, so the load (and the allocator's churn under it) does not depend on how fast this
# machine's server is: every vehicle still changes in every tick, so each frame is full.
PINGS_PER_S = 4000
WARMUP_S = 3.0
STUCK_WINDOW_S = 10.0
STUCK_S = 7.0  # kept (folded) for most of the window, dropped near its end
# Long display names make every frame large (~3.6 kB per vehicle), so that queueing frames
# for the stuck client instead of folding them would show plainly in the server's memory.
# ASCII on purpose: megabyte frames with non-ASCII text make the allocator's footprint
# creep for a minute or more before it levels off (~45 MB higher), which would drown the
# stuck client's share in noise.
NAME = "Van {:03d} - North depot, tour {:03d} - driver shift early - " + "x" * 3500
# What the server may grow by while one client is stuck, over its RSS after warm-up under
# the same load. What the stuck client costs is bounded by the fleet, not by time: its
# folded pending state (one entry per vehicle, sharing the vehicles' dicts), one catch-up
# frame (500 vehicles x 3.6 kB ~ 1.8 MB, as text and as bytes) and the transport's buffer
# (64 kB high-water mark + that frame): ~6 MB. Without a stuck client the same load keeps
# the process within ~3 MB of its warm-up size. A server queueing every frame for the
# stuck client would hold what the normal client received meanwhile: 30-60 MB in this
# window (unbounded_queue_estimate_kib), so the bound tells the two apart.
RSS_BOUND_KIB = 16 * 1024


class Watcher:
    """A normal dispatch client: reads everything, remembers each vehicle's latest fix time."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.latest: dict[str, datetime] = {}
        self.frames = 0
        self.bytes = 0
        self.arrivals: list[tuple[float, int]] = []  # (when, bytes) per frame
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for text in self.ws:
            self.frames += 1
            self.bytes += len(text)
            self.arrivals.append((time.monotonic(), len(text)))
            for vehicle in orjson.loads(text).get("vehicles", ()):
                self.latest[vehicle["id"]] = datetime.fromisoformat(vehicle["time"])

    def frames_between(self, start: float, end: float) -> tuple[int, int, int]:
        """(frames, their bytes, longest gap between frames in ms) in a time window."""
        inside = [(t, n) for t, n in self.arrivals if start <= t <= end]
        edges = [start, *(t for t, _ in inside), end]
        gap = max(b - a for a, b in itertools.pairwise(edges))
        return len(inside), sum(n for _, n in inside), round(gap * 1000)


async def drive(phones: list[Phone], stop: asyncio.Event) -> None:
    """Post batches for `phones` in turn over one connection until `stop` is set."""
    conn = await HttpConnection.open(HOST, phones[0].port)
    for phone in phones:
        phone.use(conn)
    interval = CONNECTIONS * BATCH / PINGS_PER_S
    next_at = time.monotonic()
    try:
        while not stop.is_set():
            for phone in phones:
                if stop.is_set():
                    break
                await phone.post(phone.next_pings(BATCH))
                next_at += interval
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    finally:
        conn.close()


def drain_stuck(sock: socket.socket, quiet_s: float = 3.0) -> tuple[str, int]:
    """The stuck client finally reads: what was still on its way (in the kernels' buffers,
    not the server's memory), and then whether the server had closed ("closed"/"reset") or
    still holds the connection ("open")."""
    sock.setblocking(False)
    received = 0
    while True:
        ready, _, _ = select.select([sock], [], [], quiet_s)
        if not ready:
            return "open", received
        try:
            data = sock.recv(1 << 20)
        except ConnectionResetError:
            return "reset", received
        if not data:
            return "closed", received
        received += len(data)


async def test_stuck_websocket_client_is_bounded_and_others_unaffected(
    database_url: str, tracker_processes: list[TrackerProcess]
) -> None:
    from tests.faults.conftest import stuck_websocket

    server = TrackerProcess(database_url, workers=1, TRACKER_WS_STUCK_S=str(STUCK_S))
    tracker_processes.append(server)
    await server.start()
    pool = await create_pool(database_url, 4)
    try:
        devices = [await add_device(pool, NAME.format(i, i % 37)) for i in range(DEVICES)]
    finally:
        await pool.close()
    start = datetime.now(UTC) - timedelta(hours=1)
    phones = [Phone(d.unique_id, t, HOST, server.port, start=start) for d, t in devices]

    samples: list[tuple[float, int]] = []
    disconnected_at: float | None = None

    async def sample() -> None:
        nonlocal disconnected_at
        while True:
            samples.append((time.monotonic(), server.rss_kib()))
            if disconnected_at is None and "stuck for over" in server.log():
                disconnected_at = time.monotonic()
            await asyncio.sleep(0.2)

    good = Watcher(await connect(f"{server.ws_url}/ws/dispatch?token={ADMIN_TOKEN}", max_size=None))
    stop = asyncio.Event()
    load = [asyncio.create_task(drive(phones[i::CONNECTIONS], stop)) for i in range(CONNECTIONS)]
    sampler = asyncio.create_task(sample())
    stuck: socket.socket | None = None
    try:
        await asyncio.sleep(WARMUP_S)
        baseline_kib = server.rss_kib()
        sent_before = sum(len(p.sent) for p in phones)
        stuck = await asyncio.to_thread(
            stuck_websocket, HOST, server.port, f"/ws/dispatch?token={ADMIN_TOKEN}"
        )
        stuck_at = time.monotonic()
        await asyncio.sleep(STUCK_WINDOW_S)
        end_at = time.monotonic()
        sent_in_window = sum(len(p.sent) for p in phones) - sent_before
    finally:
        stop.set()
        await asyncio.gather(*load)
    try:
        # The normal client ends up with every vehicle's last acknowledged fix.
        final = {p.unique_id: p.acked[-1].time for p in phones if p.acked}
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(
            good.latest.get(uid) != t for uid, t in final.items()
        ):
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)
        after_kib = server.rss_kib()
        merged = await server.metric("tracker_ws_frames_merged_total", channel="dispatch")
        dropped = await server.metric("tracker_ws_clients_stuck_total", channel="dispatch")
        open_clients = await server.metric("tracker_ws_clients", channel="dispatch")
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
        await good.ws.close()
        good.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await good.task
    assert stuck is not None
    stuck_state, stuck_drained = await asyncio.to_thread(drain_stuck, stuck)
    stuck.close()

    window = [kib for t, kib in samples if stuck_at <= t <= end_at]
    frames, window_bytes, longest_gap_ms = good.frames_between(stuck_at, end_at)
    shown_final = sum(1 for uid, t in final.items() if good.latest.get(uid) == t)
    answers: dict[str, int] = {}
    for p in phones:
        for k, v in p.answers.items():
            answers[k] = answers.get(k, 0) + v
    numbers = {
        "devices": DEVICES,
        "stuck_s_setting": STUCK_S,
        "pings_per_s_in_window": round(sent_in_window / (end_at - stuck_at)),
        "answers": answers,
        "rss_baseline_kib": baseline_kib,
        "rss_peak_kib": max(window),
        "rss_growth_kib": max(window) - baseline_kib,
        "rss_bound_kib": RSS_BOUND_KIB,
        # What queueing every frame for the stuck client would have held instead.
        "unbounded_queue_estimate_kib": window_bytes // 1024,
        "rss_after_kib": after_kib,
        "good_client_frames_total": good.frames,
        "good_client_frames_in_window": frames,
        "good_client_longest_gap_ms": longest_gap_ms,
        "good_client_kib_in_window": window_bytes // 1024,
        "good_client_shows_final_fix": shown_final,
        "stuck_client": "disconnected" if stuck_state != "open" else "kept",
        # From /metrics: frames folded instead of sent (while it was kept), clients dropped.
        "frames_merged": int(merged),
        "clients_dropped_as_stuck": int(dropped),
        "dispatch_clients_open_at_end": int(open_clients),
        # From the server's log line, when it has one.
        "stuck_client_disconnected_after_s": (
            None if disconnected_at is None else round(disconnected_at - stuck_at, 1)
        ),
        "stuck_socket_state_at_end": stuck_state,
        "stuck_socket_kib_drained_at_end": stuck_drained // 1024,
    }
    record("stuck_websocket", numbers)

    assert set(answers) == {"202"}, answers
    # Memory stays bounded while the client is stuck and folded into one pending state.
    assert max(window) - baseline_kib < RSS_BOUND_KIB
    # The normal client is unaffected: frames all along, and every vehicle's final fix.
    assert longest_gap_ms < STUCK_S * 1000
    assert shown_final == len(final) == DEVICES
    # While kept, what it missed was folded, not queued ...
    assert merged > 0
    # ... and it was dropped after TRACKER_WS_STUCK_S, not kept forever: once it reads
    # again it gets what the kernels still held, then the end of the connection.
    assert dropped == 1
    assert open_clients == 1
    assert stuck_state in ("reset", "closed")
