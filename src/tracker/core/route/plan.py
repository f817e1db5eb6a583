"""A route's plan: everything about it that does not change between fixes, computed once."""

from __future__ import annotations

import math

import shapely

from tracker.core.geo import LocalProjection
from tracker.core.model import Route, Stop
from tracker.core.route import history as hist
from tracker.core.route.config import EtaConfig
from tracker.core.route.eta import PathIndex, Profile, Trust


class RoutePlan:
    """Everything about a route that does not change between fixes, computed once."""

    __slots__ = (
        "_trust",
        "along_m",
        "index",
        "learned",
        "max_radius_m",
        "max_reach_m",
        "opens_s",
        "planned_average_mps",
        "planned_m",
        "planned_speed_mps",
        "position",
        "profile",
        "projection",
        "radius_m",
        "reach_m",
        "route",
        "seqs",
        "service_s",
        "stop_ids",
        "straight_line",
        "xy",
    )

    def __init__(self, route: Route, history: hist.Snapshot | None = None) -> None:
        """`history`: travel times learned near the route's path (see `history`); the
        plan's timing is then the learned one, shrunk toward the route's own."""
        if not route.stops:
            raise ValueError("a route needs at least one stop")
        if len(route.path) < 2:
            raise ValueError("a route needs a path of at least two points")
        stops = sorted(route.stops, key=lambda s: s.seq)
        ids = [s.id for s in stops]
        if len(set(ids)) != len(ids):
            raise ValueError("stop ids must be unique within a route")
        self.route = route
        self.projection = LocalProjection.around(list(route.path) + [(s.lat, s.lon) for s in stops])
        self.index = PathIndex(self.projection.line(route.path))
        self.xy = tuple(self.projection.many_to_xy([(s.lat, s.lon) for s in stops]))
        self.along_m = tuple(self.index.locate_in_order(self.xy, tolerance_m=25.0))
        self.radius_m = tuple(s.radius_m for s in stops)
        # A stop set back from the path (a yard, a depot) is reached by leaving the path:
        # within this distance of the stop a vehicle is on its way in or out, not astray.
        offsets = shapely.distance(self.index.line, shapely.points(list(self.xy)))
        self.reach_m = tuple(max(r, float(d)) for r, d in zip(self.radius_m, offsets, strict=True))
        self.max_reach_m = max(self.reach_m)
        self.stop_ids = tuple(ids)
        self.seqs = tuple(s.seq for s in stops)
        self.max_radius_m = max(self.radius_m)
        self.service_s = tuple(max(0.0, s.service_s) for s in stops)
        self.opens_s = tuple(
            s.window_start.timestamp() if s.window_start is not None else None for s in stops
        )
        self.position = {sid: k for k, sid in enumerate(ids)}
        self.straight_line = route.straight_line
        self.planned_speed_mps, self.planned_average_mps = self._planned_speeds(stops)
        self.profile = Profile(self._knots(stops))
        self.learned = False
        if history and not self.straight_line:
            self._learn(history)
        self.planned_m = tuple(self.profile.planned_m(a) for a in self.along_m)
        self._trust: tuple[EtaConfig, Trust] | None = None

    def _learn(self, history: hist.Snapshot) -> None:
        """Replace the plan's timing along the path by the learned one, where there is any."""
        line = self.index.line
        length = self.index.length_m
        n = max(1, math.ceil(length / hist.PIECE_M))
        default = EtaConfig().planned_speed_mps
        speed = self.planned_speed_mps or default
        pieces = []
        plan_s = []
        for i in range(1, n + 1):
            a0, a1 = length * (i - 1) / n, length * i / n
            p0, p1, mid = (
                line.interpolate(a0),
                line.interpolate(a1),
                line.interpolate(0.5 * (a0 + a1)),
            )
            lat0, lon0 = self.projection.to_latlon(p0.x, p0.y)
            lat1, lon1 = self.projection.to_latlon(p1.x, p1.y)
            lat, lon = self.projection.to_latlon(mid.x, mid.y)
            pieces.append((a1, lat, lon, hist.heading_of(lat0, lon0, lat1, lon1)))
            plan_s.append(self.profile.planned_m(a1) / speed)
        knots = hist.profile_knots(pieces, plan_s, self.route.planned_start.timestamp(), history)
        if knots is None:
            return
        self.learned = True
        self.profile = Profile(knots)
        end = self.along_m[-1] if self.along_m[-1] > 0.0 else length
        driving = self.profile.planned_m(end) * (knots[-1][1] / knots[-1][0])
        if driving > 0.0:
            self.planned_speed_mps = end / driving
            self.planned_average_mps = end / (driving + sum(self.service_s[:-1]))

    def _planned_speeds(self, stops: list[Stop]) -> tuple[float | None, float | None]:
        """The speeds the plan assumed, from the last stop with a planned arrival: driving
        (service times taken out) and average (service included), both m/s along the path."""
        start = self.route.planned_start.timestamp()
        for k in range(len(stops) - 1, -1, -1):
            planned = stops[k].planned_arrival
            if planned is None:
                continue
            total = planned.timestamp() - start
            driving = total - sum(self.service_s[:k])
            if driving > 0.0 and self.along_m[k] > 0.0:
                return self.along_m[k] / driving, self.along_m[k] / total
            return None, None
        return None, None

    def _knots(self, stops: list[Stop]) -> list[tuple[float, float]]:
        """(metres along, planned driving seconds) at each stop with a planned arrival.

        A planned arrival at the opening of the stop's window may include waiting for it,
        which is no driving: such a stop does not shape the profile.
        """
        if self.planned_speed_mps is None:
            return []
        start = self.route.planned_start.timestamp()
        knots = []
        for k, stop in enumerate(stops):
            planned = stop.planned_arrival
            if planned is None:
                continue
            opens = stop.window_start
            if opens is not None and planned <= opens:
                continue
            knots.append((self.along_m[k], planned.timestamp() - start - sum(self.service_s[:k])))
        return knots

    def prior_speed(self, cfg: EtaConfig) -> float:
        """The planned driving speed along this route's path (m/s)."""
        if self.planned_speed_mps is not None:
            return self.planned_speed_mps
        # A straight-line path is shorter than the roads, so progress along it is slower.
        v = cfg.planned_speed_mps
        return v / cfg.detour_factor if self.straight_line else v

    def trust(self, cfg: EtaConfig) -> Trust:
        """How far this route's plan is believed: a schedule knows the roads, a default
        speed does not (cached for the last config, which is the one in use)."""
        cached = self._trust
        if cached is not None and cached[0] is cfg:
            return cached[1]
        scheduled = self.planned_speed_mps is not None
        trust = Trust.of(
            cfg.schedule_error if scheduled else cfg.default_error,
            cfg.road_spread,
            cfg.traffic_spread,
            cfg.stretch_s,
            knows_roads=scheduled,
        )
        self._trust = (cfg, trust)
        return trust

    def average_speed(self, cfg: EtaConfig) -> float:
        """The route's average planned speed, stops included (m/s): what a naive ETA uses.

        Path length over planned duration: the last planned arrival when the stops carry
        times, else driving the path at the prior speed plus every stop's service time, so
        a naive ETA sees the same plan (speed and service) as ours.
        """
        if self.planned_average_mps is not None:
            return self.planned_average_mps
        length = self.along_m[-1]
        if length <= 0.0:
            return self.prior_speed(cfg)
        return length / (length / self.prior_speed(cfg) + sum(self.service_s[:-1]))
