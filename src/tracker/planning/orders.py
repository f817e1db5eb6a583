"""Validating orders: a JSON object (from the API or a CSV row) → the store's column values.

`new_order` checks a whole order and derives what the caller left out (the delivery day
from the first window, the geocoding status from whether coordinates were given);
`order_changes` checks a PATCH. Both raise `Invalid` listing every bad field.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from tracker.core.timeparse import TimeFormatError
from tracker.planning.fields import MAX_NOTES, MISSING, Checker, instant
from tracker.planning.model import (
    DELIVERY,
    GIVEN,
    KINDS,
    PENDING,
    RESOLVED,
    UNRESOLVED,
    Order,
    Window,
)

MAX_WINDOWS = 10
MAX_SERVICE_S = 86_400.0
MAX_EXTERNAL_ID = 128
# The fields a client may send; everything else is an error naming the field.
FIELDS = (
    "external_id",
    "kind",
    "lat",
    "lon",
    "address",
    "recipient",
    "phone",
    "email",
    "windows",
    "service_s",
    "size",
    "skills",
    "priority",
    "notes",
    "date",
)


def _windows(check: Checker, name: str = "windows") -> Any:
    """[[start, end], ...] or [{"start", "end"}, ...] → sorted, non-overlapping Windows."""
    raw = check.data.get(name, MISSING)
    if raw is MISSING:
        return raw
    if raw is None:
        return []
    if not isinstance(raw, list) or len(raw) > MAX_WINDOWS:
        check.fail(name, f"must be a list of at most {MAX_WINDOWS} [start, end] pairs")
        return MISSING
    out: list[tuple[int, Window]] = []
    ok = True
    for i, item in enumerate(raw):
        where = f"{name}[{i}]"
        if isinstance(item, dict) and set(item) == {"start", "end"}:
            pair = [item["start"], item["end"]]
        elif isinstance(item, list) and len(item) == 2:
            pair = item
        else:
            check.fail(where, 'must be [start, end] or {"start": ..., "end": ...}')
            ok = False
            continue
        try:
            start, end = instant(pair[0]), instant(pair[1])
        except TimeFormatError as exc:
            check.fail(where, f"{exc} (ISO-8601 with a zone, e.g. 2026-12-05T09:00:00+01:00)")
            ok = False
            continue
        if end <= start:
            check.fail(where, "end must be after start")
            ok = False
            continue
        out.append((i, Window(start, end)))
    if not ok:
        return MISSING
    out.sort(key=lambda iw: iw[1].start)
    for (_, before), (i, after) in itertools.pairwise(out):
        if after.start < before.end:
            check.fail(f"{name}[{i}]", "overlaps another window")
            return MISSING
    return [w for _, w in out]


def windows_json(windows: list[Window]) -> list[list[str]]:
    """Windows as stored: [[start, end], ...] in ISO-8601 UTC."""
    return [[w.start.isoformat(), w.end.isoformat()] for w in windows]


def _email(check: Checker) -> Any:
    value = check.text("email", 254)
    if isinstance(value, str) and value:
        local, at, domain = value.rpartition("@")
        if not at or not local or "." not in domain or " " in value:
            check.fail("email", "must be an e-mail address")
            return MISSING
    return value


def _common(check: Checker) -> dict[str, Any]:
    """Every field present in `check.data`, checked; absent ones are left out."""
    out: dict[str, Any] = {
        "external_id": check.text("external_id", MAX_EXTERNAL_ID),
        "kind": check.choice("kind", KINDS),
        "lat": check.number("lat", -90.0, 90.0, nullable=True),
        "lon": check.number("lon", -180.0, 180.0, nullable=True),
        "address": check.text("address"),
        "recipient": check.text("recipient"),
        "phone": check.text("phone", 64),
        "email": _email(check),
        "service_s": check.number("service_s", 0.0, MAX_SERVICE_S),
        "size": check.amounts("size"),
        "skills": check.names("skills"),
        "priority": check.integer("priority", 0, 100),
        "notes": check.text("notes", MAX_NOTES),
        "date": check.day("date"),
    }
    windows = _windows(check)
    if windows is not MISSING:
        out["windows"] = windows
    if out["external_id"] == "":
        out["external_id"] = None  # "" in a CSV cell means "no external id"
    return {k: v for k, v in out.items() if v is not MISSING}


def _located(check: Checker, values: Mapping[str, Any]) -> None:
    if ("lat" in values) != ("lon" in values) or (values.get("lat") is None) != (
        values.get("lon") is None
    ):
        check.fail("lat" if values.get("lat") is None else "lon", "lat and lon go together")


def new_order(data: Mapping[str, Any], prefix: str = "", geocoder: bool = True) -> dict[str, Any]:
    """A whole new order checked into column values (lat/lon for the location, windows as
    stored JSON). Needs coordinates or an address, and a date or a window. An order with
    only an address waits for the geocoder (`pending`), or is `unresolved` at once when
    no geocoder is configured."""
    check = Checker(data, prefix)
    check.unknown(FIELDS)
    values = _common(check)
    if check.given("lat") or check.given("lon"):
        _located(check, {k: data.get(k) for k in ("lat", "lon")})
    has_point = values.get("lat") is not None and values.get("lon") is not None
    tried_point = data.get("lat") is not None or data.get("lon") is not None
    if not has_point and not tried_point and not values.get("address"):
        check.fail("address", "an order needs lat and lon or an address to geocode")
    windows: list[Window] = values.get("windows", [])
    if "date" not in values and not check.given("date"):
        if windows:
            # The day of the first window as the sender wrote it (its own offset), not UTC's.
            values["date"] = _local_day(data, windows)
        elif not data.get("windows"):
            check.fail("date", "required when no window is given")
    check.raise_if_invalid()
    values.setdefault("kind", DELIVERY)
    values["windows"] = windows_json(windows)
    if has_point:
        values["geocode_status"] = GIVEN
    else:
        values["lat"] = values["lon"] = None
        values["geocode_status"] = PENDING if geocoder else UNRESOLVED
    values["geocode_candidates"] = []
    return values


def _local_day(data: Mapping[str, Any], windows: list[Window]) -> Any:
    first = windows[0].start
    raw = data.get("windows") or []
    for item in raw:
        text = item.get("start") if isinstance(item, dict) else item[0]
        if isinstance(text, str):
            try:
                parsed = datetime.fromisoformat(text.strip().replace("z", "Z"))
            except ValueError:
                continue
            if parsed == first:
                return parsed.date()
    return first.date()


def order_changes(data: Mapping[str, Any], current: Order, geocoder: bool = True) -> dict[str, Any]:
    """A PATCH checked against the stored order. Coordinates given → `given`; `candidate`
    (an index into the geocoder's candidates) → that candidate, `resolved`; a new address
    without coordinates, or the address of an `unresolved` order sent again → geocoded
    again."""
    check = Checker(data)
    check.unknown((*FIELDS, "candidate"))
    values = _common(check)
    pick = check.integer("candidate", 0, max(len(current.geocode_candidates) - 1, 0))
    if check.given("candidate") and not current.geocode_candidates and not check.errors:
        check.fail("candidate", "this order has no geocoding candidates to choose from")
    elif isinstance(pick, int) and (check.given("lat") or check.given("lon")):
        check.fail("candidate", "give either a candidate or lat and lon, not both")
    if check.given("lat") or check.given("lon"):
        _located(check, {k: data.get(k) for k in ("lat", "lon")})
        if values.get("lat") is None and not check.errors:
            check.fail("lat", "cannot be cleared (change the address to geocode it again)")
    if values.get("date", current.date) is None:
        check.fail("date", "cannot be cleared")
    check.raise_if_invalid()
    if "windows" in values:
        values["windows"] = windows_json(values["windows"])
    if isinstance(pick, int) and current.geocode_candidates:
        chosen = current.geocode_candidates[pick]
        values["lat"], values["lon"] = chosen.lat, chosen.lon
        values["geocode_status"] = RESOLVED
    elif "lat" in values:
        values["geocode_status"] = GIVEN
    elif "address" in values and (
        values["address"] != current.address or current.geocode_status == UNRESOLVED
    ):
        # A new address, or the same one sent again for an order nothing was found for
        # (say, once a geocoder is configured): ask again.
        if not values["address"]:
            raise_one("address", "an order without coordinates needs an address")
        values["lat"] = values["lon"] = None
        values["geocode_status"] = PENDING if geocoder else UNRESOLVED
        values["geocode_candidates"] = []
    return values


def raise_one(name: str, message: str) -> None:
    """Raise `Invalid` for one field."""
    check = Checker({})
    check.fail(name, message)
    check.raise_if_invalid()


def order_json(order: Order) -> dict[str, Any]:
    """The public JSON of an order."""
    return {
        "id": order.id,
        "external_id": order.external_id,
        "kind": order.kind,
        "lat": order.lat,
        "lon": order.lon,
        "address": order.address,
        "recipient": order.recipient,
        "phone": order.phone,
        "email": order.email,
        "windows": windows_json(list(order.windows)),
        "service_s": order.service_s,
        "size": dict(order.size),
        "skills": list(order.skills),
        "priority": order.priority,
        "notes": order.notes,
        "date": order.date.isoformat(),
        "status": order.status,
        "geocode_status": order.geocode_status,
        "geocode_candidates": [c.to_json() for c in order.geocode_candidates],
        "route_id": order.route_id,
        "stop_id": order.stop_id,
        "created_at": order.created_at.isoformat(),
        "updated_at": order.updated_at.isoformat(),
    }
