"""Named checks that refuse a fix and say why (after Traccar's FilterHandler).

Each filter takes the fix, the previous accepted fix of the same device (or None), the
current time and the configuration, and returns a reason string or None. Duplicates are
not a filter: the store's primary key (device, fix time) decides them, so a retried
request is reported as duplicates rather than rejects.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from tracker.core.model import Fix, Reject, RejectCode

_EARTH_RADIUS_M = 6_371_008.8
GPS_EPOCH = datetime(1980, 1, 6, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class FilterConfig:
    """Limits; a None disables its filter."""

    max_future_s: float = 600.0
    max_speed_mps: float | None = 100.0
    max_accuracy_m: float | None = None
    # Positions older than the retention would be dropped by the next prune (and would
    # re-create a month partition the last prune removed).
    max_age_s: float | None = None


Filter = Callable[[Fix, Fix | None, datetime, FilterConfig], str | None]


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * _EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def invalid(fix: Fix, prev: Fix | None, now: datetime, cfg: FilterConfig) -> str | None:
    """Coordinates or optional numbers that are NaN or infinite."""
    if math.isfinite(fix.lat) and math.isfinite(fix.lon):
        optional = (fix.speed, fix.course, fix.accuracy, fix.altitude)
        if all(v is None or math.isfinite(v) for v in optional):
            return None
    for name in ("lat", "lon", "speed", "course", "accuracy", "altitude"):
        value = getattr(fix, name)
        if value is not None and not math.isfinite(value):
            return f"{name}: must be a finite number"
    return None


# Attributes are free-form JSON from the phone. Nested deeper than the jsonb encoder goes
# (about 250 levels) they failed a whole group commit, and deeper still any recursive walk;
# past these limits a ping is refused before anything walks it recursively.
MAX_ATTRIBUTES_DEPTH = 32
MAX_ATTRIBUTES_BYTES = 64 * 1024


def _attributes_problem(attributes: object, max_depth: int, max_bytes: int) -> str | None:
    """Why `attributes` is too deep or too large, walked without recursion; None if fine.

    The size is what the JSON text takes, estimated: string lengths plus a few characters
    per value and separator (numbers count 8), close enough to bound what is stored.
    """
    size = 0
    stack: list[tuple[object, int]] = [(attributes, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > max_depth:
                return f"attributes: nested deeper than {max_depth} levels"
            size += 2 + len(value)
            if isinstance(value, dict):
                for key, item in value.items():
                    size += len(key) + 3
                    stack.append((item, depth + 1))
            else:
                stack.extend((item, depth + 1) for item in value)
        elif isinstance(value, str):
            size += len(value) + 2
        else:
            size += 8
        if size > max_bytes:
            return f"attributes: larger than {max_bytes} bytes as JSON"
    return None


def _has_nul(value: object) -> bool:
    # Iterative: `oversized` bounds the depth first, but a walk should never be what fails.
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def oversized(fix: Fix, prev: Fix | None, now: datetime, cfg: FilterConfig) -> str | None:
    """Attributes nested deeper than `MAX_ATTRIBUTES_DEPTH` or larger than
    `MAX_ATTRIBUTES_BYTES` (as JSON): refused before they reach the store."""
    if not fix.attributes:
        return None
    return _attributes_problem(fix.attributes, MAX_ATTRIBUTES_DEPTH, MAX_ATTRIBUTES_BYTES)


# The largest magnitude a `real` (float4) column holds: speed, course, accuracy, altitude.
REAL_MAX = 3.4028234663852886e38


def unstorable(fix: Fix, prev: Fix | None, now: datetime, cfg: FilterConfig) -> str | None:
    """What PostgreSQL cannot store: the NUL character in jsonb attributes, and numbers too
    large for the `real` columns (refused while encoding, they failed the whole group
    commit with a 503 for every request in it)."""
    for name in ("speed", "course", "accuracy", "altitude"):
        value = getattr(fix, name)
        if value is not None and abs(value) > REAL_MAX:
            return f"{name}: {value:g} is too large to store"
    if fix.attributes and _has_nul(fix.attributes):
        return "attributes: text must not contain the NUL character (\\u0000)"
    return None


def out_of_range(fix: Fix, prev: Fix | None, now: datetime, cfg: FilterConfig) -> str | None:
    """Latitude beyond ±90, longitude beyond ±180, negative speed or accuracy, a time before
    GPS existed (a clock that was never set; no month partition could hold year 1 either)."""
    if fix.time < GPS_EPOCH:
        return "time: before the GPS epoch (1980-01-06)"
    if not -90.0 <= fix.lat <= 90.0:
        return "lat: must be between -90 and 90"
    if not -180.0 <= fix.lon <= 180.0:
        return "lon: must be between -180 and 180"
    if fix.speed is not None and fix.speed < 0:
        return "speed: must not be negative"
    if fix.accuracy is not None and fix.accuracy < 0:
        return "accuracy: must not be negative"
    return None


def future(fix: Fix, prev: Fix | None, now: datetime, cfg: FilterConfig) -> str | None:
    """A fix time too far ahead of the server's clock."""
    ahead = (fix.time - now).total_seconds()
    if ahead > cfg.max_future_s:
        return f"time: {ahead:.0f} s in the future (limit {cfg.max_future_s:.0f} s)"
    return None


