"""The ETA corpus benchmark's trips: real bus lines and recorded drives as plans and tests.

A bus line is a folder of the labexp `trazas-transporte-publico` repository (read in place,
never copied: it has no licence): `asistentes/*.gpx` are riders' 1 Hz tracks, the `.csv`
beside each its waypoints, named at stops ("Parada de Bus tipo 1", "parada tipo 3", "1"…).
The line's stops are the clusters of those stop waypoints that many trips share. The plan
is one day's trip (the earliest day): its track is the path, its times at the stops the
planned arrivals (as offsets from the start, applied to each test trip's own start). Every
trip of every other day is a test; a trip's true arrival at a stop is when its track first
came within the stop's radius, stops taken in order.

A single recorded drive (Munich, Delft) has no other day: its stops are where it dwelled,
its path the track itself, its plan a fixed speed (30 km/h plus 60 s per stop).
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from tracker.core import geo
from tracker.core.model import Fix, Stop
from tracker.core.route.eta import PathIndex
from tracker.tools import backtest as bt
from tracker.tools.tracks import read_track

STOP_NAME = re.compile(r"parada|tipo|^\s*[123@]\s*$|estoy en la parada", re.IGNORECASE)
CLUSTER_M = 40.0  # stop waypoints of one stop lie within this of their centre
STOP_RADIUS_M = 30.0  # geofence of a bus stop, and the radius of a true arrival
ON_PATH_M = 40.0  # a stop farther than this from the plan's path is not on this line
PLANNED_SPEED_MPS = 30.0 / 3.6  # a single drive's plan
SERVICE_S = 60.0  # a single drive's planned service per stop
MAX_STRETCH = 3.0  # a test trip taking longer than this many times the plan is left out


@dataclass(frozen=True)
class Trip:
    """One recorded trip: its fixes (time order) and the stop waypoints riders marked."""

    name: str
    fixes: list[Fix]
    waypoints: list[tuple[float, float]]

    @property
    def day(self) -> date:
        return self.fixes[0].time.date()

    @property
    def start(self) -> datetime:
        return self.fixes[0].time


@dataclass(frozen=True)
class Case:
    """A test trip against its plan: what to create through the API and the truth."""

    line: str
    trip: Trip
    planned_start: datetime
    stops: list[Stop]  # ids 1..n in order, planned arrivals set
    path: tuple[tuple[float, float], ...]
    actual: dict[int, float]  # stop seq -> epoch seconds of the true arrival

    @property
    def day(self) -> date:
        return self.trip.day


def _waypoints(csv_path: Path) -> list[tuple[float, float]]:
    if not csv_path.exists():
        return []
    out = []
    with csv_path.open(newline="", encoding="utf-8", errors="replace") as f:
        for row in csv.DictReader(f):
            name = row.get("name") or ""
            try:
                lat, lon = float(row["lat"]), float(row["lon"])
            except (KeyError, TypeError, ValueError):
                continue
            if STOP_NAME.search(name):
                out.append((lat, lon))
    return out


def load_line(folder: Path) -> list[Trip]:
    """Every distinct trip of a line folder (a trip filed twice under two names once)."""
    trips: dict[datetime, Trip] = {}
    for gpx in sorted((folder / "asistentes").glob("*.gpx")):
        try:
            fixes = read_track(gpx)
        except ValueError:
            continue
        if len(fixes) < 300:
            continue  # a few minutes of recording is no trip
        trip = Trip(gpx.stem, fixes, _waypoints(gpx.with_suffix(".csv")))
        trips.setdefault(trip.start, trip)
    return sorted(trips.values(), key=lambda t: t.start)


def cluster_stops(trips: Sequence[Trip], min_share: float = 0.2) -> list[tuple[float, float]]:
    """Stop positions: centres of the waypoint clusters marked on enough distinct trips."""
    points = [(lat, lon, i) for i, t in enumerate(trips) for lat, lon in t.waypoints]
    if not points:
        return []
    proj = geo.LocalProjection.around([(p[0], p[1]) for p in points])
    clusters: list[list[tuple[float, float, int]]] = []
    centres: list[tuple[float, float]] = []
    for lat, lon, i in points:
        x, y = proj.to_xy(lat, lon)
        best, best_d = -1, CLUSTER_M
        for c, (cx, cy) in enumerate(centres):
            d = math.hypot(x - cx, y - cy)
            if d < best_d:
                best, best_d = c, d
        if best < 0:
            clusters.append([(x, y, i)])
            centres.append((x, y))
        else:
            members = clusters[best]
            members.append((x, y, i))
            centres[best] = (
                sum(m[0] for m in members) / len(members),
                sum(m[1] for m in members) / len(members),
            )
    need = max(3, math.ceil(min_share * len(trips)))
    out = []
    for members, (cx, cy) in zip(clusters, centres, strict=True):
        if len({m[2] for m in members}) >= need:
            out.append(proj.to_latlon(cx, cy))
    return out


def _arrivals_in_order(fixes: Sequence[Fix], stops: Sequence[Stop]) -> dict[int, float]:
    return bt.actual_arrivals(list(fixes), list(stops))


def line_cases(folder: Path) -> tuple[list[Case], Trip, int]:
    """The test cases of one bus line, the plan trip, and how many stops the line has."""
    trips = load_line(folder)
    if len(trips) < 2:
        raise ValueError(f"{folder}: fewer than two trips")
    positions = cluster_stops(trips)
    first_day = trips[0].day
    plan_trips = [t for t in trips if t.day == first_day]
    # The plan: the first day's trip that passes most of the line's stops.
    probe = [
        Stop(k + 1, k + 1, lat, lon, radius_m=STOP_RADIUS_M)
        for k, (lat, lon) in enumerate(positions)
    ]

    def reached(t: Trip) -> int:
        proj = geo.LocalProjection.around([(f.lat, f.lon) for f in t.fixes])
        xy = proj.many_to_xy([(f.lat, f.lon) for f in t.fixes])
        n = 0
        for s in probe:
            sx, sy = proj.to_xy(s.lat, s.lon)
            if any(math.hypot(x - sx, y - sy) <= STOP_RADIUS_M for x, y in xy):
                n += 1
        return n

    plan_trip = max(plan_trips, key=reached)
    path = bt.path_from_track(plan_trip.fixes)
    proj = geo.LocalProjection.around(list(path) + positions)
    index = PathIndex(proj.line(path))
    placed = []
    for lat, lon in positions:
        x, y = proj.to_xy(lat, lon)
        loc = index.locate(x, y, (0.0, index.length_m), (0.0, index.length_m))
        if loc.offset_m <= ON_PATH_M:
            placed.append((loc.along_m, lat, lon))
    placed.sort()
    stops = [
        Stop(k + 1, k + 1, lat, lon, name=f"stop {k + 1}", radius_m=STOP_RADIUS_M)
        for k, (_, lat, lon) in enumerate(placed)
    ]
    along = [a for a, _, _ in placed]
    # Planned offsets: the plan trip's own arrivals; a stop it did not reach is
    # interpolated along the path between its neighbours.
    start = plan_trip.start.timestamp()
    seen = _arrivals_in_order(plan_trip.fixes, stops)
    known = [(0.0, 0.0)] + [(along[s.seq - 1], seen[s.id] - start) for s in stops if s.id in seen]
    offsets = []
    for a in along:
        lo = max((k for k in known if k[0] <= a), key=lambda k: k[0])
        hi = min((k for k in known if k[0] >= a), key=lambda k: k[0], default=None)
        if hi is None or hi[0] == lo[0]:
            speed = known[-1][0] / known[-1][1] if known[-1][1] > 0 else PLANNED_SPEED_MPS
            offsets.append(lo[1] + (a - lo[0]) / speed)
        else:
            offsets.append(lo[1] + (hi[1] - lo[1]) * (a - lo[0]) / (hi[0] - lo[0]))
    cases = []
    for t in trips:
        if t.day == first_day:
            continue
        planned = [
            replace(s, planned_arrival=t.start + timedelta(seconds=o))
            for s, o in zip(stops, offsets, strict=True)
        ]
        actual = _arrivals_in_order(t.fixes, planned)
        if actual and max(actual.values()) - t.start.timestamp() > MAX_STRETCH * offsets[-1]:
            continue  # a recording left running for hours is no single trip
        cases.append(Case(folder.name, t, t.start, planned, path, actual))
    return cases, plan_trip, len(stops)


def drive_case(name: str, path_to_track: Path) -> Case:
    """A single recorded drive: stops where it dwelled, a fixed-speed plan."""
    fixes = read_track(path_to_track)
    stops, actual = bt.detect_stops(fixes, service_s=SERVICE_S)
    path = bt.path_from_track(fixes)
    proj = geo.LocalProjection.around(list(path))
    index = PathIndex(proj.line(path))
    along = index.locate_in_order(proj.many_to_xy([(s.lat, s.lon) for s in stops]), 25.0)
    start = fixes[0].time
    planned = []
    for k, (s, a) in enumerate(zip(stops, along, strict=True)):
        offset = a / PLANNED_SPEED_MPS + SERVICE_S * k
        planned.append(replace(s, planned_arrival=start + timedelta(seconds=offset)))
    trip = Trip(name, fixes, [])
    return Case(name, trip, start, planned, path, {s.seq: actual[s.id] for s in stops})


def as_utc(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(epoch_s, UTC)
