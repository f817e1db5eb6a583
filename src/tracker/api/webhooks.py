"""Webhook subscriptions and their delivery log (dispatcher or admin).

- `POST /api/v1/webhooks` `{"url", "events": [...], "eta_threshold_s"?, "description"?}` →
  201 with the subscription and its signing `secret` (shown only here).
- `GET /api/v1/webhooks` → `{"webhooks": [...]}` (active ones); `GET /api/v1/webhooks/{id}`.
- `DELETE /api/v1/webhooks/{id}` → 204; its waiting deliveries are cancelled.
- `GET /api/v1/webhooks/{id}/deliveries?status=&limit=` → `{"deliveries": [...]}`, newest
  first, each with its payload and its attempts.
"""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import urlsplit

import orjson
from starlette.requests import Request
from starlette.responses import Response

from tracker.api.body import json_object
from tracker.api.guards import require_dispatcher, runtime, unavailable
from tracker.api.responses import ApiError, ORJSONResponse
from tracker.core import destinations, tokens, webhooks
from tracker.store import webhooks as store
from tracker.store.db import DB_ERRORS

MAX_URL = 2048
MAX_DESCRIPTION = 500
MAX_THRESHOLD_S = 86_400.0
DEFAULT_THRESHOLD_S = 300.0
DEFAULT_LIMIT = 50
MAX_LIMIT = 500
SECRET_PREFIX = "whsec_"


def _invalid(message: str) -> ApiError:
    return ApiError(400, "invalid_request", message)


def webhook_json(row: Any) -> dict[str, Any]:
    """A subscription as the API shows it (never its secret)."""
    return {
        "id": row["id"],
        "url": row["url"],
        "events": list(row["events"]),
        "eta_threshold_s": row["eta_threshold_s"],
        "description": row["description"],
        "active": row["active"],
        "created_at": row["created_at"].isoformat(),
    }


def _iso(value: Any) -> str | None:
    return None if value is None else str(value.isoformat())


def delivery_json(row: dict[str, Any]) -> dict[str, Any]:
    """A delivery with its payload and attempt log."""
    return {
        "id": str(row["public_id"]),
        "event_type": row["event_type"],
        "status": row["status"],
        "attempts": row["attempts"],
        "created_at": _iso(row["created_at"]),
        "next_attempt_at": _iso(row["next_attempt_at"]) if row["status"] == "pending" else None,
        "delivered_at": _iso(row["delivered_at"]),
        "last_error": row["last_error"],
        "payload": orjson.loads(row["body"]),
        "attempt_log": [
            {
                "attempt": a["attempt"],
                "started_at": _iso(a["started_at"]),
                "duration_ms": a["duration_ms"],
                "status_code": a["status_code"],
                "error": a["error"],
            }
            for a in row["attempt_log"]
        ],
    }


