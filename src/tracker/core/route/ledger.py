"""What a fix's update publishes: every stop's status, ETA and distance to drive."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from tracker.core.model import JsonDict, StopStatus
from tracker.core.route.interval import Spread
from tracker.core.route.state import StopState


@dataclass(frozen=True, slots=True)
class StopEta:
    """A stop's status and expected arrival (None once done) with the distance to go, and
    the 80 % interval of that arrival (`eta_earliest`, `eta_latest`; None without an ETA)."""

    stop_id: int
    seq: int
    status: str
    eta: datetime | None
    distance_m: float | None
    eta_earliest: datetime | None = None
    eta_latest: datetime | None = None


class Ledger(NamedTuple):
    """The raw material of a Progress's StopEta list (epoch seconds, seq order)."""

    ids: tuple[int, ...]
    seqs: tuple[int, ...]
    position: dict[int, int]
    stops: tuple[StopState, ...]
    etas: list[float | None]
    dists: list[float | None]
    now_s: float = 0.0
    spread: Spread | None = None

    def all(self) -> tuple[StopEta, ...]:
        return tuple(self.one(k) for k in range(len(self.ids)))

    def one(self, k: int) -> StopEta:
        st = self.stops[k]
        e = self.etas[k]
        if e is not None:
            if self.spread is None:
                return StopEta(self.ids[k], self.seqs[k], st.status, utc(e), self.dists[k])
            lo, hi = self.spread.bounds(self.now_s, e)
            return StopEta(
                self.ids[k], self.seqs[k], st.status, utc(e), self.dists[k], utc(lo), utc(hi)
            )
        if st.status == StopStatus.ARRIVED and st.arrived_s is not None:
            return StopEta(self.ids[k], self.seqs[k], st.status, utc(st.arrived_s), 0.0)
        return StopEta(self.ids[k], self.seqs[k], st.status, None, None)


class Progress:
    """Where a route stands as of one fix: the update to publish.

    `etas` holds one StopEta per stop in sequence order: for a pending stop its ETA and
    the distance to drive, for a stop being served its arrival time, for a done stop
    None. The list is built on first access (a hundred datetimes cost more than the ETA
    update itself); `eta_for` builds just one stop's, e.g. for a customer's page.
    """

    __slots__ = (
        "_built",
        "_ledger",
        "next_stop_id",
        "off_route",
        "progress_m",
        "remaining_m",
        "speed_mps",
        "straight_line",
        "time",
    )

    def __init__(
        self,
        time: datetime,
        progress_m: float,
        remaining_m: float,
        off_route: bool,
        straight_line: bool,
        speed_mps: float,
        next_stop_id: int | None,
        etas: tuple[StopEta, ...] | Ledger,
    ) -> None:
        self.time = time
        self.progress_m = progress_m
        self.remaining_m = remaining_m
        self.off_route = off_route
        self.straight_line = straight_line
        self.speed_mps = speed_mps
        self.next_stop_id = next_stop_id
        self._built: tuple[StopEta, ...] | None = None
        self._ledger: Ledger | None = None
        if isinstance(etas, Ledger):
            self._ledger = etas
        else:
            self._built = tuple(etas)

    @property
    def etas(self) -> tuple[StopEta, ...]:
        """Every stop's status and ETA, in sequence order."""
        if self._built is None:
            assert self._ledger is not None
            self._built = self._ledger.all()
        return self._built

    def eta_for(self, stop_id: int) -> StopEta | None:
        """One stop's entry (None for a stop not on the route), without building the rest."""
        if self._ledger is None:
            return next((e for e in self.etas if e.stop_id == stop_id), None)
        k = self._ledger.position.get(stop_id)
        return None if k is None else self._ledger.one(k)

    def to_json(self) -> JsonDict:
        """JSON-ready dict: times as ISO-8601 strings, distances in metres."""
        return {
            "time": self.time.isoformat(),
            "progress_m": round(self.progress_m, 1),
            "remaining_m": round(self.remaining_m, 1),
            "off_route": self.off_route,
            "straight_line": self.straight_line,
            "speed_mps": round(self.speed_mps, 2),
            "next_stop_id": self.next_stop_id,
            "etas": [
                {
                    "stop_id": e.stop_id,
                    "seq": e.seq,
                    "status": e.status,
                    "eta": None if e.eta is None else e.eta.isoformat(),
                    "eta_earliest": None if e.eta_earliest is None else e.eta_earliest.isoformat(),
                    "eta_latest": None if e.eta_latest is None else e.eta_latest.isoformat(),
                    "distance_m": None if e.distance_m is None else round(e.distance_m, 1),
                }
                for e in self.etas
            ],
        }

    def _key(self) -> tuple[object, ...]:
        return (
            self.time,
            self.progress_m,
            self.remaining_m,
            self.off_route,
            self.straight_line,
            self.speed_mps,
            self.next_stop_id,
            self.etas,
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Progress) and self._key() == other._key()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"Progress(time={self.time.isoformat()}, progress_m={self.progress_m:.1f}, "
            f"remaining_m={self.remaining_m:.1f}, off_route={self.off_route}, "
            f"straight_line={self.straight_line}, speed_mps={self.speed_mps:.2f}, "
            f"next_stop_id={self.next_stop_id}, etas=<{len(self.etas)} stops>)"
        )


def utc(epoch_s: float, _at: Any = datetime.fromtimestamp) -> datetime:
    return _at(epoch_s, UTC)  # type: ignore[no-any-return]
