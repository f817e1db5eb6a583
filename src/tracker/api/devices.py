"""Device administration and reads: list with last positions, tracks as GeoJSON."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from tracker.api.body import json_object
from tracker.api.guards import require_admin, require_dispatcher, runtime, unavailable
from tracker.api.responses import ApiError, ORJSONResponse
from tracker.core.timeparse import TimeFormatError, parse_time
from tracker.store import devices as store
from tracker.store.db import DB_ERRORS

MAX_TRACK_POINTS = 100_000


def device_json(row: Any) -> dict[str, Any]:
    """Public JSON of a device row joined with its last position."""
    return {
        "id": row["unique_id"],
        "name": row["name"],
        "enabled": row["enabled"],
        "last_position": store.last_position_json(row),
    }


async def create_device(request: Request) -> Response:
    """POST /api/v1/devices {name, unique_id?} → 201 with the token, shown only here."""
    await require_admin(request)
    rt = runtime(request)
    data = await json_object(request)
    name = data.get("name")
    uid = data.get("unique_id")
    if not isinstance(name, str) or not name.strip():
        raise ApiError(400, "invalid_request", "name: required non-empty string")
    if uid is not None and (not isinstance(uid, str) or not uid.strip() or len(uid) > 128):
        raise ApiError(400, "invalid_request", "unique_id: must be a non-empty string")
    try:
        device, token = await store.add_device(rt.pool, name.strip(), uid)
    except store.DuplicateDevice as exc:
        raise ApiError(409, "conflict", f"device {exc} already exists") from exc
    except DB_ERRORS as exc:
        raise unavailable(rt) from exc
    from tracker.api.device_setup import setup_links  # (workspace: the apps' setup links)

    return ORJSONResponse(
        {
            "id": device.unique_id,
            "name": device.name,
            "enabled": True,
            "token": token,
            "setup": setup_links(rt.settings, device.unique_id, token),
        },
        status_code=201,
    )


async def update_device(request: Request) -> Response:
    """PATCH /api/v1/devices/{id} {enabled} (admin)."""
    await require_admin(request)
    rt = runtime(request)
    data = await json_object(request)
    enabled = data.get("enabled")
    if not isinstance(enabled, bool):
        raise ApiError(400, "invalid_request", "enabled: must be true or false")
    device = await store.set_enabled(rt.pool, request.path_params["device"], enabled)
    if device is None:
        raise ApiError(404, "not_found", "no such device")
    # Every instance forgets the device's cached token and closes what it opened.
    await rt.auth.device_changed(device.id)
    return ORJSONResponse({"id": device.unique_id, "name": device.name, "enabled": enabled})


async def list_devices(request: Request) -> Response:
    """GET /api/v1/devices: every device with its last position."""
    await require_dispatcher(request)
    rt = runtime(request)
    try:
        rows = await store.devices_with_last(rt.pool)
    except DB_ERRORS as exc:
        raise unavailable(rt) from exc
    return ORJSONResponse({"devices": [device_json(r) for r in rows]})


def _time_param(request: Request, name: str, default: datetime) -> datetime:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        return parse_time(raw)
    except TimeFormatError as exc:
        raise ApiError(400, "invalid_request", f"{name}: {exc}") from exc


async def device_positions(request: Request) -> Response:
    """GET /api/v1/devices/{id}/positions?from=&to=&limit=: the track as a GeoJSON
    FeatureCollection of points, oldest first."""
    await require_dispatcher(request)
    rt = runtime(request)
    now = datetime.now(UTC)
    start = _time_param(request, "from", now - timedelta(days=1))
    end = _time_param(request, "to", now + timedelta(seconds=rt.settings.max_future_s))
    if end <= start:
        raise ApiError(400, "invalid_request", "to must be after from")
    try:
        limit = int(request.query_params.get("limit", "10000"))
    except ValueError as exc:
        raise ApiError(400, "invalid_request", "limit: must be an integer") from exc
    if not 1 <= limit <= MAX_TRACK_POINTS:
        raise ApiError(400, "invalid_request", f"limit: between 1 and {MAX_TRACK_POINTS}")
    try:
        device = await store.device_by_unique_id(rt.pool, request.path_params["device"])
        if device is None:
            raise ApiError(404, "not_found", "no such device")
        rows = await store.track(rt.pool, device.id, start, end, limit)
    except DB_ERRORS as exc:
        raise unavailable(rt) from exc
    features = [
        {
            "type": "Feature",
            "geometry": {"type": "Point", "coordinates": [r["lon"], r["lat"]]},
            "properties": {
                "time": r["fix_time"].isoformat(),
                "received_at": r["received_at"].isoformat(),
                "speed": r["speed"],
                "course": r["course"],
                "accuracy": r["accuracy"],
                "altitude": r["altitude"],
                "attributes": r["attributes"],
            },
        }
        for r in rows
    ]
    return ORJSONResponse(
        {"type": "FeatureCollection", "device": device.unique_id, "features": features}
    )