def _url(value: object) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_URL:
        raise _invalid(f"url: required http(s) URL of at most {MAX_URL} characters")
    try:
        parts = urlsplit(value)
    except ValueError as exc:  # e.g. an unclosed IPv6 bracket
        raise _invalid(f"url: {exc}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _invalid("url: must be an absolute http:// or https:// URL")
    return value


async def _destination(request: Request, url: str) -> None:
    """Refuse a receiver the server must not reach (loopback, private, link-local...: any
    spelling, judged by what the host resolves to) unless TRACKER_WEBHOOK_ALLOW_CIDRS
    allows it, and credentials in the URL."""
    try:
        await runtime(request).webhooks.check(url)
    except destinations.Refused as exc:
        if exc.reason == destinations.BLOCKED_USERINFO:
            raise _invalid("url: must not hold a user name or password (user:pw@)") from exc
        if exc.reason == destinations.BLOCKED_URL:
            raise _invalid(f"url: {exc.detail}") from exc
        raise _invalid(
            f"url: {exc.detail or 'this host'} is not a public address; receivers inside "
            "private networks need TRACKER_WEBHOOK_ALLOW_CIDRS"
        ) from exc


def _events(value: object) -> list[str]:
    allowed = ", ".join(sorted(webhooks.SUBSCRIBABLE))
    if not isinstance(value, list) or not value:
        raise _invalid(f"events: required non-empty array of {allowed}")
    # isinstance first: an object or array in the list is unhashable.
    unknown = [e for e in value if not isinstance(e, str) or e not in webhooks.SUBSCRIBABLE]
    if unknown:
        raise _invalid(f"events: unknown {unknown!r}; one or more of {allowed}")
    return sorted(set(value))


def _threshold(value: object) -> float:
    if value is None:
        return DEFAULT_THRESHOLD_S
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _invalid("eta_threshold_s: must be a number")
    if not 0.0 <= value <= MAX_THRESHOLD_S:
        raise _invalid(f"eta_threshold_s: from 0 to {MAX_THRESHOLD_S:g} seconds")
    return float(value)


async def create_webhook(request: Request) -> Response:
    """POST /api/v1/webhooks → 201 with the signing secret."""
    await require_dispatcher(request)
    rt = runtime(request)
    data = await json_object(request)
    url = _url(data.get("url"))
    await _destination(request, url)
    events = _events(data.get("events"))
    threshold = _threshold(data.get("eta_threshold_s"))
    description = data.get("description") or ""
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
        raise _invalid(f"description: a string of at most {MAX_DESCRIPTION} characters")
    secret = SECRET_PREFIX + tokens.new_token()
    try:
        row = await store.create(rt.pool, url, secret, events, threshold, description.strip())
    except DB_ERRORS as exc:
        raise unavailable(rt) from exc
    return ORJSONResponse({**webhook_json(row), "secret": secret}, status_code=201)


async def list_webhooks(request: Request) -> Response:
    """GET /api/v1/webhooks → the active subscriptions."""
    await require_dispatcher(request)
    rt = runtime(request)
    try:
        rows = await store.active(rt.pool)
    except DB_ERRORS as exc:
        raise unavailable(rt) from exc
    return ORJSONResponse({"webhooks": [webhook_json(r) for r in rows]})


async def _existing(request: Request) -> Any:
    rt = runtime(request)
    webhook_id: int = request.path_params["webhook_id"]
    try:
        row = await store.find(rt.pool, webhook_id)
    except DB_ERRORS as exc:
        raise unavailable(rt) from exc
    if row is None:
        raise ApiError(404, "not_found", f"no webhook {webhook_id}")
    return row


async def get_webhook(request: Request) -> Response:
    """GET /api/v1/webhooks/{id} → one subscription (also a deleted one)."""
    await require_dispatcher(request)
    return ORJSONResponse(webhook_json(await _existing(request)))


async def delete_webhook(request: Request) -> Response:
    """DELETE /api/v1/webhooks/{id} → 204."""
    await require_dispatcher(request)
    rt = runtime(request)
    webhook_id: int = request.path_params["webhook_id"]
    try:
        deleted = await store.delete(rt.pool, webhook_id)
    except DB_ERRORS as exc:
        raise unavailable(rt) from exc
    if not deleted:
        raise ApiError(404, "not_found", f"no active webhook {webhook_id}")
    return Response(status_code=204)


async def list_deliveries(request: Request) -> Response:
    """GET /api/v1/webhooks/{id}/deliveries?status=&limit= → deliveries with attempts."""
    await require_dispatcher(request)
    rt = runtime(request)
    row = await _existing(request)
    status = request.query_params.get("status") or None
    if status is not None and status not in store.STATUSES:
        raise _invalid(f"status: one of {', '.join(sorted(store.STATUSES))}")
    try:
        limit = int(request.query_params.get("limit", DEFAULT_LIMIT))
    except ValueError as exc:
        raise _invalid("limit: must be an integer") from exc
    if not 1 <= limit <= MAX_LIMIT:
        raise _invalid(f"limit: from 1 to {MAX_LIMIT}")
    try:
        rows = await store.deliveries(rt.pool, row["id"], status, limit)
    except DB_ERRORS as exc:
        raise unavailable(rt) from exc
    return ORJSONResponse({"deliveries": [delivery_json(r) for r in rows]})
