"""The thresholds of route progress, motion and ETA publication (one config for every route)."""

from __future__ import annotations

from dataclasses import dataclass, field

from tracker.core.route.interval import Spread

# EtaConfig.auto_complete: departure records a visit, or departure completes the stop.
AUTO_COMPLETE = ("visited", "departure")


@dataclass(frozen=True, slots=True)
class EtaConfig:
    """Thresholds for progress, motion and ETA publication (one config for every route)."""

    planned_speed_mps: float = 30.0 / 3.6  # used when the route's stops carry no planned times
    # Recent speed (the last couple of minutes) holds for the next minutes of driving, its
    # weight fading over `near_s` seconds: the queue, the lights, the street it is in now.
    speed_prior_s: float = 60.0  # the long-run speed counts as this many seconds of driving
    speed_tau_s: float = 120.0  # observed speed fades with this time constant
    near_s: float = 120.0
    # Beyond that, the long-run pace: the plan's, corrected by the drive so far as a normal
    # model of relative pace says (eta.Trust). Standard deviations, relative to the pace:
    schedule_error: float = 0.15  # a route's own planned times, overall (a router's total)
    default_error: float = 0.3  # the default speed as a guess of a route's overall pace
    road_spread: float = 0.4  # between stretches of road (city streets vs arterials)
    traffic_spread: float = 0.3  # between stretches, from traffic no plan foresees
    stretch_s: float = 300.0  # how long a stretch of one kind lasts (planned seconds)
    trend_tau_s: float = 3600.0  # the drive's record fades with this time constant
    # Time at stops: the planned service, corrected by the visits so far (actual time from
    # arrival to departure against planned) with the plan worth this many planned seconds.
    service_prior_s: float = 180.0
    pass_m: float = 200.0  # a pending stop this far behind the progress, unvisited, is deferred
    min_speed_mps: float = 1.0
    max_speed_mps: float = 40.0
    reach_mps: float = 50.0  # fastest plausible progress between fixes (search window)
    search_back_m: float = 50.0
    search_ahead_m: float = 300.0
    jitter_m: float = 15.0  # a step back along the path shorter than this is GPS noise
    still_mps: float = 0.5  # a reported speed below this means standing still
    first_fix_ahead_cost: float = 0.02  # first fix: prefer the start, but find a mid-route start
    off_route_m: float = 50.0
    off_route_fixes: int = 3
    back_on_route_fixes: int = 2
    max_accuracy_m: float = 50.0  # a fix's accuracy widens geofences by at most this
    arrive_speed_mps: float = 2.0
    dwell_s: float = 30.0
    stay_radius_m: float = 20.0
    stray_dwell_s: float = 120.0  # staying this long at a pending stop the path is not at
    depart_margin_m: float = 10.0
    depart_fixes: int = 2
    # What leaving a stop's geofence does to an arrival nobody closed: "visited" (the
    # driver or dispatcher completes it) or "departure" (leaving completes it).
    auto_complete: str = "visited"
    # The 80 % interval published with every ETA (eta_earliest, eta_latest).
    spread: Spread = field(default_factory=Spread)
    # A stop.eta_changed event tells a material change (`publication.material`): the shown
    # minute changes, the ETA moved at least eta_change_s and eta_change_frac of the time
    # to go from the one published last, and, for a stop more than eta_hold_beyond_s away,
    # unless it moved eta_jump times that much, eta_hold_s passed since the stop's last
    # event. (eta.chain flags `moved` by the same threshold; stages.publish applies the
    # whole rule.)
    eta_change_s: float = 60.0
    eta_change_frac: float = 0.10
    eta_hold_s: float = 120.0
    eta_hold_beyond_s: float = 900.0
    eta_jump: float = 2.0
    arriving_s: float = 300.0
    max_gap_s: float = 300.0  # longer silences teach the speed estimate nothing
    detour_factor: float = 1.3  # road metres per straight-line metre

    def __post_init__(self) -> None:
        positive = (
            "planned_speed_mps",
            "speed_tau_s",
            "trend_tau_s",
            "stretch_s",
            "min_speed_mps",
            "detour_factor",
        )
        for name in positive:
            if not getattr(self, name) > 0.0:
                raise ValueError(f"{name} must be positive")
        non_negative = (
            "speed_prior_s",
            "near_s",
            "schedule_error",
            "default_error",
            "road_spread",
            "traffic_spread",
            "service_prior_s",
            "pass_m",
            "eta_change_s",
            "eta_change_frac",
            "eta_hold_s",
            "eta_hold_beyond_s",
        )
        for name in non_negative:
            if not getattr(self, name) >= 0.0:
                raise ValueError(f"{name} must not be negative")
        if not self.eta_jump >= 1.0:
            raise ValueError("eta_jump must be at least 1")
        if self.max_speed_mps < self.min_speed_mps:
            raise ValueError("max_speed_mps must not be below min_speed_mps")
        if self.auto_complete not in AUTO_COMPLETE:
            raise ValueError(f"auto_complete must be one of {', '.join(AUTO_COMPLETE)}")
        if min(self.off_route_fixes, self.back_on_route_fixes, self.depart_fixes) < 1:
            raise ValueError("fix counts must be at least 1")
