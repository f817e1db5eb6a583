"""The dispatcher's side of the doorstep: customer messages, templates, reschedule requests
and ratings.

- `GET /api/v1/messages?route_id=&stop_id=&status=&limit=`: messages with their status.
- `GET /api/v1/message-templates`: the company's templates and the built-in ones.
- `PUT /api/v1/message-templates/{kind}/{channel}/{language}` `{"subject", "body"}`;
  `DELETE` goes back to the built-in one.
- `GET /api/v1/reschedules?status=`; `POST /api/v1/reschedules/{id}` `{"decision":
  "confirm"|"decline"}` (a confirmed window becomes the stop's window and the customer is
  told).
- `GET /api/v1/ratings`: the customers' ratings, newest first.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from tracker.api.body import json_object
from tracker.api.customer import publish_route
from tracker.api.guards import require_dispatcher, runtime, unavailable
from tracker.api.paths import IdConvertor  # noqa: F401 (registers {name:id})
from tracker.api.responses import ApiError, ORJSONResponse
from tracker.api.stopfields import LANGUAGE_RE, unknown_fields
from tracker.core import notices
from tracker.store import messages as store
from tracker.store import proofs as proof_store
from tracker.store.db import DB_ERRORS

_ID = re.compile(r"[1-9][0-9]{0,17}")


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()}


def _query_id(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    if not _ID.fullmatch(raw):
        raise ApiError(400, "invalid_request", f"{name}: a positive whole number")
    return int(raw)


async def list_messages(request: Request) -> Response:
    """GET /api/v1/messages → {"messages": [...]}."""
    await require_dispatcher(request)
    rt = runtime(request)
    status = request.query_params.get("status")
    if status is not None and status not in store.STATUSES:
        known = ", ".join(sorted(store.STATUSES))
        raise ApiError(400, "invalid_request", f"status: one of {known}")
    limit_raw = request.query_params.get("limit", "100")
    if not limit_raw.isdigit() or not 1 <= int(limit_raw) <= 1000:
        raise ApiError(400, "invalid_request", "limit: from 1 to 1000")
    try:
        rows = await store.listing(
            rt.pool,
            _query_id(request, "route_id"),
            _query_id(request, "stop_id"),
            status,
            int(limit_raw),
        )
    except DB_ERRORS as exc:
        raise unavailable(rt) from exc
    return ORJSONResponse({"messages": [_jsonable(r) for r in rows]})


async def list_templates(request: Request) -> Response:
    """GET /api/v1/message-templates → {"templates": [...], "defaults": [...]}."""
    await require_dispatcher(request)
    rt = runtime(request)
    try:
        rows = await store.templates(rt.pool)
    except DB_ERRORS as exc:
        raise unavailable(rt) from exc
    defaults = [
        {"kind": k, "channel": c, "language": lang, "subject": t[0], "body": t[1]}
        for lang, table in notices.DEFAULTS.items()
        for (k, c), t in table.items()
    ]
    return ORJSONResponse(
        {
            "templates": [_jsonable(r) for r in rows],
            "defaults": defaults,
            "placeholders": list(notices.PLACEHOLDERS),
        }
    )


def _template_key(request: Request) -> tuple[str, str, str]:
    kind = request.path_params["kind"]
    channel = request.path_params["channel"]
    language = request.path_params["language"]
    if kind not in notices.KINDS:
        raise ApiError(404, "not_found", f"kind: one of {', '.join(notices.KINDS)}")
    if channel not in notices.CHANNELS:
        raise ApiError(404, "not_found", "channel: email or sms")
    if not LANGUAGE_RE.fullmatch(language):
        raise ApiError(404, "not_found", "language: a tag such as en or de")
    return kind, channel, language


async def put_template(request: Request) -> Response:
    """PUT /api/v1/message-templates/{kind}/{channel}/{language} → 200 the template."""
    await require_dispatcher(request)
    rt = runtime(request)
    kind, channel, language = _template_key(request)
    data = await json_object(request, 32 * 1024)
    unknown_fields(data, frozenset({"subject", "body"}), "body")
    subject, body = data.get("subject", ""), data.get("body")
    if not isinstance(subject, str) or len(subject) > 200:
        raise ApiError(400, "invalid_request", "subject: a string of at most 200 characters")
    if not isinstance(body, str) or not body.strip() or len(body) > 5000:
        raise ApiError(400, "invalid_request", "body: non-empty, at most 5000 characters")
    if channel == "email" and not subject.strip():
        raise ApiError(400, "invalid_request", "subject: required for e-mail")
    for name, text in (("subject", subject), ("body", body)):
        try:
            notices.check_template(text)
        except ValueError as exc:
            raise ApiError(400, "invalid_request", f"{name}: {exc}") from exc
    try:
        await store.put_template(rt.pool, kind, channel, language, subject, body)
    except DB_ERRORS as exc:
        raise unavailable(rt) from exc
    return ORJSONResponse(
        {"kind": kind, "channel": channel, "language": language, "subject": subject, "body": body}
    )


async def delete_template(request: Request) -> Response:
    """DELETE /api/v1/message-templates/{kind}/{channel}/{language} → 204."""
    await require_dispatcher(request)
    rt = runtime(request)
    key = _template_key(request)
    try:
        found = await store.delete_template(rt.pool, *key)
    except DB_ERRORS as exc:
        raise unavailable(rt) from exc
    if not found:
        raise ApiError(404, "not_found", "no such template (the built-in one is in use)")
    return Response(status_code=204)


async def list_reschedules(request: Request) -> Response:
    """GET /api/v1/reschedules?status= → {"requests": [...]}."""
    await require_dispatcher(request)
    rt = runtime(request)
    status = request.query_params.get("status")
    if status is not None and status not in ("pending", "confirmed", "declined"):
        raise ApiError(400, "invalid_request", "status: pending, confirmed or declined")
    try:
        rows = await proof_store.reschedule_requests(rt.pool, status)
    except DB_ERRORS as exc:
        raise unavailable(rt) from exc
    return ORJSONResponse({"requests": [_jsonable(r) for r in rows]})


async def decide_reschedule(request: Request) -> Response:
    """POST /api/v1/reschedules/{id} {"decision"} → 200 the request."""
    await require_dispatcher(request)
    rt = runtime(request)
    request_id: int = request.path_params["request_id"]
    data = await json_object(request, 1024)
    unknown_fields(data, frozenset({"decision"}), "body")
    decision = data.get("decision")
    if decision not in ("confirm", "decline"):
        raise ApiError(400, "invalid_request", "decision: confirm or decline")
    try:
        async with rt.pool.acquire() as conn, conn.transaction():
            row = await proof_store.decide_reschedule(conn, request_id, decision == "confirm")
            if row is not None and decision == "confirm":
                await rt.notifications.rescheduled(conn, row["stop_id"])
    except DB_ERRORS as exc:
        raise unavailable(rt) from exc
    if row is None:
        raise ApiError(404, "not_found", f"no pending reschedule request {request_id}")
    await publish_route(rt, row["route_id"])
    return ORJSONResponse(_jsonable(dict(row)))


async def list_ratings(request: Request) -> Response:
    """GET /api/v1/ratings → {"ratings": [...]}."""
    await require_dispatcher(request)
    rt = runtime(request)
    try:
        rows = await proof_store.ratings(rt.pool)
    except DB_ERRORS as exc:
        raise unavailable(rt) from exc
    return ORJSONResponse({"ratings": [_jsonable(r) for r in rows]})


TEMPLATE_PATH = "/api/v1/message-templates/{kind}/{channel}/{language}"
ROUTES: list[BaseRoute] = [
    Route("/api/v1/messages", list_messages, methods=["GET"]),
    Route("/api/v1/message-templates", list_templates, methods=["GET"]),
    Route(TEMPLATE_PATH, put_template, methods=["PUT"]),
    Route(TEMPLATE_PATH, delete_template, methods=["DELETE"]),
    Route("/api/v1/reschedules", list_reschedules, methods=["GET"]),
    Route("/api/v1/reschedules/{request_id:id}", decide_reschedule, methods=["POST"]),
    Route("/api/v1/ratings", list_ratings, methods=["GET"]),
]
