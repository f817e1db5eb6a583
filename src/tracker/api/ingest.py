"""POST /api/v1/positions: the native ingest endpoint."""

from __future__ import annotations

from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import Response

from tracker.api.body import read_body, require_json
from tracker.api.guards import runtime, unavailable
from tracker.api.responses import ApiError, ORJSONResponse
from tracker.auth import bearer
from tracker.protocols import native
from tracker.protocols.base import Decoded, ProtocolError
from tracker.protocols.base import Request as ProtoRequest
from tracker.runtime import Runtime
from tracker.service import IngestResult
from tracker.store.db import DB_ERRORS
from tracker.store.devices import Device
from tracker.store.writer import StoreUnavailable


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


async def store(rt: Runtime, device: Device, decoded: Decoded) -> IngestResult:
    """Ingest decoded fixes for an authenticated device; 503 when nothing could commit."""
    try:
        return await rt.ingest.ingest(device, decoded, datetime.now(UTC))
    except StoreUnavailable as exc:
        raise unavailable(rt) from exc


async def post_positions(request: Request) -> Response:
    """One ping or `{"positions": [...]}`; 202 once committed, with per-ping outcomes."""
    rt = runtime(request)
    require_json(request)
    device = await authenticate_device(rt, bearer(request.headers.get("authorization")))
    body = await read_body(request, rt.settings.max_body_bytes)
    try:
        decoded = native.decode(
            ProtoRequest(method="POST", body=body), datetime.now(UTC), rt.settings.max_batch
        )
    except ProtocolError as exc:
        raise ApiError(exc.status, "invalid_request", exc.message) from exc
    if decoded.device_key is not None and decoded.device_key != device.unique_id:
        raise ApiError(403, "wrong_device", "this token belongs to another device")
    result = await store(rt, device, decoded)
    if result.stored == 0 and result.duplicates == 0:
        first = result.rejects[0].reason if result.rejects else "no pings"
        return ORJSONResponse(
            {"error": "invalid_ping", "message": first, **result.as_json()}, status_code=422
        )
    return ORJSONResponse(result.as_json(), status_code=202)
