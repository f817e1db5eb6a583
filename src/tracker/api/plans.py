"""Plans API (dispatcher): propose a day's routes with VROOM, read a proposal, dispatch it
as live routes, and re-plan live routes during the day.

- `POST /api/v1/plans` `{"date", "vehicles"?: [id | {vehicle}], "orders"?: [id]}` → 201
  the proposal (default vehicles: every active one; default orders: the date's unplanned).
- `GET /api/v1/plans/{id}` → the proposal, with `route_id`s once dispatched.
- `POST /api/v1/plans/{id}/move` `{"order_id", "vehicle": id | name | null, "position"?}` →
  the proposal edited before dispatch, its changed routes re-evaluated (violations shown).
- `POST /api/v1/plans/{id}/dispatch` → 201 `{"plan", "routes": [Route JSON]}` (each stop's
  customer tracking link is in this reply only).
- `POST /api/v1/replan/insert` `{"order_id", "routes"?: [route id]}` → the route it joined.
- `POST /api/v1/replan/reoptimise` `{"route_id"}` → the route, its remaining stops re-ordered.
- `POST /api/v1/replan/move` `{"stops": [stop id], "route_id"}` → every route changed.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tracker.api.body import json_object
from tracker.api.guards import require_dispatcher, runtime, unavailable
from tracker.api.paths import IdConvertor  # noqa: F401 (registers {name:id})
from tracker.api.responses import ApiError, ORJSONResponse
from tracker.api.tracking import with_tracking_urls
from tracker.planning.fields import Invalid
from tracker.planning.fleet import vehicle_fields
from tracker.planning.model import Vehicle
from tracker.services.planning import PlanConflict, PlanningService, PlanNotFound, PlanRefused
from tracker.store import orders as order_store
from tracker.store.db import DB_ERRORS

MAX_VEHICLES = 500
MAX_ORDERS = 5000
MAX_STOPS = 1000
MAX_ID = 2**63 - 1


def _invalid(message: str) -> ApiError:
    return ApiError(400, "invalid_request", message)


def _only(data: dict[str, Any], allowed: tuple[str, ...]) -> None:
    for key in data:
        if key not in allowed:
            raise _invalid(f"{key}: unknown field (allowed: {', '.join(allowed)})")


def _id(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ID:
        raise _invalid(f"{where}: must be a positive integer id")
    return value


def _ids(value: object, where: str, most: int, required: bool = False) -> list[int] | None:
    if value is None and not required:
        return None
    if not isinstance(value, list) or (required and not value):
        raise _invalid(f"{where}: must be a {'non-empty ' if required else ''}list of ids")
    if len(value) > most:
        raise _invalid(f"{where}: at most {most}")
    ids = [_id(v, f"{where}[{k}]") for k, v in enumerate(value)]
    if len(set(ids)) != len(ids):
        raise _invalid(f"{where}: an id is repeated")
    return ids


def _errors(exc: BaseException, rt_unavailable: ApiError) -> ApiError:
    if isinstance(exc, PlanRefused):
        return _invalid(str(exc))
    if isinstance(exc, PlanNotFound):
        return ApiError(404, "not_found", str(exc))
    if isinstance(exc, PlanConflict):
        return ApiError(409, "conflict", str(exc))
    return rt_unavailable


_HANDLED: tuple[type[BaseException], ...] = (PlanRefused, PlanNotFound, PlanConflict, *DB_ERRORS)


async def _vehicles(service: PlanningService, value: object, now: datetime) -> list[Vehicle]:
    if value is None:
        return await service.vehicles(None)
    if not isinstance(value, list) or not value:
        raise _invalid("vehicles: must be a non-empty list of vehicle ids or vehicle objects")
    if len(value) > MAX_VEHICLES:
        raise _invalid(f"vehicles: at most {MAX_VEHICLES}")
    out: list[Vehicle] = []
    stored = [(k, v) for k, v in enumerate(value) if not isinstance(v, dict)]
    ids = [_id(v, f"vehicles[{k}]") for k, v in stored]
    found = (
        dict(zip([k for k, _ in stored], await service.vehicles(ids), strict=True)) if ids else {}
    )
    for k, item in enumerate(value):
        if not isinstance(item, dict):
            out.append(found[k])
            continue
        try:
            fields = vehicle_fields(item)
        except Invalid as exc:
            raise _invalid(f"vehicles[{k}]." + str(exc)) from exc
        device_id = None
        if fields.get("device"):
            device_id = await service.device_id(fields["device"])
            if device_id is None:
                raise _invalid(f"vehicles[{k}].device: no device {fields['device']!r}")
        out.append(service.inline_vehicle(fields, device_id, now))
    return out


async def create_plan(request: Request) -> Response:
    """POST /api/v1/plans → 201 the proposal."""
    await require_dispatcher(request)
    rt = runtime(request)
    data = await json_object(request, rt.settings.max_body_bytes)
    _only(data, ("date", "vehicles", "orders"))
    raw_day = data.get("date")
    if not isinstance(raw_day, str):
        raise _invalid("date: required, YYYY-MM-DD")
    try:
        day = date.fromisoformat(raw_day)
    except ValueError as exc:
        raise _invalid(f"date: {raw_day!r} is not a YYYY-MM-DD date") from exc
    if not 2000 <= day.year <= 2999:
        raise _invalid("date: must be from 2000 to 2999")
    order_ids = _ids(data.get("orders"), "orders", MAX_ORDERS)
    now = datetime.now(UTC)
    service = rt.planning
    try:
        vehicles = await _vehicles(service, data.get("vehicles"), now)
        body = await service.propose(day, vehicles, order_ids, now)
    except _HANDLED as exc:
        raise _errors(exc, unavailable(rt)) from exc
    return ORJSONResponse(body, status_code=201)


async def get_plan(request: Request) -> Response:
    """GET /api/v1/plans/{id} → the stored proposal."""
    await require_dispatcher(request)
    rt = runtime(request)
    try:
        body = await rt.planning.plan(request.path_params["plan_id"])
    except _HANDLED as exc:
        raise _errors(exc, unavailable(rt)) from exc
    return ORJSONResponse(body)


def _vehicle_ref(data: dict[str, Any]) -> int | str | None:
    if "vehicle" not in data:
        raise _invalid("vehicle: required (a vehicle id or name of the plan, or null to unassign)")
    value = data["vehicle"]
    if value is None:
        return None
    if isinstance(value, str):
        if not 1 <= len(value) <= 200:
            raise _invalid("vehicle: a name must have 1 to 200 characters")
        return value
    return _id(value, "vehicle")


async def move_in_plan(request: Request) -> Response:
    """POST /api/v1/plans/{id}/move {"order_id", "vehicle", "position"?} → the edited plan."""
    await require_dispatcher(request)
    rt = runtime(request)
    data = await json_object(request)
    _only(data, ("order_id", "vehicle", "position"))
    order_id = _id(data.get("order_id"), "order_id")
    vehicle = _vehicle_ref(data)
    position = data.get("position")
    if position is not None and (
        isinstance(position, bool)
        or not isinstance(position, int)
        or not 0 <= position <= MAX_STOPS
    ):
        raise _invalid(f"position: must be an integer from 0 to {MAX_STOPS}, or null")
    try:
        body = await rt.planning.move(
            request.path_params["plan_id"], order_id, vehicle, position, datetime.now(UTC)
        )
    except _HANDLED as exc:
        raise _errors(exc, unavailable(rt)) from exc
    return ORJSONResponse(body)


async def dispatch_plan(request: Request) -> Response:
    """POST /api/v1/plans/{id}/dispatch → 201 {"plan", "routes"} (with tracking links)."""
    await require_dispatcher(request)
    rt = runtime(request)
    try:
        plan, made = await rt.planning.dispatch(request.path_params["plan_id"], datetime.now(UTC))
    except _HANDLED as exc:
        raise _errors(exc, unavailable(rt)) from exc
    routes = [with_tracking_urls(d.route, d.tokens, rt.settings) for d in made]
    return ORJSONResponse({"plan": plan, "routes": routes}, status_code=201)


async def insert_order(request: Request) -> Response:
    """POST /api/v1/replan/insert {"order_id", "routes"?} → the route it joined."""
    await require_dispatcher(request)
    rt = runtime(request)
    data = await json_object(request)
    _only(data, ("order_id", "routes"))
    order_id = _id(data.get("order_id"), "order_id")
    route_ids = _ids(data.get("routes"), "routes", MAX_VEHICLES, required="routes" in data)
    try:
        order = await order_store.get_order(rt.pool, order_id)
        if order is None:
            raise PlanNotFound(f"no order {order_id}")
        body = await rt.replanning.insert(order, datetime.now(UTC), route_ids)
    except _HANDLED as exc:
        raise _errors(exc, unavailable(rt)) from exc
    return ORJSONResponse(body)


async def reoptimise_route(request: Request) -> Response:
    """POST /api/v1/replan/reoptimise {"route_id"} → the route with its stops re-ordered."""
    await require_dispatcher(request)
    rt = runtime(request)
    data = await json_object(request)
    _only(data, ("route_id",))
    route_id = _id(data.get("route_id"), "route_id")
    try:
        body = await rt.replanning.reoptimise(route_id, datetime.now(UTC))
    except _HANDLED as exc:
        raise _errors(exc, unavailable(rt)) from exc
    return ORJSONResponse(body)


async def move_stops(request: Request) -> Response:
    """POST /api/v1/replan/move {"stops", "route_id"} → {"routes": [every route changed]}."""
    await require_dispatcher(request)
    rt = runtime(request)
    data = await json_object(request)
    _only(data, ("stops", "route_id"))
    stops = _ids(data.get("stops"), "stops", MAX_STOPS, required=True)
    assert stops is not None
    route_id = _id(data.get("route_id"), "route_id")
    try:
        bodies = await rt.replanning.move(stops, route_id, datetime.now(UTC))
    except _HANDLED as exc:
        raise _errors(exc, unavailable(rt)) from exc
    return ORJSONResponse({"routes": bodies})


ROUTES = [
    Route("/api/v1/plans", create_plan, methods=["POST"]),
    Route("/api/v1/plans/{plan_id:id}", get_plan, methods=["GET"]),
    Route("/api/v1/plans/{plan_id:id}/move", move_in_plan, methods=["POST"]),
    Route("/api/v1/plans/{plan_id:id}/dispatch", dispatch_plan, methods=["POST"]),
    Route("/api/v1/replan/insert", insert_order, methods=["POST"]),
    Route("/api/v1/replan/reoptimise", reoptimise_route, methods=["POST"]),
    Route("/api/v1/replan/move", move_stops, methods=["POST"]),
]
