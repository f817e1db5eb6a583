"""Travel times and paths between planned points: on the road network when one is loaded,
else on straight lines (and then every answer says so).

One object per set of points: `Travel.measure(points)` snaps them to the network and asks
pgRouting for the matrix once; its `paths` are the road paths of routes through those
points (the planned path of a dispatched route), made of the same edges as the matrix's
times, so a plan's arrivals and the path the ETAs follow agree.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg
import numpy as np

from tracker.planning import matrix
from tracker.planning.matrix import TravelModel
from tracker.store import roads as road_store
from tracker.store.roads import Snap

Point = tuple[float, float]  # (lat, lon)


@dataclass(frozen=True, slots=True)
class RoutePath:
    """A route's path through some of the points: (lat, lon) points and metres per leg."""

    points: tuple[Point, ...]
    leg_m: tuple[float, ...]

    @property
    def length_m(self) -> float:
        return sum(self.leg_m)


@dataclass(frozen=True, slots=True)
class Measured:
    """Points and the whole-second matrix between them."""

    points: tuple[Point, ...]
    seconds: np.ndarray
    roads: bool
    snaps: tuple[Snap, ...] | None  # per point, with roads

    def subset(self, indices: Sequence[int]) -> Measured:
        """The same measurements for some of the points, in the order given."""
        idx = np.asarray(indices, dtype=int)
        return Measured(
            tuple(self.points[k] for k in indices),
            self.seconds[np.ix_(idx, idx)],
            self.roads,
            None if self.snaps is None else tuple(self.snaps[k] for k in indices),
        )


class Travel:
    """Measures travel for the planner (one per service; stateless between calls)."""

    def __init__(self, pool: asyncpg.Pool, model: TravelModel) -> None:
        self._pool = pool
        self.model = model

    async def roads_loaded(self) -> bool:
        """Whether a road network is imported."""
        return await road_store.network(self._pool) is not None

    async def measure(self, points: Sequence[Point]) -> Measured:
        """The matrix between `points`: by road when roads are loaded, else straight lines."""
        pts = tuple(points)
        if not await self.roads_loaded():
            return Measured(pts, matrix.straight_seconds(pts, self.model), False, None)
        async with self._pool.acquire() as conn:
            snaps = await road_store.snap(conn, pts)
            vertices = [s.vertex for s in snaps]
            vertex_s = await road_store.cost_matrix(conn, vertices)
        seconds = matrix.road_seconds(
            vertex_s, [s.access_m for s in snaps], pts, vertices, self.model
        )
        return Measured(pts, seconds, True, tuple(snaps))

    async def paths(self, measured: Measured, routes: Sequence[Sequence[int]]) -> list[RoutePath]:
        """The path through each sequence of point indices, with each leg's metres."""
        if not measured.roads or measured.snaps is None:
            return [self._straight(measured.points, seq) for seq in routes]
        snaps = measured.snaps
        pairs = [
            (snaps[a].vertex, snaps[b].vertex) for seq in routes for a, b in itertools.pairwise(seq)
        ]
        async with self._pool.acquire() as conn:
            legs = await road_store.legs(conn, pairs)
        out: list[RoutePath] = []
        for seq in routes:
            points: list[Point] = []
            leg_m: list[float] = []
            for a, b in itertools.pairwise(seq):
                pa, pb = measured.points[a], measured.points[b]
                leg = legs.get((snaps[a].vertex, snaps[b].vertex))
                if leg is None or snaps[a].vertex == snaps[b].vertex:
                    # No road between them (or one vertex for both): straight across.
                    piece: list[Point] = [pa, pb]
                    metres = matrix.straight_metres(pa, pb, TravelModel(detour=1.0))
                else:
                    piece = [pa, *leg.points, pb]
                    metres = leg.length_m + snaps[a].access_m + snaps[b].access_m
                for p in piece:
                    if not points or points[-1] != p:
                        points.append(p)
                leg_m.append(metres)
            if len(seq) == 1:
                points = [measured.points[seq[0]]]
            out.append(RoutePath(tuple(points), tuple(leg_m)))
        return out

    def _straight(self, points: Sequence[Point], seq: Sequence[int]) -> RoutePath:
        path: list[Point] = []
        for k in seq:
            if not path or path[-1] != points[k]:
                path.append(points[k])
        legs = tuple(
            matrix.straight_metres(points[a], points[b], self.model)
            for a, b in itertools.pairwise(seq)
        )
        return RoutePath(tuple(path), legs)
