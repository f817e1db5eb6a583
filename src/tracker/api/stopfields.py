"""The doorstep fields of a stop in a route body: contact, parcels, required proof, options.

`POST /api/v1/routes` stops may carry, besides their position and times: `address`,
`phone`, `email`, `notes`, `language`, `parcels` ([{"ref", "description", "action":
"deliver"|"collect"}]), `proof` (any of "photo", "signature", "name", "pin"), `pin` (the code
the customer was sent; made up when "pin" proof is asked for without one),
`reschedule_windows` ([{"window_start", "window_end"}]) and `pickup_points` ([{"name",
"address"}]): what the customer may move the delivery to. Any other field is an error that
names it.
"""

from __future__ import annotations

import re
import secrets
from typing import Any

from tracker.api.responses import ApiError
from tracker.core.timeparse import TimeFormatError, parse_time

ROUTE_FIELDS = frozenset({"device", "planned_start", "stops", "path"})
CORE_STOP_FIELDS = frozenset(
    {
        "lat",
        "lon",
        "name",
        "recipient",
        "service_s",
        "radius_m",
        "planned_arrival",
        "window_start",
        "window_end",
    }
)
DETAIL_FIELDS = frozenset(
    {
        "address",
        "phone",
        "email",
        "notes",
        "language",
        "parcels",
        "proof",
        "pin",
        "reschedule_windows",
        "pickup_points",
    }
)
STOP_FIELDS = CORE_STOP_FIELDS | DETAIL_FIELDS
PROOF_KINDS = ("photo", "signature", "name", "pin")
PARCEL_ACTIONS = ("deliver", "collect")
MAX_TEXT = 500
MAX_NOTES = 2000
MAX_ITEMS = 50
PHONE_RE = re.compile(r"\+?[0-9][0-9 ()/.-]{3,30}")
EMAIL_RE = re.compile(r"[^@\s]{1,64}@[^@\s]{1,255}\.[^@\s]{1,63}")
LANGUAGE_RE = re.compile(r"[a-z]{2}(-[A-Z]{2})?")
PIN_RE = re.compile(r"[0-9]{4,8}")


def _invalid(message: str) -> ApiError:
    return ApiError(400, "invalid_request", message)


def unknown_fields(data: dict[str, Any], allowed: frozenset[str], where: str) -> None:
    """400 naming the first field of `data` that is not in `allowed`."""
    for key in data:
        if key not in allowed:
            known = ", ".join(sorted(allowed))
            raise _invalid(f"{where}.{key}: unknown field (known: {known})")


def _text(item: dict[str, Any], name: str, where: str, limit: int = MAX_TEXT) -> str:
    value = item.get(name)
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > limit:
        raise _invalid(f"{where}.{name}: must be a string of at most {limit} characters")
    return value.strip()


def _list(item: dict[str, Any], name: str, where: str) -> list[Any]:
    value = item.get(name)
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_ITEMS:
        raise _invalid(f"{where}.{name}: must be an array of at most {MAX_ITEMS} items")
    return value


def _object(value: Any, allowed: frozenset[str], where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _invalid(f"{where}: must be an object")
    unknown_fields(value, allowed, where)
    return value


def _parcels(item: dict[str, Any], where: str) -> list[dict[str, str]]:
    out = []
    for k, raw in enumerate(_list(item, "parcels", where)):
        at = f"{where}.parcels[{k}]"
        parcel = _object(raw, frozenset({"ref", "description", "action"}), at)
        action = parcel.get("action", "deliver")
        if action not in PARCEL_ACTIONS:
            raise _invalid(f"{at}.action: one of {', '.join(PARCEL_ACTIONS)}")
        ref = _text(parcel, "ref", at, 100)
        description = _text(parcel, "description", at)
        if not ref and not description:
            raise _invalid(f"{at}: needs a ref or a description")
        out.append({"ref": ref, "description": description, "action": action})
    return out


def _windows(item: dict[str, Any], where: str) -> list[dict[str, str]]:
    out = []
    for k, raw in enumerate(_list(item, "reschedule_windows", where)):
        at = f"{where}.reschedule_windows[{k}]"
        window = _object(raw, frozenset({"window_start", "window_end"}), at)
        try:
            start = parse_time(window.get("window_start"))
            end = parse_time(window.get("window_end"))
        except TimeFormatError as exc:
            raise _invalid(f"{at}: {exc}") from exc
        if end <= start:
            raise _invalid(f"{at}: window_end must be after window_start")
        out.append({"window_start": start.isoformat(), "window_end": end.isoformat()})
    return out


def _pickup_points(item: dict[str, Any], where: str) -> list[dict[str, str]]:
    out = []
    for k, raw in enumerate(_list(item, "pickup_points", where)):
        at = f"{where}.pickup_points[{k}]"
        point = _object(raw, frozenset({"name", "address"}), at)
        name = _text(point, "name", at)
        if not name:
            raise _invalid(f"{at}.name: required")
        out.append({"name": name, "address": _text(point, "address", at)})
    return out


def parse_details(item: dict[str, Any], where: str) -> dict[str, Any]:
    """The doorstep columns of one stop of a POST body (unknown fields were refused)."""
    phone = _text(item, "phone", where, 40)
    if phone and not PHONE_RE.fullmatch(phone):
        raise _invalid(f"{where}.phone: not a phone number (digits, optional leading +)")
    email = _text(item, "email", where, 320)
    if email and not EMAIL_RE.fullmatch(email):
        raise _invalid(f"{where}.email: not an e-mail address")
    language = _text(item, "language", where, 5)
    if language and not LANGUAGE_RE.fullmatch(language):
        raise _invalid(f"{where}.language: a language tag such as 'en' or 'de'")
    proof = _list(item, "proof", where)
    if any(p not in PROOF_KINDS for p in proof):
        raise _invalid(f"{where}.proof: each one of {', '.join(PROOF_KINDS)}")
    pin = _text(item, "pin", where, 8)
    if pin and not PIN_RE.fullmatch(pin):
        raise _invalid(f"{where}.pin: 4 to 8 digits")
    if "pin" in proof and not pin:
        # The customer learns it from their messages and tracking page.
        pin = f"{secrets.randbelow(10_000):04d}"
    return {
        "address": _text(item, "address", where),
        "phone": phone,
        "email": email,
        "notes": _text(item, "notes", where, MAX_NOTES),
        "language": language,
        "parcels": _parcels(item, where),
        "proof_required": sorted(set(proof), key=PROOF_KINDS.index),
        "pin": pin or None,
        "reschedule_windows": _windows(item, where),
        "pickup_points": _pickup_points(item, where),
    }
