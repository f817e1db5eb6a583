"""POST /api/v1/positions: the native ingest endpoint, the server's hot path.

The app answers it before Starlette's middleware and router (`app.TrackerApp`), as a plain
ASGI handler: Starlette's per-request objects, router and exception layers cost about a
third of the CPU of a single-ping request, and this endpoint carries nearly all traffic.
Everything else goes through Starlette as usual.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import orjson
from starlette.types import Message, Receive, Scope, Send

from tracker import metrics
from tracker.api import throttle
from tracker.api.guards import unavailable
from tracker.api.responses import ApiError
from tracker.api.runtime import Runtime
from tracker.api.slowbody import AUTHENTICATED
from tracker.protocols import native
from tracker.protocols.base import Decoded, ProtocolError
from tracker.protocols.base import Request as ProtoRequest
from tracker.services.auth import bearer
from tracker.services.ingest import IngestResult
from tracker.store.db import DB_ERRORS
from tracker.store.devices import Device
from tracker.store.writer import StoreRefused, StoreUnavailable

log = logging.getLogger(__name__)

PATH = "/api/v1/positions"


async def authenticate_device(rt: Runtime, token: str | None) -> Device:
    """The enabled device behind a device token, else 401/403 (503 if the DB is down)."""
    if not token:
        raise ApiError(401, "unauthorized", "device token required (Authorization: Bearer ...)")
    try:
        device = await rt.auth.device(token)
    except DB_ERRORS as exc:
        raise unavailable(rt) from exc
    if device is None:
        raise ApiError(401, "unknown_device", "no device has this token")
    if not device.enabled:
        raise ApiError(403, "device_disabled", f"device {device.unique_id} is disabled")
    return device


async def store(
    rt: Runtime, device: Device, decoded: Decoded, protocol: str = "native"
) -> IngestResult:
    """Ingest decoded fixes for an authenticated device; 503 when nothing could commit.
    `protocol` (one of `metrics.PROTOCOLS`) labels the pings in the metrics."""
    counters = metrics.INGEST[protocol]
    received = len(decoded.fixes) + len(decoded.rejects)
    try:
        result = await rt.ingest.ingest(device, decoded, datetime.now(UTC))
    except StoreUnavailable as exc:
        metrics.count_pings(counters, received, 0, 0)
        raise unavailable(rt) from exc
    except StoreRefused as exc:
        metrics.count_pings(counters, received, 0, 0)
        raise ApiError(422, "refused", "the database refused these pings' values") from exc
    metrics.count_pings(counters, received, result.stored, result.duplicates)
    if result.rejects:
        metrics.count_rejects(result.rejects)
    return result


async def native_device(rt: Runtime, headers: dict[bytes, bytes]) -> Device:
    """The request's enabled device, from its headers alone (415/401/403 otherwise)."""
    ctype = headers.get(b"content-type", b"").split(b";", 1)[0].strip().lower()
    if ctype != b"application/json":
        raise ApiError(415, "unsupported_media_type", "Content-Type must be application/json")
    auth = headers.get(b"authorization")
    return await authenticate_device(rt, bearer(auth.decode("latin-1") if auth else None))


async def ingest_native(
    rt: Runtime, headers: dict[bytes, bytes], body: bytes, device: Device | None = None
) -> tuple[int, dict[str, Any]]:
    """One ping or `{"positions": [...]}`: 202 once committed, with per-ping outcomes.
    `device` when the caller was authenticated already (from the headers)."""
    if device is None:
        device = await native_device(rt, headers)
    throttle.check_device(rt, device)
    try:
        decoded = native.decode(
            ProtoRequest(method="POST", body=body),
            datetime.now(UTC),
            rt.settings.max_batch,
            device.id,
        )
    except ProtocolError as exc:
        raise ApiError(exc.status, "invalid_request", exc.message) from exc
    if decoded.device_key is not None and decoded.device_key != device.unique_id:
        raise ApiError(403, "wrong_device", "this token belongs to another device")
    result = await store(rt, device, decoded)
    if result.stored == 0 and result.duplicates == 0:
        first = result.rejects[0].reason if result.rejects else "no pings"
        return 422, {"error": "invalid_ping", "message": first, **result.as_json()}
    return 202, result.as_json()


def is_native_ingest(scope: Scope) -> bool:
    """Whether a request is for this endpoint (checked before Starlette's routing)."""
    return bool(scope["type"] == "http" and scope["path"] == PATH and scope["method"] == "POST")


class Endpoint:
    """The same handler as a router endpoint (an ASGI app, not a request function):
    `TrackerApp` answers POSTs before routing, so the router's copy is what turns the
    path's other methods into 405."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await serve(scope["app"].state.runtime, scope, receive, send)


async def serve(
    rt: Runtime, scope: Scope, receive: Receive, send: Send, request_id: str | None = None
) -> int:
    """Answer POST /api/v1/positions as a plain ASGI handler; returns the status sent.
    A `request_id` is sent back as `X-Request-ID` (when no middleware adds it)."""
    status: int
    payload: dict[str, Any]
    extra: list[tuple[bytes, bytes]] = []
    if request_id is not None:
        extra.append((b"x-request-id", request_id.encode("ascii")))
    try:
        headers = dict(scope["headers"])
        # Who is posting is known before the body is read: an unknown token's body is never
        # received, and a device's takes no anonymous slot (slowbody).
        device = await native_device(rt, headers)
        scope[AUTHENTICATED] = True
        body = await _read_body(receive, headers, rt.settings.max_body_bytes)
        status, payload = await ingest_native(rt, headers, body, device)
    except ApiError as exc:
        metrics.count_refused("native", exc.code)
        status, payload = exc.status, {"error": exc.code, "message": exc.message}
        extra += [(k.lower().encode(), v.encode()) for k, v in (exc.headers or {}).items()]
    except Exception:
        log.exception("unhandled error on POST %s", PATH)
        metrics.count_refused("native", "internal_error")
        status, payload = 500, {"error": "internal_error", "message": "internal server error"}
    content = orjson.dumps(payload)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(content)).encode()),
                *extra,
            ],
        }
    )
    await send({"type": "http.response.body", "body": content})
    return status


async def _read_body(receive: Receive, headers: dict[bytes, bytes], limit: int) -> bytes:
    declared = headers.get(b"content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ApiError(400, "bad_request", "invalid Content-Length")
        if int(declared) > limit:
            raise ApiError(413, "body_too_large", f"body exceeds {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            raise ApiError(400, "bad_request", "client disconnected")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "body_too_large", f"body exceeds {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)
