"""Orders API (dispatcher or admin): create one or a batch, list with filters, read, change,
cancel, and import a CSV file.

- `POST /api/v1/orders` an order object, or `{"orders": [...]}` (all or none) → 201.
- `GET /api/v1/orders?date=&status=&kind=&geocode_status=&q=&limit=&cursor=` → a page by
  id, the total that match and `next_cursor`.
- `GET|PATCH /api/v1/orders/{id}`; PATCH refuses finished orders (409).
- `POST /api/v1/orders/{id}/cancel` → the cancelled order (again: the same answer).
- `POST /api/v1/orders/import` (`text/csv`), see `tracker.api.orders_import`.

Orders given only by an address are stored `pending` and the geocoding service is woken.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from tracker.api.body import json_object
from tracker.api.checks import choice_param, int_param, invalid, known_params
from tracker.api.guards import require_dispatcher, runtime, unavailable
from tracker.api.responses import ApiError, ORJSONResponse
from tracker.api.runtime import Runtime
from tracker.planning.fields import FieldError, Invalid
from tracker.planning.model import GEOCODE_STATUSES, KINDS, PENDING, STATUSES, Order
from tracker.planning.orders import new_order, order_changes, order_json
from tracker.store import orders as store
from tracker.store.db import DB_ERRORS

MAX_BATCH = 1000
MAX_PAGE = 1000
DEFAULT_PAGE = 100
MAX_QUERY = 200
LIST_PARAMS = ("date", "status", "kind", "geocode_status", "q", "limit", "cursor")


def _order_id(request: Request) -> int:
    value: int = request.path_params["order_id"]
    return value


def wake_geocoder(rt: Runtime, orders: list[Order]) -> None:
    """Start geocoding at once when some orders wait for it."""
    if rt.geocoding is not None and any(o.geocode_status == PENDING for o in orders):
        rt.geocoding.wake()


async def store_new(rt: Runtime, batch: list[dict[str, Any]]) -> list[Order]:
    """Insert checked orders in one transaction; 409 naming a taken external id."""
    try:
        async with rt.pool.acquire() as conn, conn.transaction():
            created = await store.insert_orders(conn, batch)
    except store.DuplicateExternalId as exc:
        raise ApiError(409, "conflict", f"external_id {exc.args[0]!r} exists already") from exc
    except DB_ERRORS as exc:
        raise unavailable(rt) from exc
    wake_geocoder(rt, created)
    return created


async def create_orders(request: Request) -> Response:
    """POST /api/v1/orders: one order, or {"orders": [...]} stored together."""
    await require_dispatcher(request)
    rt = runtime(request)
    data = await json_object(request, rt.settings.max_body_bytes)
    geocoder = rt.geocoding is not None
    if "orders" in data:
        items = data["orders"]
        extra = sorted(set(data) - {"orders"})
        if extra:
            raise ApiError(400, "invalid_request", f"{extra[0]}: unknown field")
        if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH:
            raise ApiError(
                400, "invalid_request", f"orders: must be a list of 1 to {MAX_BATCH} orders"
            )
        errors: list[FieldError] = []
        batch: list[dict[str, Any]] = []
        seen: set[str] = set()
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                errors.append(FieldError(f"orders[{i}]", "must be an object"))
                continue
            try:
                values = new_order(item, f"orders[{i}].", geocoder)
            except Invalid as exc:
                errors.extend(exc.errors)
                continue
            external = values.get("external_id")
            if isinstance(external, str):
                if external in seen:
                    errors.append(
                        FieldError(f"orders[{i}].external_id", "repeats an earlier order")
                    )
                seen.add(external)
            batch.append(values)
        if errors:
            raise invalid(Invalid(errors))
        created = await store_new(rt, batch)
        return ORJSONResponse({"orders": [order_json(o) for o in created]}, status_code=201)
    try:
        values = new_order(data, geocoder=geocoder)
    except Invalid as exc:
        raise invalid(exc) from exc
    (order,) = await store_new(rt, [values])
    return ORJSONResponse(order_json(order), status_code=201)


def _filter(request: Request) -> store.OrderFilter:
    q = request.query_params
    day = None
    if "date" in q:
        try:
            day = date.fromisoformat(q["date"])
        except ValueError as exc:
            raise ApiError(400, "invalid_request", "date: must be YYYY-MM-DD") from exc
    status = choice_param(request, "status", STATUSES, "") if "status" in q else None
    kind = choice_param(request, "kind", KINDS, "") if "kind" in q else None
    geo = (
        choice_param(request, "geocode_status", GEOCODE_STATUSES, "")
        if "geocode_status" in q
        else None
    )
    text = q.get("q")
    if text is not None and (len(text) > MAX_QUERY or "\x00" in text):
        raise ApiError(400, "invalid_request", f"q: at most {MAX_QUERY} characters")
    return store.OrderFilter(day, status, kind, geo, text or None)


async def list_orders(request: Request) -> Response:
    """GET /api/v1/orders: a page of the matching orders by id, with the total."""
    await require_dispatcher(request)
    rt = runtime(request)
    known_params(request, LIST_PARAMS)
    filters = _filter(request)
    limit = int_param(request, "limit", DEFAULT_PAGE, 1, MAX_PAGE)
    after = None
    if "cursor" in request.query_params:
        after = int_param(request, "cursor", 0, 0, 2**63 - 1)
    try:
        # One more than asked for: whether there is a next page, without another count.
        page, total = await store.list_orders(rt.pool, filters, limit + 1, after)
    except DB_ERRORS as exc:
        raise unavailable(rt) from exc
    more = len(page) > limit
    page = page[:limit]
    return ORJSONResponse(
        {
            "orders": [order_json(o) for o in page],
            "total": total,
            "next_cursor": str(page[-1].id) if page and more else None,
        }
    )


async def _current(rt: Runtime, order_id: int) -> Order:
    try:
        order = await store.get_order(rt.pool, order_id)
    except DB_ERRORS as exc:
        raise unavailable(rt) from exc
    if order is None:
        raise ApiError(404, "not_found", "no such order")
    return order


async def get_order(request: Request) -> Response:
    """GET /api/v1/orders/{id}."""
    await require_dispatcher(request)
    rt = runtime(request)
    return ORJSONResponse(order_json(await _current(rt, _order_id(request))))


async def patch_order(request: Request) -> Response:
    """PATCH /api/v1/orders/{id}: change fields of an order not yet finished."""
    await require_dispatcher(request)
    rt = runtime(request)
    data = await json_object(request)
    current = await _current(rt, _order_id(request))
    try:
        values = order_changes(data, current, rt.geocoding is not None)
    except Invalid as exc:
        raise invalid(exc) from exc
    try:
        order = await store.update_order(rt.pool, current.id, values)
    except store.OrderClosed as exc:
        raise ApiError(409, "conflict", f"order {current.id} is {current.status}") from exc
    except store.DuplicateExternalId as exc:
        raise ApiError(409, "conflict", f"external_id {exc.args[0]!r} exists already") from exc
    except DB_ERRORS as exc:
        raise unavailable(rt) from exc
    if order is None:
        raise ApiError(404, "not_found", "no such order")
    wake_geocoder(rt, [order])
    return ORJSONResponse(order_json(order))


async def cancel_order(request: Request) -> Response:
    """POST /api/v1/orders/{id}/cancel: 200 with the cancelled order; 409 once delivered
    or failed."""
    await require_dispatcher(request)
    rt = runtime(request)
    known_params(request, ())
    try:
        order = await store.cancel_order(rt.pool, _order_id(request))
    except store.OrderClosed as exc:
        raise ApiError(409, "conflict", "a delivered or failed order cannot be cancelled") from exc
    except DB_ERRORS as exc:
        raise unavailable(rt) from exc
    if order is None:
        raise ApiError(404, "not_found", "no such order")
    return ORJSONResponse(order_json(order))
