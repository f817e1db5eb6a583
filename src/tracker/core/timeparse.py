"""Turning the time formats phones send into timezone-aware UTC datetimes."""

from __future__ import annotations

import math
from datetime import UTC, datetime

# Traccar's rule: integers below 2^31-1 are epoch seconds, larger ones milliseconds.
_MS_THRESHOLD = 2_147_483_647


class TimeFormatError(ValueError):
    """The value is not a time this server understands."""


def from_epoch(value: float) -> datetime:
    """Epoch seconds or milliseconds (told apart by magnitude) to UTC."""
    if isinstance(value, bool) or not math.isfinite(value):
        raise TimeFormatError("time must be a finite number")
    seconds = value / 1000.0 if abs(value) >= _MS_THRESHOLD else float(value)
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise TimeFormatError("time is out of range") from exc


def from_iso(text: str) -> datetime:
    """ISO-8601 with a zone (``Z``, ``+02:00`` or ``-0700``) to UTC; a naive time is refused."""
    s = text.strip()
    try:
        parsed = datetime.fromisoformat(s.replace("z", "Z"))
    except ValueError as exc:
        raise TimeFormatError(f"time {text[:40]!r} is not ISO-8601") from exc
    if parsed.tzinfo is None:
        raise TimeFormatError(f"time {text[:40]!r} has no time zone")
    try:
        return parsed.astimezone(UTC)
    except OverflowError as exc:  # e.g. 9999-12-31T23:59:59-01:00 is past year 9999 in UTC
        raise TimeFormatError(f"time {text[:40]!r} is out of range") from exc


def parse_time(value: object) -> datetime:
    """A JSON time value: ISO-8601 string with zone, or epoch seconds/milliseconds."""
    if isinstance(value, bool):
        raise TimeFormatError("time must be ISO-8601 or epoch seconds/milliseconds")
    if isinstance(value, int | float):
        return from_epoch(value)
    if isinstance(value, str):
        stripped = value.strip()
        if stripped.lstrip("-").replace(".", "", 1).isdigit():
            return from_epoch(float(stripped))
        return from_iso(stripped)
    raise TimeFormatError("time must be ISO-8601 or epoch seconds/milliseconds")
