"""Checking request values field by field, collecting every problem instead of the first.

A `Checker` reads one JSON object (or one CSV row turned into one) and records a
`FieldError` per bad field, so a caller can name all of them at once: the API in one 400
message, the CSV import per line and field.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from tracker.core.timeparse import TimeFormatError, parse_time

MAX_TEXT = 500
MAX_NOTES = 2000
MAX_SKILLS = 20
MAX_UNITS = 10
# Skill and unit names: short identifiers, so they read the same in a CSV cell and a solver.
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# Times outside these years are typing mistakes (and keep planning arithmetic in range).
FIRST_YEAR = 2000
LATEST_YEAR = 2999


@dataclass(frozen=True, slots=True)
class FieldError:
    """One bad field: its name (`windows[1]`, `size.kg`) and what is wrong with it."""

    field: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message}


class Invalid(ValueError):
    """The value has the listed problems (at least one)."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(f"{e.field}: {e.message}" for e in errors))
        self.errors = errors


class Missing:
    """Marks "not given" where None would mean "clear this field"."""


MISSING: Any = Missing()


class Checker:
    """Reads typed fields from `data`, recording errors under `prefix` + field name."""

    def __init__(self, data: Mapping[str, Any], prefix: str = "") -> None:
        self.data = data
        self.prefix = prefix
        self.errors: list[FieldError] = []

    def fail(self, name: str, message: str) -> None:
        """Record a problem with field `name`."""
        self.errors.append(FieldError(self.prefix + name, message))

    def unknown(self, allowed: Iterable[str]) -> None:
        """Every key not in `allowed` is an error naming it."""
        known = set(allowed)
        for key in self.data:
            if key not in known:
                self.fail(str(key), "unknown field")

    def raise_if_invalid(self) -> None:
        if self.errors:
            raise Invalid(self.errors)

    def given(self, name: str) -> bool:
        return name in self.data

    def text(self, name: str, limit: int = MAX_TEXT, required: bool = False) -> Any:
        """A string (trimmed); "" when null or absent unless `required`."""
        value = self.data.get(name, MISSING)
        if value is MISSING or value is None:
            if required:
                self.fail(name, "required")
            return MISSING if value is MISSING else ""
        if not isinstance(value, str):
            self.fail(name, "must be a string")
            return MISSING
        value = value.strip()
        if "\x00" in value:
            self.fail(name, "must not contain NUL characters")
            return MISSING
        if len(value) > limit:
            self.fail(name, f"at most {limit} characters")
            return MISSING
        if required and not value:
            self.fail(name, "must not be empty")
            return MISSING
        return value

    def number(
        self, name: str, low: float, high: float, required: bool = False, nullable: bool = False
    ) -> Any:
        """A finite number within [low, high]."""
        value = self.data.get(name, MISSING)
        if value is MISSING or value is None:
            if required:
                self.fail(name, "required")
            if value is None and not nullable and not required:
                self.fail(name, "must be a number")
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(name, "must be a number")
            return MISSING
        if not math.isfinite(value) or not low <= value <= high:
            self.fail(name, f"must be between {low:g} and {high:g}")
            return MISSING
        return float(value)

    def integer(
        self, name: str, low: int, high: int, nullable: bool = False, required: bool = False
    ) -> Any:
        """A whole number within [low, high] (2.0 counts as 2)."""
        value = self.data.get(name, MISSING)
        if value is MISSING or value is None:
            if required:
                self.fail(name, "required")
            elif value is None and not nullable:
                self.fail(name, "must be an integer")
            return value
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(name, "must be an integer")
            return MISSING
        if not low <= value <= high:
            self.fail(name, f"must be between {low} and {high}")
            return MISSING
        return value

    def boolean(self, name: str) -> Any:
        value = self.data.get(name, MISSING)
        if value is MISSING:
            return value
        if not isinstance(value, bool):
            self.fail(name, "must be true or false")
            return MISSING
        return value

    def choice(self, name: str, options: Iterable[str]) -> Any:
        """One of `options`."""
        opts = tuple(options)
        value = self.data.get(name, MISSING)
        if value is MISSING:
            return value
        if not isinstance(value, str) or value not in opts:
            self.fail(name, "must be one of " + ", ".join(opts))
            return MISSING
        return value

    def names(self, name: str, limit: int = MAX_SKILLS) -> Any:
        """A list of distinct short names (skills), sorted."""
        value = self.data.get(name, MISSING)
        if value is MISSING:
            return value
        if value is None:
            return []
        if not isinstance(value, list) or len(value) > limit:
            self.fail(name, f"must be a list of at most {limit} names")
            return MISSING
        for i, item in enumerate(value):
            if not isinstance(item, str) or not NAME.match(item):
                self.fail(f"{name}[{i}]", "must be a name of letters, digits, '_', '-' or '.'")
                return MISSING
        return sorted(set(value))

    def amounts(self, name: str) -> Any:
        """{unit: non-negative number}, e.g. a size {"parcels": 2, "kg": 7.5}."""
        value = self.data.get(name, MISSING)
        if value is MISSING:
            return value
        if value is None:
            return {}
        if not isinstance(value, dict) or len(value) > MAX_UNITS:
            self.fail(name, f"must be an object of at most {MAX_UNITS} units and amounts")
            return MISSING
        out: dict[str, float] = {}
        for unit, amount in value.items():
            if not NAME.match(unit):
                self.fail(f"{name}.{unit}", "unit names are letters, digits, '_', '-' or '.'")
            elif (
                isinstance(amount, bool)
                or not isinstance(amount, int | float)
                or not math.isfinite(amount)
                or not 0 <= amount <= 1e9
            ):
                self.fail(f"{name}.{unit}", "must be a number between 0 and 1e9")
            else:
                out[unit] = amount
        return out if len(out) == len(value) else MISSING

    def day(self, name: str) -> Any:
        """A calendar day, YYYY-MM-DD."""
        value = self.data.get(name, MISSING)
        if value is MISSING:
            return value
        if isinstance(value, str):
            try:
                parsed = date.fromisoformat(value.strip())
            except ValueError:
                pass
            else:
                if FIRST_YEAR <= parsed.year <= LATEST_YEAR:
                    return parsed
        self.fail(name, "must be a date YYYY-MM-DD (years 2000-2999)")
        return MISSING

    def time_of_day(self, name: str) -> Any:
        """A local time of day HH:MM[:SS]; None clears it."""
        value = self.data.get(name, MISSING)
        if value is MISSING or value is None:
            return value
        if isinstance(value, str):
            try:
                parsed = time.fromisoformat(value.strip())
            except ValueError:
                pass
            else:
                if parsed.tzinfo is None:
                    return parsed
        self.fail(name, "must be a local time of day HH:MM or HH:MM:SS")
        return MISSING

    def zone(self, name: str) -> Any:
        """An IANA time zone name such as Europe/Paris."""
        value = self.data.get(name, MISSING)
        if value is MISSING:
            return value
        if isinstance(value, str) and valid_zone(value):
            return value
        self.fail(name, "must be an IANA time zone such as Europe/Paris")
        return MISSING


def valid_zone(name: str) -> bool:
    """Whether `name` is a time zone the server knows."""
    if name not in _ZONES:
        return False
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


_ZONES = frozenset(available_timezones()) | {"UTC"}


def instant(value: Any) -> datetime:
    """An ISO-8601 time with a zone, as UTC; TimeFormatError otherwise."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise TimeFormatError("must be an ISO-8601 time with a zone")
    parsed = parse_time(value)
    if not FIRST_YEAR <= parsed.year <= LATEST_YEAR:
        raise TimeFormatError("must be in the years 2000-2999")
    return parsed
