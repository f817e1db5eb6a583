"""Planned paths in the forms clients send: GeoJSON LineString or Google encoded polyline.

A path is a tuple of (lat, lon). When a route comes without one, its stops joined in order
stand in for it and the route says its distances are straight-line estimates. A path with
more points than a route needs (a router's full geometry, or a hostile million points) is
simplified to a bounded number of them (`simplified`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import polyline
import shapely

from tracker.core.model import Stop

Path = tuple[tuple[float, float], ...]


class PathError(ValueError):
    """The planned path is malformed; the message says how."""


def _checked(lat: Any, lon: Any, kind: str, index: int) -> tuple[float, float]:
    # `kind` and `index` name the point in an error only: formatting that text for each of
    # a million points cost more than checking them.
    if isinstance(lat, bool) or isinstance(lon, bool):
        raise PathError(f"{kind} {index}: coordinates must be numbers")
    if not isinstance(lat, int | float) or not isinstance(lon, int | float):
        raise PathError(f"{kind} {index}: coordinates must be numbers")
    la, lo = float(lat), float(lon)
    if not (math.isfinite(la) and math.isfinite(lo)):
        raise PathError(f"{kind} {index}: coordinates must be finite")
    if not (-90.0 <= la <= 90.0 and -180.0 <= lo <= 180.0):
        raise PathError(f"{kind} {index}: ({la}, {lo}) is outside WGS84 lat/lon ranges")
    return la, lo


def _enough(path: Path) -> Path:
    # Not len(set(path)): hashing a million points at once holds the GIL for a second.
    if not path or all(p == path[0] for p in path):
        raise PathError("a path needs at least two distinct points")
    return path


def from_geojson(value: Mapping[str, Any] | str) -> Path:
    """A GeoJSON LineString (bare or as a Feature's geometry); positions are [lon, lat]."""
    obj: Any = value
    if isinstance(value, str):
        try:
            obj = json.loads(value)
        except json.JSONDecodeError as exc:
            raise PathError(f"path is not valid JSON: {exc.msg}") from exc
    if not isinstance(obj, Mapping):
        raise PathError("GeoJSON path must be an object")
    if obj.get("type") == "Feature":
        obj = obj.get("geometry")
        if not isinstance(obj, Mapping):
            raise PathError("GeoJSON Feature has no geometry")
    if obj.get("type") != "LineString":
        raise PathError(f"GeoJSON path must be a LineString, not {obj.get('type')!r}")
    coords = obj.get("coordinates")
    if not isinstance(coords, list):
        raise PathError("GeoJSON LineString needs a coordinates array")
    out: list[tuple[float, float]] = []
    for i, pos in enumerate(coords):
        if not isinstance(pos, list | tuple) or len(pos) < 2:
            raise PathError(f"position {i}: expected [lon, lat]")
        out.append(_checked(pos[1], pos[0], "position", i))
    return _enough(tuple(out))


def from_polyline(text: str, precision: int = 5) -> Path:
    """A Google encoded polyline (precision 5 by default, 6 for OSRM/Valhalla `polyline6`)."""
    if not isinstance(text, str) or not text.strip():
        raise PathError("encoded polyline must be a non-empty string")
    try:
        pairs = polyline.decode(text.strip(), precision)
    except (ValueError, IndexError, TypeError) as exc:
        raise PathError("encoded polyline could not be decoded") from exc
    out = tuple(_checked(lat, lon, "point", i) for i, (lat, lon) in enumerate(pairs))
    return _enough(out)


# Metres per degree, for a tolerance in metres; the equirectangular approximation is plenty
# for choosing which points to keep.
_M_PER_DEG_LAT = 110_574.0
_M_PER_DEG_LON_EQUATOR = 111_320.0
_FIRST_TOLERANCE_M = 0.5
# Douglas-Peucker takes time quadratic in its input at worst (a zig-zag), so it never sees
# more than this many points at once...
_SECTION = 256
# ...nor a path more than this many times over the limit (evenly thinned first).
_OVERSAMPLED = 4


def simplified(path: Path, max_points: int) -> Path:
    """`path` with at most `max_points` points (at least 2), the CPU it takes bounded.

    Douglas-Peucker (shapely), the tolerance doubling from half a metre until few enough
    points are left, on sections of the path whose ends are kept, after evenly thinning a
    path of more than four times `max_points` points. The points kept are the path's own,
    exactly: each carries its index through the simplification (as its z). A path within
    the limit comes back unchanged.
    """
    if len(path) <= max_points:
        return path
    step = -(-len(path) // (_OVERSAMPLED * max_points))
    picked = list(range(0, len(path), step))
    if picked[-1] != len(path) - 1:
        picked.append(len(path) - 1)
    lats = [path[k][0] for k in picked]
    kx = _M_PER_DEG_LON_EQUATOR * math.cos(math.radians((min(lats) + max(lats)) / 2.0))
    xyk = [(path[k][1] * kx, path[k][0] * _M_PER_DEG_LAT, float(k)) for k in picked]
    # Consecutive sections share their end points; few enough that those alone fit.
    size = max(_SECTION, -(-len(xyk) // max(1, max_points // 2)) + 1)
    sections = [xyk[i : i + size] for i in range(0, len(xyk) - 1, size - 1)]
    lines: list[Any] = [shapely.LineString(section) for section in sections]
    tolerance = _FIRST_TOLERANCE_M
    while len(kept := _joined(lines, sections)) > max_points:
        lines = list(shapely.simplify(lines, tolerance, preserve_topology=False))
        tolerance *= 2.0
    out = tuple(path[k] for k in kept)
    if all(p == out[0] for p in out):
        # A closed loop can collapse onto its start; evenly spaced points still follow it.
        out = path[:: -(-len(path) // max_points)]
    return out


def _joined(lines: list[Any], sections: list[list[tuple[float, float, float]]]) -> list[int]:
    """The path indexes the sections' lines still hold, in order, shared ends once."""
    kept: list[int] = []
    for line, section in zip(lines, sections, strict=True):
        zs = shapely.get_coordinates(line, include_z=True)[:, 2].tolist()
        if len(zs) < 2:  # a section of one point repeated simplifies to nothing
            zs = [section[0][2], section[-1][2]]
        kept.extend(int(z) for z in (zs[1:] if kept else zs))
    return kept


def to_polyline(path: Sequence[tuple[float, float]], precision: int = 5) -> str:
    """The path as a Google encoded polyline (for compact API replies)."""
    text: str = polyline.encode(list(path), precision)
    return text


def from_stops(stops: Sequence[Stop]) -> Path:
    """The stops joined in sequence order: the stand-in path for a route without one."""
    ordered = sorted(stops, key=lambda s: s.seq)
    pts = tuple(_checked(s.lat, s.lon, "stop", s.id) for s in ordered)
    if len(pts) == 1:
        # One stop still needs a line to measure progress on; a zero-length line is not one.
        raise PathError("a route with one stop and no path has nothing to measure along")
    return _enough(pts)


def decode(value: Mapping[str, Any] | str, precision: int = 5) -> Path:
    """A path in either accepted form: GeoJSON (object or JSON text) or encoded polyline."""
    if isinstance(value, Mapping):
        return from_geojson(value)
    if isinstance(value, str) and value.lstrip().startswith("{"):
        return from_geojson(value)
    if isinstance(value, str):
        return from_polyline(value, precision)
    raise PathError("path must be a GeoJSON LineString or an encoded polyline string")


def route_path(
    stops: Sequence[Stop], value: Mapping[str, Any] | str | None, precision: int = 5
) -> tuple[Path, bool]:
    """The planned path for a route and whether it is the straight-line stand-in."""
    if value is None:
        return from_stops(stops), True
    return decode(value, precision), False
