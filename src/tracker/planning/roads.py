"""OpenStreetMap ways as a drivable road graph: which ways a van may use, in which
direction, how fast, cut into edges between junctions.

Pure: the OSM reader (`tracker.tools.roads`, pyosmium) feeds ways in, the store loads the
edges into PostGIS for pgRouting. Speeds follow the usual router convention (OSRM's car
profile does the same): a tagged `maxspeed` times 0.8, since a limit is not an average
(junctions, turns, traffic), else a typical speed for the road class.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from pyproj import Geod

_GEOD = Geod(ellps="WGS84")

# Typical driving speeds by `highway` class, km/h, when no maxspeed is tagged.
CLASS_SPEEDS_KMH: Mapping[str, float] = {
    "motorway": 90.0,
    "motorway_link": 45.0,
    "trunk": 80.0,
    "trunk_link": 40.0,
    "primary": 60.0,
    "primary_link": 30.0,
    "secondary": 50.0,
    "secondary_link": 25.0,
    "tertiary": 40.0,
    "tertiary_link": 20.0,
    "unclassified": 25.0,
    "residential": 25.0,
    "road": 25.0,
    "living_street": 10.0,
    "service": 15.0,
}
MAXSPEED_FACTOR = 0.8
MIN_SPEED_KMH = 5.0
_MPH = 1.609344

_NO = frozenset({"no", "private", "agricultural", "forestry", "emergency", "military"})
_YES = frozenset({"yes", "true", "1"})
_NUMBER = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(mph|km/h|kmh|kph)?\s*$")

FORWARD = 1
BACKWARD = -1
BOTH = 0


@dataclass(frozen=True, slots=True)
class Way:
    """An OSM way with the tags that matter and its nodes as (osm id, lat, lon)."""

    id: int
    tags: Mapping[str, str]
    nodes: Sequence[tuple[int, float, float]]


@dataclass(frozen=True, slots=True)
class Edge:
    """A stretch of one way between two junctions (or ends), in the way's direction."""

    way_id: int
    source: int  # OSM node ids
    target: int
    road_class: str
    name: str
    speed_kmh: float
    direction: int  # BOTH, FORWARD (source -> target only) or BACKWARD
    length_m: float
    coords: tuple[tuple[float, float], ...]  # (lon, lat), source to target

    @property
    def cost_s(self) -> float:
        """Seconds source -> target, or -1 when that direction is closed."""
        return -1.0 if self.direction == BACKWARD else self._seconds()

    @property
    def reverse_cost_s(self) -> float:
        """Seconds target -> source, or -1 when that direction is closed."""
        return -1.0 if self.direction == FORWARD else self._seconds()

    def _seconds(self) -> float:
        return self.length_m / (self.speed_kmh / 3.6)


def drivable(tags: Mapping[str, str]) -> bool:
    """Whether a delivery van may drive this way (public roads, delivery access included)."""
    highway = tags.get("highway")
    if highway not in CLASS_SPEEDS_KMH:
        return False
    if tags.get("area") == "yes" or tags.get("oneway") in ("reversible", "alternating"):
        return False
    for key in ("motor_vehicle", "motorcar", "vehicle"):
        value = tags.get(key)
        if value is not None:
            return value not in _NO
    return tags.get("access", "yes") not in _NO


def direction(tags: Mapping[str, str]) -> int:
    """BOTH, FORWARD or BACKWARD from `oneway`, roundabouts and motorways (oneway by rule)."""
    oneway = tags.get("oneway", "")
    if oneway in _YES:
        return FORWARD
    if oneway in ("-1", "reverse"):
        return BACKWARD
    if oneway == "no":
        return BOTH
    if tags.get("junction") in ("roundabout", "circular"):
        return FORWARD
    if tags.get("highway") in ("motorway", "motorway_link"):
        return FORWARD
    return BOTH


def maxspeed_kmh(value: str | None) -> float | None:
    """A numeric `maxspeed` in km/h ("50", "30 mph"); None for none, "walk", "DE:urban"..."""
    if not value:
        return None
    match = _NUMBER.match(value.split(";")[0])
    if match is None:
        return None
    speed = float(match.group(1))
    if match.group(2) == "mph":
        speed *= _MPH
    return speed if speed > 0 else None


def speed_kmh(tags: Mapping[str, str]) -> float:
    """The driving speed for a drivable way: 0.8 × maxspeed when tagged, else by class."""
    tagged = maxspeed_kmh(tags.get("maxspeed"))
    if tagged is not None:
        return max(MIN_SPEED_KMH, tagged * MAXSPEED_FACTOR)
    return CLASS_SPEEDS_KMH[tags["highway"]]


def length_m(coords: Sequence[tuple[float, float]]) -> float:
    """Geodesic length of (lon, lat) points."""
    if len(coords) < 2:
        return 0.0
    return float(_GEOD.line_length([c[0] for c in coords], [c[1] for c in coords]))


def junctions(ways: Iterable[Way]) -> set[int]:
    """Nodes where the graph branches: shared by two ways (or twice by one), or a way's end."""
    seen: set[int] = set()
    cut: set[int] = set()
    for way in ways:
        if len(way.nodes) < 2:
            continue
        cut.add(way.nodes[0][0])
        cut.add(way.nodes[-1][0])
        for node, _, _ in way.nodes:
            if node in seen:
                cut.add(node)
            seen.add(node)
    return cut


def split(way: Way, cut: set[int]) -> Iterator[Edge]:
    """The way's edges: cut at every junction node, in the way's own direction."""
    road_class = way.tags["highway"]
    name = way.tags.get("name", "")
    speed = speed_kmh(way.tags)
    heading = direction(way.tags)
    start = 0
    nodes = way.nodes
    for k in range(1, len(nodes)):
        if nodes[k][0] not in cut and k != len(nodes) - 1:
            continue
        coords = tuple((lon, lat) for _, lat, lon in nodes[start : k + 1])
        if nodes[start][0] != nodes[k][0] or len(coords) > 2:
            yield Edge(
                way_id=way.id,
                source=nodes[start][0],
                target=nodes[k][0],
                road_class=road_class,
                name=name,
                speed_kmh=speed,
                direction=heading,
                length_m=length_m(coords),
                coords=coords,
            )
        start = k


def edges(ways: Sequence[Way]) -> list[Edge]:
    """Every drivable way (already filtered with `drivable`) cut into edges at junctions."""
    cut = junctions(ways)
    return [edge for way in ways for edge in split(way, cut)]
