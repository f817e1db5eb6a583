"""Depots API (dispatcher or admin): `POST/GET /api/v1/depots`, `GET/PATCH/DELETE
/api/v1/depots/{id}`. A depot some vehicle starts or ends at cannot be deleted (409)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from tracker.api.body import json_object
from tracker.api.checks import invalid, known_params
from tracker.api.guards import require_dispatcher, runtime, unavailable
from tracker.api.responses import ApiError, ORJSONResponse
from tracker.planning.fields import Invalid
from tracker.planning.fleet import depot_fields, depot_json
from tracker.store import fleet as store
from tracker.store.db import DB_ERRORS


def _depot_id(request: Request) -> int:
    value: int = request.path_params["depot_id"]
    return value


async def create_depot(request: Request) -> Response:
    """POST /api/v1/depots {name, lat, lon, address?} → 201."""
    await require_dispatcher(request)
    rt = runtime(request)
    data = await json_object(request)
    try:
        values = depot_fields(data)
    except Invalid as exc:
        raise invalid(exc) from exc
    try:
        depot = await store.insert_depot(rt.pool, values)
    except DB_ERRORS as exc:
        raise unavailable(rt) from exc
    return ORJSONResponse(depot_json(depot), status_code=201)


async def list_depots(request: Request) -> Response:
    """GET /api/v1/depots: every depot by name."""
    await require_dispatcher(request)
    rt = runtime(request)
    known_params(request, ())
    try:
        depots = await store.list_depots(rt.pool)
    except DB_ERRORS as exc:
        raise unavailable(rt) from exc
    return ORJSONResponse({"depots": [depot_json(d) for d in depots]})


async def get_depot(request: Request) -> Response:
    """GET /api/v1/depots/{id}."""
    await require_dispatcher(request)
    rt = runtime(request)
    try:
        depot = await store.get_depot(rt.pool, _depot_id(request))
    except DB_ERRORS as exc:
        raise unavailable(rt) from exc
    if depot is None:
        raise ApiError(404, "not_found", "no such depot")
    return ORJSONResponse(depot_json(depot))


async def patch_depot(request: Request) -> Response:
    """PATCH /api/v1/depots/{id}: change name, address or location (lat and lon together)."""
    await require_dispatcher(request)
    rt = runtime(request)
    data = await json_object(request)
    try:
        values = depot_fields(data, partial=True)
    except Invalid as exc:
        raise invalid(exc) from exc
    try:
        depot = await store.update_depot(rt.pool, _depot_id(request), values)
    except DB_ERRORS as exc:
        raise unavailable(rt) from exc
    if depot is None:
        raise ApiError(404, "not_found", "no such depot")
    return ORJSONResponse(depot_json(depot))


async def delete_depot(request: Request) -> Response:
    """DELETE /api/v1/depots/{id} → 204; 409 while vehicles use it."""
    await require_dispatcher(request)
    rt = runtime(request)
    try:
        deleted = await store.delete_depot(rt.pool, _depot_id(request))
    except store.InUse as exc:
        raise ApiError(409, "conflict", "vehicles start or end at this depot") from exc
    except DB_ERRORS as exc:
        raise unavailable(rt) from exc
    if not deleted:
        raise ApiError(404, "not_found", "no such depot")
    return Response(status_code=204)
