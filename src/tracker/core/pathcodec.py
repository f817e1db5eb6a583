"""Planned paths in the forms clients send: GeoJSON LineString or Google encoded polyline.

A path is a tuple of (lat, lon). When a route comes without one, its stops joined in order
stand in for it and the route says its distances are straight-line estimates.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import polyline

from tracker.core.model import Stop

Path = tuple[tuple[float, float], ...]


class PathError(ValueError):
    """The planned path is malformed; the message says how."""


def _checked(lat: Any, lon: Any, where: str) -> tuple[float, float]:
    if isinstance(lat, bool) or isinstance(lon, bool):
        raise PathError(f"{where}: coordinates must be numbers")
    if not isinstance(lat, int | float) or not isinstance(lon, int | float):
        raise PathError(f"{where}: coordinates must be numbers")
    la, lo = float(lat), float(lon)
    if not (math.isfinite(la) and math.isfinite(lo)):
        raise PathError(f"{where}: coordinates must be finite")
    if not (-90.0 <= la <= 90.0 and -180.0 <= lo <= 180.0):
        raise PathError(f"{where}: ({la}, {lo}) is outside WGS84 lat/lon ranges")
    return la, lo


def _enough(path: Path) -> Path:
    if len(set(path)) < 2:
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
        out.append(_checked(pos[1], pos[0], f"position {i}"))
    return _enough(tuple(out))


def from_polyline(text: str, precision: int = 5) -> Path:
    """A Google encoded polyline (precision 5 by default, 6 for OSRM/Valhalla `polyline6`)."""
    if not isinstance(text, str) or not text.strip():
        raise PathError("encoded polyline must be a non-empty string")
    try:
        pairs = polyline.decode(text.strip(), precision)
    except (ValueError, IndexError, TypeError) as exc:
        raise PathError("encoded polyline could not be decoded") from exc
    out = tuple(_checked(lat, lon, f"point {i}") for i, (lat, lon) in enumerate(pairs))
    return _enough(out)


def to_polyline(path: Sequence[tuple[float, float]], precision: int = 5) -> str:
    """The path as a Google encoded polyline (for compact API replies)."""
    text: str = polyline.encode(list(path), precision)
    return text


def from_stops(stops: Sequence[Stop]) -> Path:
    """The stops joined in sequence order: the stand-in path for a route without one."""
    ordered = sorted(stops, key=lambda s: s.seq)
    pts = tuple(_checked(s.lat, s.lon, f"stop {s.id}") for s in ordered)
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
