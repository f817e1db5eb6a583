"""The ingest service with in-memory fakes: the jump filter judges every device against
the same reference on every instance, and stored fixes go on to the route work."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from tracker.core import messages
from tracker.core.filters import FilterConfig
from tracker.core.model import Fix, RejectCode
from tracker.live.bus import LocalBus
from tracker.protocols.base import Decoded
from tracker.services.ingest import IngestService
from tracker.store.devices import Device
from tracker.store.writer import PositionRow, WriteResult

NOW = datetime(2026, 3, 2, 9, tzinfo=UTC)
VAN = Device(7, "van-7", "Van 7", True)
CFG = FilterConfig(max_future_s=60.0, max_speed_mps=70.0)


class FakeWriter:
    """Stores rows in a dict keyed like `positions` (device, fix time)."""

    def __init__(self) -> None:
        self.rows: dict[tuple[int, datetime], PositionRow] = {}
        self.last: dict[int, datetime] = {}

    async def write(self, rows: Sequence[PositionRow]) -> WriteResult:
        stored, advanced = [], []
        for row in rows:
            key = (row[0], row[1])
            stored.append(key not in self.rows)
            self.rows.setdefault(key, row)
            newer = row[1] > self.last.get(row[0], datetime.min.replace(tzinfo=UTC))
            if newer:
                self.last[row[0]] = row[1]
            advanced.append(newer)
        return WriteResult(stored, advanced)


class FakeRoutes:
    def __init__(self) -> None:
        self.due: list[tuple[str, list[datetime]]] = []

    def notify(self, device_id: int, device: str, fixes: list[Fix]) -> None:
        self.due.append((device, [f.time for f in fixes]))


def ping(seconds: float, lon: float) -> Fix:
    return Fix(VAN.id, NOW - timedelta(seconds=seconds), 48.137, lon, speed=10.0)


def decoded(*fixes: Fix) -> Decoded:
    return Decoded(fixes=list(enumerate(fixes)))


def service(bus: LocalBus, stored: Fix | None = None) -> tuple[IngestService, FakeRoutes]:
    loads: list[int] = []

    async def reference(device_id: int) -> Fix | None:
        loads.append(device_id)
        return stored

    routes = FakeRoutes()
    ingest = IngestService(FakeWriter(), bus, CFG, reference, routes)
    bus.subscribe(ingest.on_bus)
    return ingest, routes


async def test_the_reference_is_the_stored_last_position_for_a_device_new_here() -> None:
    # The device's last stored position is far east: a ping 20 km west of it 10 s later
    # is a jump, even though this process has never seen the device.
    ingest, _ = service(LocalBus(), stored=ping(30.0, 11.80))
    result = await ingest.ingest(VAN, decoded(ping(20.0, 11.53)), NOW)
    assert [r.code for r in result.rejects] == [RejectCode.IMPLAUSIBLE_JUMP]


async def test_another_instances_position_moves_this_instances_reference() -> None:
    bus = LocalBus()
    ingest, _ = service(bus)
    assert (await ingest.ingest(VAN, decoded(ping(60.0, 11.56)), NOW)).stored == 1
    # Another worker stored a newer fix 25 km east; its message reaches this one.
    other = ping(30.0, 11.90)
    bus.deliver(messages.POSITIONS, messages.position(VAN.unique_id, VAN.name, other))
    # 10 s after it, back near the first place: judged against the other worker's fix.
    result = await ingest.ingest(VAN, decoded(ping(20.0, 11.561)), NOW)
    assert [r.code for r in result.rejects] == [RejectCode.IMPLAUSIBLE_JUMP]
    # An older position message changes nothing.
    bus.deliver(messages.POSITIONS, messages.position(VAN.unique_id, VAN.name, ping(50.0, 11.56)))
    result = await ingest.ingest(VAN, decoded(ping(15.0, 11.901)), NOW)
    assert result.stored == 1 and not result.rejects


async def test_stored_fixes_go_to_the_route_work_in_time_order_and_duplicates_do_not() -> None:
    ingest, routes = service(LocalBus())
    late, early = ping(10.0, 11.5601), ping(20.0, 11.56)
    result = await ingest.ingest(VAN, decoded(late, early), NOW)
    assert result.stored == 2
    again = await ingest.ingest(VAN, decoded(late), NOW)
    assert again.stored == 0 and again.duplicates == 1
    assert routes.due == [(VAN.unique_id, [early.time, late.time])]
