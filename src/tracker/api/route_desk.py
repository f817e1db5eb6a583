"""The dispatcher's route desk: list routes, cancel one, hand one to another van, draw one.

- `GET /api/v1/routes?day=&status=&device=&limit=&offset=` (dispatcher): Route JSON of
  the matching routes, newest planned start first, with `total` for paging.
- `POST /api/v1/routes/{id}/cancel` `{"reason"?}` (dispatcher) → 200 Route JSON. A POST,
  not DELETE: the route stays (its stops, events and history), only its status changes.
  Cancelling again changes nothing; a completed route cannot be cancelled (409).
- `POST /api/v1/routes/{id}/reassign` `{"device"}` (dispatcher) → 200 Route JSON, now the
  other van's; that van's own active route is cancelled (a van drives one route).
- `GET /api/v1/routes/{id}/path` (dispatcher, or the route's device): the planned path
  split where the van has got to (GeoJSON), for drawing the route line.
"""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
from starlette.requests import Request
from starlette.responses import Response

from tracker.api import link_keys
from tracker.api.body import json_object
from tracker.api.fields import (
    choice_param,
    day_param,
    int_param,
    invalid,
    only,
    query_only,
    text_param,
)
from tracker.api.guards import require_dispatcher, runtime, unavailable
from tracker.api.responses import ApiError, ORJSONResponse
from tracker.api.routes import MAX_TEXT, _authorise
from tracker.core import pathcodec
from tracker.core.model import Stop
from tracker.services.route_desk import RouteDesk
from tracker.services.routing import RouteNotFound, TransitionRefused
from tracker.store import devices as device_store
from tracker.store import dispatch_board as board
from tracker.store.db import DB_ERRORS

MAX_PAGE = 200
DEFAULT_PAGE = 50


def desk(request: Request) -> RouteDesk:
    """The instance's route desk (built by the runtime)."""
    return runtime(request).route_desk


async def list_routes(request: Request) -> Response:
    """GET /api/v1/routes → {"routes": [Route…], "total", "limit", "offset"}."""
    await require_dispatcher(request)
    query_only(request, ("day", "status", "device", "limit", "offset"))
    query = board.RouteQuery(
        day=day_param(request, "day"),
        status=choice_param(request, "status", board.STATUSES),
        device=text_param(request, "device"),
        limit=int_param(request, "limit", DEFAULT_PAGE, 1, MAX_PAGE),
        offset=int_param(request, "offset", 0, 0, 1_000_000),
    )
    rt = runtime(request)
    try:
        routes, total = await board.list_routes(rt.pool, query)
        routes = await link_keys.with_links(rt, routes)
    except DB_ERRORS as exc:
        raise unavailable(rt) from exc
    return ORJSONResponse(
        {"routes": routes, "total": total, "limit": query.limit, "offset": query.offset}
    )


async def cancel_route(request: Request) -> Response:
    """POST /api/v1/routes/{id}/cancel {reason?} → 200 Route JSON (status cancelled)."""
    await require_dispatcher(request)
    rt = runtime(request)
    route_id: int = request.path_params["route_id"]
    data = await _optional_body(request)
    only(data, ("reason",))
    reason = data.get("reason")
    if reason is not None and (not isinstance(reason, str) or len(reason) > MAX_TEXT):
        raise invalid(f"reason: a string of at most {MAX_TEXT} characters")
    try:
        body = await desk(request).cancel(
            route_id, reason.strip() if reason else None, datetime.now(UTC)
        )
    except RouteNotFound as exc:
        raise ApiError(404, "not_found", str(exc)) from exc
    except TransitionRefused as exc:
        raise ApiError(409, "invalid_transition", str(exc)) from exc
    except DB_ERRORS as exc:
        raise unavailable(rt) from exc
    return ORJSONResponse(body)


async def reassign_route(request: Request) -> Response:
    """POST /api/v1/routes/{id}/reassign {device} → 200 Route JSON of the moved route."""
    await require_dispatcher(request)
    rt = runtime(request)
    route_id: int = request.path_params["route_id"]
    data = await json_object(request)
    only(data, ("device",))
    uid = data.get("device")
    if not isinstance(uid, str) or not uid or len(uid) > 128:
        raise invalid("device: required unique id of a registered device")
    try:
        device = await device_store.device_by_unique_id(rt.pool, uid)
        if device is None:
            raise ApiError(404, "not_found", f"no device {uid!r}")
        body = await desk(request).reassign(route_id, device, datetime.now(UTC))
    except RouteNotFound as exc:
        raise ApiError(404, "not_found", str(exc)) from exc
    except TransitionRefused as exc:
        raise ApiError(409, "invalid_transition", str(exc)) from exc
    except DB_ERRORS as exc:
        raise unavailable(rt) from exc
    return ORJSONResponse(body)


async def route_path(request: Request) -> Response:
    """GET /api/v1/routes/{id}/path → a FeatureCollection: `planned`, `driven`, `ahead`."""
    route_id: int = request.path_params["route_id"]
    await _authorise(request, route_id)
    rt = runtime(request)
    try:
        row = await board.route_path(rt.pool, route_id)
    except DB_ERRORS as exc:
        raise unavailable(rt) from exc
    if row is None:
        raise ApiError(404, "not_found", f"no route {route_id}")
    features = [
        {"type": "Feature", "properties": {"part": part}, "geometry": orjson.loads(row[part])}
        for part in ("planned", "driven", "ahead")
        if row[part] is not None
    ]
    return ORJSONResponse(
        {
            "type": "FeatureCollection",
            "route_id": route_id,
            "length_m": row["length_m"],
            "driven_m": row["done_m"],
            "straight_line": row["straight_line"],
            "features": features,
        }
    )


async def _optional_body(request: Request) -> dict[str, object]:
    """A JSON object body, or {} when there is none at all."""
    if request.headers.get("content-length") in (None, "0") and not request.headers.get(
        "transfer-encoding"
    ):
        return {}
    return await json_object(request)


async def single_stop_path(
    request: Request, uid: object, stop: Stop
) -> tuple[tuple[tuple[float, float], ...], bool]:
    """The straight-line path of a one-stop route sent without one: from where the van is
    now (its last position) to the stop. ETAs are then straight-line estimates from the
    van's position, as for any route without a path; a van that never reported has no
    start to measure from, so the route needs a path."""
    rt = runtime(request)
    here = None
    if isinstance(uid, str) and uid:
        try:
            here = await board.last_position(rt.pool, uid)
        except DB_ERRORS as exc:
            raise unavailable(rt) from exc
    if here is None:
        raise invalid(
            "path: a route of one stop without a path starts at the van's last position, "
            f"and {uid!r} has not reported one; send a path"
        )
    try:
        return pathcodec._enough((here, (stop.lat, stop.lon))), True
    except pathcodec.PathError as exc:
        raise invalid(f"path: the van is already at the stop ({exc}); send a path") from exc
