"""Vehicles API (dispatcher or admin): `POST/GET /api/v1/vehicles`, `GET/PATCH/DELETE
/api/v1/vehicles/{id}`. `GET ?active=true|false` filters; a vehicle names its device by the
device's public id and its depots by id (an unknown one is a 400 naming the field)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from tracker.api.body import json_object
from tracker.api.checks import choice_param, invalid, known_params
from tracker.api.guards import require_dispatcher, runtime, unavailable
from tracker.api.responses import ApiError, ORJSONResponse
from tracker.planning.fields import Invalid
from tracker.planning.fleet import vehicle_fields, vehicle_json
from tracker.store import fleet as store
from tracker.store.db import DB_ERRORS


def _vehicle_id(request: Request) -> int:
    value: int = request.path_params["vehicle_id"]
    return value


def _unknown(exc: store.UnknownReference) -> ApiError:
    name = exc.args[0]
    what = "device" if name == "device" else "depot"
    return ApiError(400, "invalid_request", f"{name}: no such {what}")


async def create_vehicle(request: Request) -> Response:
    """POST /api/v1/vehicles → 201."""
    await require_dispatcher(request)
    rt = runtime(request)
    data = await json_object(request)
    try:
        values = vehicle_fields(data)
    except Invalid as exc:
        raise invalid(exc) from exc
    try:
        vehicle = await store.insert_vehicle(rt.pool, values)
    except store.UnknownReference as exc:
        raise _unknown(exc) from exc
    except DB_ERRORS as exc:
        raise unavailable(rt) from exc
    return ORJSONResponse(vehicle_json(vehicle), status_code=201)


async def list_vehicles(request: Request) -> Response:
    """GET /api/v1/vehicles[?active=true|false]."""
    await require_dispatcher(request)
    rt = runtime(request)
    known_params(request, ("active",))
    active = None
    if "active" in request.query_params:
        active = choice_param(request, "active", ("true", "false"), "true") == "true"
    try:
        vehicles = await store.list_vehicles(rt.pool, active)
    except DB_ERRORS as exc:
        raise unavailable(rt) from exc
    return ORJSONResponse({"vehicles": [vehicle_json(v) for v in vehicles]})


async def get_vehicle(request: Request) -> Response:
    """GET /api/v1/vehicles/{id}."""
    await require_dispatcher(request)
    rt = runtime(request)
    try:
        vehicle = await store.get_vehicle(rt.pool, _vehicle_id(request))
    except DB_ERRORS as exc:
        raise unavailable(rt) from exc
    if vehicle is None:
        raise ApiError(404, "not_found", "no such vehicle")
    return ORJSONResponse(vehicle_json(vehicle))


async def patch_vehicle(request: Request) -> Response:
    """PATCH /api/v1/vehicles/{id}: change any field (null clears a nullable one)."""
    await require_dispatcher(request)
    rt = runtime(request)
    data = await json_object(request)
    try:
        values = vehicle_fields(data, partial=True)
    except Invalid as exc:
        raise invalid(exc) from exc
    try:
        vehicle = await store.update_vehicle(rt.pool, _vehicle_id(request), values)
    except store.UnknownReference as exc:
        raise _unknown(exc) from exc
    except DB_ERRORS as exc:
        raise unavailable(rt) from exc
    if vehicle is None:
        raise ApiError(404, "not_found", "no such vehicle")
    return ORJSONResponse(vehicle_json(vehicle))


async def delete_vehicle(request: Request) -> Response:
    """DELETE /api/v1/vehicles/{id} → 204; 409 while plans or routes refer to it."""
    await require_dispatcher(request)
    rt = runtime(request)
    try:
        deleted = await store.delete_vehicle(rt.pool, _vehicle_id(request))
    except store.InUse as exc:
        raise ApiError(409, "conflict", "plans refer to this vehicle; deactivate it") from exc
    except DB_ERRORS as exc:
        raise unavailable(rt) from exc
    if not deleted:
        raise ApiError(404, "not_found", "no such vehicle")
    return Response(status_code=204)
