"""Routes API: plan a route for a device, read it with live ETAs, change a stop's status.

- `POST /api/v1/routes` (dispatcher): device, planned start, ordered stops, planned path
  (GeoJSON LineString, `{"polyline": "..."}` or null for the stops joined in order) → 201.
- `GET /api/v1/routes/current` (device token): the calling device's active route.
- `GET /api/v1/routes/{id}` (dispatcher, or the route's device).
- `PATCH /api/v1/routes/{id}/stops/{stop_id}` (dispatcher, or the route's device):
  `{"status": "arrived"|"completed"|"failed"|"skipped", "reason"?}` → 200, 409 when the
  stop's current status does not allow it.
"""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from tracker.api import link_keys
from tracker.api.body import json_object
from tracker.api.guards import principal, require_dispatcher, runtime, unavailable
from tracker.api.ingest import authenticate_device
from tracker.api.responses import ApiError, ORJSONResponse
from tracker.api.runtime import Runtime
from tracker.api.stopfields import (
    ROUTE_FIELDS,
    STOP_FIELDS,
    parse_details,
    unknown_fields,
)
from tracker.api.tracking import with_tracking_urls
from tracker.core import pathcodec
from tracker.core.model import Stop, StopStatus
from tracker.core.timeparse import TimeFormatError, parse_time
from tracker.services.auth import bearer
from tracker.services.routing import (
    SETTABLE,
    RouteInvalid,
    RouteNotFound,
    RoutingService,
    TransitionRefused,
)
from tracker.store import devices as device_store
from tracker.store import routes as store
from tracker.store.db import DB_ERRORS

MAX_STOPS = 1000
MAX_TEXT = 500
MAX_RADIUS_M = 10_000.0
MAX_SERVICE_S = 86_400.0
# Route times outside these years are mistakes; bounding them keeps every ETA (times plus
# at most MAX_STOPS service times and travel) inside what datetime can hold.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(3000, 1, 1, tzinfo=UTC)


def routing(rt: Runtime) -> RoutingService:
    """The instance's routing service (built by the runtime)."""
    return rt.routing


def _invalid(message: str) -> ApiError:
    return ApiError(400, "invalid_request", message)


def _number(item: dict[str, Any], name: str, where: str, default: float | None) -> float:
    value = item.get(name)
    if value is None:
        if default is None:
            raise _invalid(f"{where}.{name}: required number")
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _invalid(f"{where}.{name}: must be a finite number")
    return float(value)


def _text(item: dict[str, Any], name: str, where: str) -> str:
    value = item.get(name)
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise _invalid(f"{where}.{name}: must be a string of at most {MAX_TEXT} characters")
    return value.strip()


def _time(item: dict[str, Any], name: str, where: str) -> datetime | None:
    value = item.get(name)
    if value is None:
        return None
    try:
        when = parse_time(value)
    except TimeFormatError as exc:
        raise _invalid(f"{where}.{name}: {exc}") from exc
    if not EARLIEST <= when < LATEST:
        raise _invalid(f"{where}.{name}: must be from {EARLIEST.year} to {LATEST.year - 1}")
    return when


def parse_stop(item: object, seq: int) -> Stop:
    """One stop of a POST body (its position in the list is its sequence number)."""
    where = f"stops[{seq - 1}]"
    if not isinstance(item, dict):
        raise _invalid(f"{where}: must be an object")
    unknown_fields(item, STOP_FIELDS, where)
    lat = _number(item, "lat", where, None)
    lon = _number(item, "lon", where, None)
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        raise _invalid(f"{where}: ({lat}, {lon}) is outside WGS84 lat/lon ranges")
    service_s = _number(item, "service_s", where, 0.0)
    if not 0.0 <= service_s <= MAX_SERVICE_S:
        raise _invalid(f"{where}.service_s: from 0 to {MAX_SERVICE_S:g} seconds")
    radius_m = _number(item, "radius_m", where, 50.0)
    if not 0.0 < radius_m <= MAX_RADIUS_M:
        raise _invalid(f"{where}.radius_m: must be above 0 and at most {MAX_RADIUS_M:g}")
    window_start = _time(item, "window_start", where)
    window_end = _time(item, "window_end", where)
    if window_start is not None and window_end is not None and window_end < window_start:
        raise _invalid(f"{where}: window_end is before window_start")
    return Stop(
        id=seq,  # placeholder until the database assigns ids
        seq=seq,
        lat=lat,
        lon=lon,
        name=_text(item, "name", where),
        recipient=_text(item, "recipient", where),
        service_s=service_s,
        radius_m=radius_m,
        planned_arrival=_time(item, "planned_arrival", where),
        window_start=window_start,
        window_end=window_end,
    )


