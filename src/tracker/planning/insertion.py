"""Re-planning a live route: the arrival chain of a sequence of stops, and where one more
stop goes at least cost.

A live route is its vehicle's position now and the stops still to serve, in order. The
chain drives the legs of a travel-time matrix, starts service no earlier than a stop's
window opens, and adds the service time. Inserting a stop tries every gap of every
candidate route: the cheapest is the one that adds the least time to its route, among
those that serve the new stop within its window and make no other stop later than its
window allows (beyond any lateness it already had).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Visit:
    """A stop to serve: its point in the matrix, service seconds, window (solver seconds)."""

    key: int  # the caller's id for it (a stop id, or an order id)
    point: int
    service_s: float
    window: tuple[float, float] | None


@dataclass(frozen=True, slots=True)
class LiveChain:
    """A route still to drive: from `start_point` at `start_s` through `visits`."""

    key: int  # the route id
    start_point: int
    start_s: float
    visits: tuple[Visit, ...]


@dataclass(frozen=True, slots=True)
class Timing:
    """When each visit starts service and how late it is (seconds past its window)."""

    starts: tuple[float, ...]
    lateness: tuple[float, ...]
    end_s: float


@dataclass(frozen=True, slots=True)
class Insertion:
    """Where a visit goes: route key, index in its visits, and what it costs."""

    route: int
    index: int
    added_s: float
    timing: Timing


def timing(
    seconds: np.ndarray, start_point: int, start_s: float, visits: Sequence[Visit]
) -> Timing:
    """The arrival chain of `visits` driven in order from `start_point` at `start_s`."""
    t = start_s
    at = start_point
    starts: list[float] = []
    late: list[float] = []
    for v in visits:
        t += float(seconds[at, v.point])
        if v.window is not None:
            t = max(t, v.window[0])
            late.append(max(0.0, t - v.window[1]))
        else:
            late.append(0.0)
        starts.append(t)
        t += v.service_s
        at = v.point
    return Timing(tuple(starts), tuple(late), t)


def best_insertion(
    seconds: np.ndarray, chains: Sequence[LiveChain], new: Visit, feasible_only: bool = True
) -> Insertion | None:
    """The cheapest place for `new` among `chains`; None when none is feasible (or, with
    `feasible_only` false, the cheapest by added lateness and then time)."""
    best: tuple[tuple[float, float], Insertion] | None = None
    for chain in chains:
        before = timing(seconds, chain.start_point, chain.start_s, chain.visits)
        for k in range(len(chain.visits) + 1):
            visits = (*chain.visits[:k], new, *chain.visits[k:])
            after = timing(seconds, chain.start_point, chain.start_s, visits)
            added_late = sum(after.lateness) - sum(before.lateness)
            feasible = after.lateness[k] == 0.0 and added_late <= 1e-6
            if feasible_only and not feasible:
                continue
            added = after.end_s - before.end_s
            score = (0.0 if feasible else max(0.0, added_late), added)
            if best is None or score < best[0]:
                best = (score, Insertion(chain.key, k, added, after))
    return None if best is None else best[1]
