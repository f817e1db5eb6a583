"""The geocoding service with an in-memory queue and geocoder: cache before asking, the
pace between requests (a fake clock), backing off on failures, and another instance's turn."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from typing import Any

from tests.nominatim import place
from tracker.planning.geocode import Verdict
from tracker.planning.model import Candidate, Order
from tracker.services.geocoding import GeocoderUnavailable, GeocodingService

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def pending(order_id: int, address: str) -> Order:
    return Order(
        order_id, None, "delivery", None, None, address, "", "", "", (), 0.0, {}, (), 0, "",
        date(2030, 1, 1), "unplanned", "pending", (), None, None, T0, T0,
    )  # fmt: skip


@dataclass
class FakeQueue:
    orders: list[Order]
    cache: dict[tuple[str, str], list[Candidate]] = field(default_factory=dict)
    verdicts: dict[int, Verdict] = field(default_factory=dict)
    busy: bool = False  # another instance holds the queue

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[FakeQueue | None]:
        yield None if self.busy else self

    async def pending(self, limit: int) -> list[Order]:
        return [o for o in self.orders if o.id not in self.verdicts][:limit]

    async def cached(self, endpoint: str, query: str) -> list[Candidate] | None:
        return self.cache.get((endpoint, query))

    async def remember(
        self, endpoint: str, query: str, found: Sequence[Candidate], now: datetime
    ) -> None:
        self.cache[(endpoint, query)] = list(found)

    async def settle(self, order: Order, verdict: Verdict) -> None:
        self.verdicts[order.id] = verdict


@dataclass
class FakeGeocoder:
    answers: dict[str, list[dict[str, Any]]]
    url: str = "http://geo.test/search"
    asked: list[tuple[str, float]] = field(default_factory=list)
    failures: int = 0
    retry_after_s: float = 0.0
    clock: FakeClock | None = None

    async def search(self, query: str) -> Any:
        self.asked.append((query, self.clock.now if self.clock else 0.0))
        if self.failures:
            self.failures -= 1
            raise GeocoderUnavailable("HTTP 503", self.retry_after_s)
        return self.answers.get(query, [])

    async def close(self) -> None:
        pass


@dataclass
class FakeClock:
    now: float = 100.0
    slept: list[float] = field(default_factory=list)

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def service(queue: FakeQueue, geocoder: FakeGeocoder, clock: FakeClock) -> GeocodingService:
    geocoder.clock = clock
    return GeocodingService(queue, geocoder, 1.0, clock=clock, sleep=clock.sleep, now=lambda: T0)


ANSWERS = {
    "Plaça del Poble 1": [place(42.5063, 1.5218, "Plaça del Poble 1")],
    "Carrer Major 3": [place(42.54, 1.58, "Encamp"), place(42.46, 1.49, "Sant Julià")],
}


async def test_each_distinct_address_is_asked_once_one_second_apart() -> None:
    queue = FakeQueue(
        [
            pending(1, "Plaça del Poble 1"),
            pending(2, "Carrer Major 3"),
            pending(3, "PLAÇA DEL POBLE 1 "),
            pending(4, "Nowhere 9"),
        ]
    )
    clock = FakeClock()
    geocoder = FakeGeocoder(ANSWERS)
    svc = service(queue, geocoder, clock)
    assert await svc.work() == 4
    assert [q for q, _ in geocoder.asked] == ["Plaça del Poble 1", "Carrer Major 3", "Nowhere 9"]
    times = [t for _, t in geocoder.asked]
    assert [b - a for a, b in itertools.pairwise(times)] == [1.0, 1.0]
    assert times[0] == 101.0  # a turn starts with one interval's pause (see the service)
    statuses = {i: v.status for i, v in queue.verdicts.items()}
    assert statuses == {1: "resolved", 2: "ambiguous", 3: "resolved", 4: "unresolved"}
    assert (queue.verdicts[3].lat, queue.verdicts[3].lon) == (42.5063, 1.5218)


async def test_a_failing_geocoder_leaves_orders_pending_and_backs_off() -> None:
    queue = FakeQueue([pending(1, "Plaça del Poble 1")])
    clock = FakeClock()
    geocoder = FakeGeocoder(ANSWERS, failures=3)
    svc = service(queue, geocoder, clock)
    delays = []
    for _ in range(3):
        assert await svc.work() == 0
        delays.append(svc.backoff_s)
    assert queue.verdicts == {}
    assert delays == [1.0, 2.0, 4.0]
    assert await svc.work() == 1
    assert svc.backoff_s == 0.0
    assert queue.verdicts[1].status == "resolved"


async def test_a_reply_that_is_not_a_place_list_is_a_failure_not_a_verdict() -> None:
    queue = FakeQueue([pending(1, "x")])
    geocoder = FakeGeocoder({"x": {"error": "Unable to geocode"}})  # type: ignore[dict-item]
    svc = service(queue, geocoder, FakeClock())
    assert await svc.work() == 0
    assert queue.verdicts == {} and queue.cache == {}


async def test_another_instance_has_the_queue() -> None:
    queue = FakeQueue([pending(1, "Plaça del Poble 1")], busy=True)
    geocoder = FakeGeocoder(ANSWERS)
    assert await service(queue, geocoder, FakeClock()).work() == 0
    assert geocoder.asked == []
    queue = replace(queue, busy=False)
    assert await service(queue, geocoder, FakeClock()).work() == 1


async def test_retry_after_is_honoured() -> None:
    queue = FakeQueue([pending(1, "Plaça del Poble 1")])
    geocoder = FakeGeocoder(ANSWERS, failures=1, retry_after_s=30.0)
    svc = service(queue, geocoder, FakeClock())
    assert await svc.work() == 0
    assert svc.backoff_s == 30.0