def parse_path(
    value: object, stops: list[Stop], max_points: int | None = None
) -> tuple[tuple[tuple[float, float], ...], bool]:
    """The planned path and whether it is the straight-line stand-in (no path given),
    simplified to at most `max_points` points when given."""
    path, straight_line = _decode_path(value, stops)
    if max_points is not None:
        path = pathcodec.simplified(path, max_points)
    return path, straight_line


def _decode_path(value: object, stops: list[Stop]) -> tuple[tuple[tuple[float, float], ...], bool]:
    try:
        if value is None:
            return pathcodec.route_path(stops, None)
        if isinstance(value, dict) and "polyline" in value:
            unknown_fields(value, frozenset({"polyline", "precision"}), "path")
            precision = value.get("precision", 5)
            if precision not in (5, 6):
                raise _invalid("path.precision: must be 5 or 6")
            text = value["polyline"]
            if not isinstance(text, str):
                raise _invalid("path.polyline: must be an encoded polyline string")
            return pathcodec.from_polyline(text, precision), False
        if isinstance(value, dict | str):
            return pathcodec.decode(value), False
    except pathcodec.PathError as exc:
        raise _invalid(f"path: {exc}") from exc
    raise _invalid('path: a GeoJSON LineString, {"polyline": "..."} or null')


async def create_route(request: Request) -> Response:
    """POST /api/v1/routes → 201 Route JSON."""
    await require_dispatcher(request)
    rt = runtime(request)
    data = await json_object(request, rt.settings.max_body_bytes)
    unknown_fields(data, ROUTE_FIELDS, "body")
    uid = data.get("device")
    if not isinstance(uid, str) or not uid:
        raise _invalid("device: required unique id of a registered device")
    if data.get("planned_start") is None:
        raise _invalid("planned_start: required time")
    planned_start = _time(data, "planned_start", "body")
    assert planned_start is not None
    raw_stops = data.get("stops")
    if not isinstance(raw_stops, list) or not raw_stops:
        raise _invalid("stops: required non-empty array")
    if len(raw_stops) > MAX_STOPS:
        raise _invalid(f"stops: at most {MAX_STOPS}")
    stops = [parse_stop(item, k + 1) for k, item in enumerate(raw_stops)]
    details = [parse_details(item, f"stops[{k}]") for k, item in enumerate(raw_stops)]
    if data.get("path") is None and len(stops) == 1:
        from tracker.api.route_desk import single_stop_path  # (it imports this module)

        path, straight_line = await single_stop_path(request, uid, stops[0])
    else:
        # Decoding, checking and simplifying a long path takes seconds of CPU (a million
        # points: 12 s): in a thread, so the worker keeps answering everyone else meanwhile.
        path, straight_line = await asyncio.to_thread(
            parse_path, data.get("path"), stops, rt.settings.max_path_points
        )
    # Each stop's customer tracking link: shown in this reply only, stored as a digest.
    links, digests, salts = link_keys.issue(rt.settings, len(stops))
    try:
        device = await device_store.device_by_unique_id(rt.pool, uid)
        if device is None:
            raise ApiError(404, "not_found", f"no device {uid!r}")
        body = await routing(rt).create(
            device, planned_start, stops, path, straight_line, datetime.now(UTC), digests, details
        )
        await link_keys.keep(rt, body["id"], salts)
    except RouteInvalid as exc:
        raise _invalid(str(exc)) from exc
    except DB_ERRORS as exc:
        raise unavailable(rt) from exc
    reply = with_tracking_urls(body, links, rt.settings)
    try:
        await rt.notifications.route_created(reply)
    except DB_ERRORS as exc:
        raise unavailable(rt) from exc
    return ORJSONResponse(reply, status_code=201)


