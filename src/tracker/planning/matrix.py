"""Travel-time matrices the solver plans with: from the road network, or straight lines.

With roads, each point is snapped to its nearest vertex of the network and the matrix is
the network's vertex-to-vertex time (pgRouting) plus the short way from the point to its
vertex and from the other vertex to the other point, at `access_speed_mps`. Without roads,
it is the geodesic distance times a detour factor at a default speed: a rough stand-in the
plan says it used.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pyproj import Geod

_GEOD = Geod(ellps="WGS84")

# Seconds for a pair with no road between them: long enough that no time window or shift
# admits it, small enough that sums of a few of them stay far from integer overflow.
UNREACHABLE_S = 7 * 86_400


@dataclass(frozen=True, slots=True)
class TravelModel:
    """How travel is costed when there is no road, and off the road network's vertices."""

    speed_mps: float = 30.0 / 3.6  # straight lines (the ETA's own default planned speed)
    detour: float = 1.3  # straight line -> road distance
    access_speed_mps: float = 15.0 / 3.6  # from a point to the network's nearest vertex

    def __post_init__(self) -> None:
        if not (self.speed_mps > 0 and self.access_speed_mps > 0 and self.detour >= 1):
            raise ValueError("speeds must be positive and the detour factor at least 1")


def geodesic_m(a: Sequence[tuple[float, float]], b: Sequence[tuple[float, float]]) -> np.ndarray:
    """Metres from every (lat, lon) of `a` (rows) to every one of `b` (columns)."""
    if not a or not b:
        return np.zeros((len(a), len(b)))
    lat_a = np.repeat([p[0] for p in a], len(b))
    lon_a = np.repeat([p[1] for p in a], len(b))
    lat_b = np.tile([p[0] for p in b], len(a))
    lon_b = np.tile([p[1] for p in b], len(a))
    _, _, dist = _GEOD.inv(lon_a, lat_a, lon_b, lat_b)
    out: np.ndarray = np.asarray(dist, dtype=float).reshape(len(a), len(b))
    return out


def straight_seconds(points: Sequence[tuple[float, float]], model: TravelModel) -> np.ndarray:
    """Whole seconds between every pair of points on straight lines (× detour)."""
    metres = geodesic_m(points, points) * model.detour
    return np.rint(metres / model.speed_mps).astype(np.int64)


def straight_metres(a: tuple[float, float], b: tuple[float, float], model: TravelModel) -> float:
    """Metres of one straight-line leg (× detour)."""
    return float(geodesic_m([a], [b])[0, 0]) * model.detour


def road_seconds(
    vertex_s: np.ndarray,
    access_m: Sequence[float],
    points: Sequence[tuple[float, float]],
    vertices: Sequence[int],
    model: TravelModel,
) -> np.ndarray:
    """Point-to-point whole seconds from a vertex matrix (`vertex_s[i, j]`: point i's vertex
    to point j's) plus each end's access; two points on one vertex go straight across."""
    access = np.asarray(access_m, dtype=float) / model.access_speed_mps
    total = vertex_s + access[:, None] + access[None, :]
    same = np.equal.outer(np.asarray(vertices), np.asarray(vertices))
    np.fill_diagonal(same, False)
    rows, cols = np.nonzero(same)
    if len(rows):
        # Only the pairs that share a vertex go straight across (few: measure just those).
        lat = np.array([p[0] for p in points])
        lon = np.array([p[1] for p in points])
        _, _, dist = _GEOD.inv(lon[rows], lat[rows], lon[cols], lat[cols])
        total[rows, cols] = np.asarray(dist, dtype=float) / model.access_speed_mps
    total = np.where(np.isfinite(total), total, UNREACHABLE_S)
    np.fill_diagonal(total, 0.0)
    return np.minimum(np.rint(total), UNREACHABLE_S).astype(np.int64)
