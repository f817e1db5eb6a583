"""Strict parsing of the values phone clients send, shared by the protocol decoders.

Every helper raises `FieldError` with a message that names the field, so a decoder can
turn it into a `Reject` reason unchanged. Numbers may arrive as JSON numbers or as text
(query strings, and JSON clients that quote their numbers); either way booleans, NaN and
infinities are refused, because `float()` would quietly accept "nan", "inf" and "1_0".
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from tracker.core.model import RejectCode
from tracker.protocols.base import ProtocolError

# A plain decimal as JSON and Java's Double.parseDouble write it (no NaN, no Infinity,
# no underscores or hex), optionally surrounded by spaces. Each digit can be matched one
# way only: `\d+\.?\d*` split a run of digits in every possible way, so a long run that
# failed at its end took time polynomial in its length (40,000 digits: 90 s). ASCII only:
# Unicode `\s` also takes the separators U+001C..U+001F, which float() refuses.
_DECIMAL = re.compile(r"\s*[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?\s*", re.ASCII)

KNOTS_TO_MPS = 0.514444
KMH_TO_MPS = 1 / 3.6


class FieldError(ValueError):
    """One field of one ping is unusable; the message says which and why, `code` (a
    `RejectCode`) says it in one word."""

    def __init__(self, message: str, code: str = RejectCode.MALFORMED) -> None:
        super().__init__(message)
        self.code = code


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def number(value: object, name: str) -> float:
    """A finite float from a JSON number or numeric text; refuses bool, NaN and infinity."""
    if isinstance(value, bool):
        raise FieldError(f"{name}: must be a number, got {value!r}")
    if isinstance(value, int):
        return float(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise FieldError(f"{name}: must be a finite number")
        return value
    if isinstance(value, str) and _DECIMAL.fullmatch(value):
        parsed = float(value)
        if not math.isfinite(parsed):  # e.g. 1e999 overflows
            raise FieldError(f"{name}: must be a finite number")
        return parsed
    raise FieldError(f"{name}: {_shown(value)} is not a number")


def optional_number(value: object, name: str) -> float | None:
    """`number`, or None when the value is absent (None or empty text)."""
    if value is None or value == "":
        return None
    return number(value, name)


def unknown_if_negative(value: object, name: str) -> float | None:
    """A measurement where clients write a negative value (usually -1) for "unknown"."""
    parsed = optional_number(value, name)
    return None if parsed is None or parsed < 0 else parsed


def course(value: object, name: str = "course") -> float | None:
    """Degrees clockwise from north in [0, 360); negative means unknown."""
    parsed = unknown_if_negative(value, name)
    return None if parsed is None else parsed % 360.0


def latitude(value: object, name: str = "lat") -> float:
    """WGS84 latitude in degrees, within ±90."""
    parsed = number(value, name)
    if not -90.0 <= parsed <= 90.0:
        raise FieldError(f"{name}: {parsed} is outside -90..90", RejectCode.OUT_OF_RANGE)
    return parsed


def longitude(value: object, name: str = "lon") -> float:
    """WGS84 longitude in degrees, within ±180."""
    parsed = number(value, name)
    if not -180.0 <= parsed <= 180.0:
        raise FieldError(f"{name}: {parsed} is outside -180..180", RejectCode.OUT_OF_RANGE)
    return parsed


def position(
    lat: object, lon: object, names: tuple[str, str] = ("lat", "lon")
) -> tuple[float, float]:
    """A (lat, lon) pair; refuses a missing half and the 0,0 that phones send without a fix.

    Traccar treats exactly 0,0 as "no position" too (it substitutes the last known one).
    """
    if lat is None or lon is None or lat == "" or lon == "":
        raise FieldError(f"no coordinates ({names[0]}/{names[1]} missing)", RejectCode.NO_FIX)
    pair = latitude(lat, names[0]), longitude(lon, names[1])
    if pair == (0.0, 0.0):
        raise FieldError("coordinates 0,0: the phone had no fix", RejectCode.NO_FIX)
    return pair


def epoch_seconds(value: object, name: str) -> datetime:
    """Unix epoch seconds (never milliseconds) to an aware UTC datetime."""
    seconds = number(value, name)
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise FieldError(f"{name}: {seconds} is out of range") from exc


def text_value(text: str) -> float | bool | str:
    """An untyped query value the way Traccar stores it: a number, then true/false, then text.

    Unlike Java's parseDouble, "NaN" and "Infinity" stay text.
    """
    if _DECIMAL.fullmatch(text):
        parsed = float(text)
        if math.isfinite(parsed):
            return parsed
    if text == "true":
        return True
    if text == "false":
        return False
    return text


def json_value(value: object) -> Any | None:
    """A JSON value worth keeping as an attribute: scalars and lists of scalars, else None."""
    if isinstance(value, bool | str | int):
        return value  # ints stay ints: Traccar keeps an integer extra as a long
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list) and all(
        isinstance(item, bool | str | int) or (isinstance(item, float) and math.isfinite(item))
        for item in value
    ):
        return value
    return None


def json_body(body: bytes) -> Any:
    """Parse a request body as strict JSON (NaN/Infinity literals refused) or answer 400."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(400, f"malformed JSON: {exc}") from exc


def json_object(body: bytes) -> dict[str, Any]:
    """Parse a request body that must be one JSON object, or answer 400."""
    parsed = json_body(body)
    if not isinstance(parsed, dict):
        raise ProtocolError(400, "the body must be a JSON object")
    return parsed


def header(headers: Mapping[str, str], name: str) -> str:
    """A header's value (keys are lower-case in `Request`), or "" when absent."""
    return headers.get(name.lower(), "").strip()