async def _authorise(request: Request, route_id: int) -> None:
    """A dispatcher, or the device the route belongs to; 404 for an unknown route."""
    rt = runtime(request)
    who = await principal(request)
    try:
        owner = await store.route_device(rt.pool, route_id)
    except DB_ERRORS as exc:
        raise unavailable(rt) from exc
    if who is None:
        token = bearer(request.headers.get("authorization"))
        if not token:
            raise ApiError(401, "unauthorized", "dispatcher or the route's device token required")
        device = await authenticate_device(rt, token)
        if owner is not None and owner != device.id:
            raise ApiError(403, "forbidden", "this route belongs to another device")
    if owner is None:
        raise ApiError(404, "not_found", f"no route {route_id}")


authorise = _authorise  # for the doorstep endpoints on a route's stops


async def get_route(request: Request) -> Response:
    """GET /api/v1/routes/{id} → Route JSON with its current ETAs."""
    route_id: int = request.path_params["route_id"]
    await _authorise(request, route_id)
    rt = runtime(request)
    try:
        body = await routing(rt).route(route_id)
    except DB_ERRORS as exc:
        raise unavailable(rt) from exc
    if body is None:
        raise ApiError(404, "not_found", f"no route {route_id}")
    if await principal(request) is not None:  # dispatchers see the customer links
        (body,) = await link_keys.with_links(rt, [body])
    return ORJSONResponse(body)


async def current_route(request: Request) -> Response:
    """GET /api/v1/routes/current (device token) → the device's newest active route."""
    rt = runtime(request)
    device = await authenticate_device(rt, bearer(request.headers.get("authorization")))
    try:
        route_id = await store.current_route_id(rt.pool, device.id)
        body = None if route_id is None else await routing(rt).route(route_id)
    except DB_ERRORS as exc:
        raise unavailable(rt) from exc
    if body is None:
        raise ApiError(404, "no_active_route", f"device {device.unique_id} has no active route")
    return ORJSONResponse(body)


async def patch_stop(request: Request) -> Response:
    """PATCH /api/v1/routes/{id}/stops/{stop_id} {status, reason?} → 200 Route JSON."""
    route_id: int = request.path_params["route_id"]
    stop_id: int = request.path_params["stop_id"]
    await _authorise(request, route_id)
    rt = runtime(request)
    data = await json_object(request, 64 * 1024)
    unknown_fields(data, frozenset({"status", "reason"}), "body")
    status = data.get("status")
    if not isinstance(status, str) or status not in SETTABLE:
        allowed = ", ".join(sorted(SETTABLE))
        raise _invalid(f"status: one of {allowed}")
    reason = data.get("reason")
    if reason is not None and (not isinstance(reason, str) or len(reason) > MAX_TEXT):
        raise _invalid(f"reason: a string of at most {MAX_TEXT} characters")
    reason = reason.strip() if reason else None
    if status == StopStatus.FAILED and not reason:
        raise _invalid("reason: required when a stop failed")
    from tracker.api.reports import refuse_unproven  # (reports imports this module)

    await refuse_unproven(request, route_id, stop_id, status)
    try:
        body = await routing(rt).set_stop_status(
            route_id, stop_id, status, reason, datetime.now(UTC)
        )
    except RouteNotFound as exc:
        raise ApiError(404, "not_found", str(exc)) from exc
    except TransitionRefused as exc:
        raise ApiError(409, "invalid_transition", str(exc)) from exc
    except DB_ERRORS as exc:
        raise unavailable(rt) from exc
    return ORJSONResponse(body)