def past_retention(fix: Fix, prev: Fix | None, now: datetime, cfg: FilterConfig) -> str | None:
    """A fix older than the retention period keeps."""
    limit = cfg.max_age_s
    if limit is None:
        return None
    age = (now - fix.time).total_seconds()
    if age > limit:
        return f"time: {age / 86400:.0f} days old, past the retention of {limit / 86400:g} days"
    return None


def poor_accuracy(fix: Fix, prev: Fix | None, now: datetime, cfg: FilterConfig) -> str | None:
    """A fix whose reported accuracy is worse than allowed."""
    limit = cfg.max_accuracy_m
    if limit is not None and fix.accuracy is not None and fix.accuracy > limit:
        return f"accuracy: {fix.accuracy:.0f} m is worse than {limit:.0f} m"
    return None


def implausible_jump(fix: Fix, prev: Fix | None, now: datetime, cfg: FilterConfig) -> str | None:
    """Moving faster than any vehicle could since the previous fix."""
    limit = cfg.max_speed_mps
    if limit is None or prev is None:
        return None
    dt = abs((fix.time - prev.time).total_seconds())
    if dt == 0:
        return None
    speed = haversine_m(prev.lat, prev.lon, fix.lat, fix.lon) / dt
    if speed > limit:
        return f"implausible jump: {speed:.0f} m/s since the previous fix (limit {limit:.0f})"
    return None


# (reject code, filter), in the order they run.
FILTERS: tuple[tuple[str, Filter], ...] = (
    (RejectCode.INVALID, invalid),
    (RejectCode.OVERSIZED, oversized),
    (RejectCode.UNSTORABLE, unstorable),
    (RejectCode.OUT_OF_RANGE, out_of_range),
    (RejectCode.FUTURE, future),
    (RejectCode.PAST_RETENTION, past_retention),
    (RejectCode.POOR_ACCURACY, poor_accuracy),
    (RejectCode.IMPLAUSIBLE_JUMP, implausible_jump),
)


def screen(
    fixes: Iterable[tuple[int, Fix]],
    last: Fix | None,
    now: datetime,
    cfg: FilterConfig,
) -> tuple[list[tuple[int, Fix]], list[Reject]]:
    """Run every filter over a device's fixes (with their request indexes) in time order.

    `last` is the device's latest known fix; each accepted fix becomes the reference for
    the jump check of the next, so one bad point does not poison the rest.
    """
    accepted: list[tuple[int, Fix]] = []
    rejects: list[Reject] = []
    prev = last
    for index, fix in sorted(fixes, key=lambda item: item[1].time):
        # A late fix (older than the reference) is history, not a jump from it.
        newer = prev is None or fix.time >= prev.time
        reference = prev if newer else None
        for code, check in FILTERS:
            reason = check(fix, reference, now, cfg)
            if reason is not None:
                rejects.append(Reject(index, reason, code))
                break
        else:
            accepted.append((index, fix))
            if newer:
                prev = fix
    accepted.sort(key=lambda item: item[0])
    return accepted, rejects
