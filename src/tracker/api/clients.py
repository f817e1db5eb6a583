"""Ingest endpoints for the phone apps people already use: Traccar Client / OsmAnd,
OwnTracks (HTTP mode) and Overland.

Each endpoint turns the HTTP request into the decoder's transport-neutral request,
identifies the device the way that app can, runs the same `IngestService` as the native
API (filters → group commit → publish → after-commit hooks), and answers what the app
expects only once the pings are committed. When the database cannot commit, the answer
is 503 with Retry-After, which every one of these apps treats as "keep it and retry".

Pings the filters or the decoder reject are reported in the log but still answered with
the app's success reply: the apps retry a refused request forever, so one bad point would
otherwise block everything queued behind it on the phone.

Identity, per app:

- OsmAnd has no credential: like Traccar, the device is the registered unique id in
  ``id``/``deviceid`` (JSON form: ``device_id``). Unknown id: 400 (query form) or 404
  (JSON form), as Traccar answers; a disabled device: 403.
- OwnTracks: HTTP Basic auth, username = the device's unique id, password = its device
  token. ``X-Limit-U`` / ``?u=`` name a device but prove nothing, so without a valid
  Basic password the request is refused with 401 (and a ``WWW-Authenticate`` challenge).
- Overland: the device token, as ``Authorization: Bearer`` or ``?token=`` on the receiver
  URL. Every failure is answered with `overland.error_reply`, never ``{"result":"ok"}``,
  so the app keeps the batch.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import Response

from tracker import metrics
from tracker.api import throttle
from tracker.api.body import read_body
from tracker.api.guards import mark_authenticated, runtime, unavailable
from tracker.api.ingest import authenticate_device, store
from tracker.api.responses import ApiError
from tracker.api.runtime import Runtime
from tracker.protocols import osmand, overland, owntracks
from tracker.protocols.base import Decoded, ProtocolError, Reply
from tracker.protocols.base import Request as ProtoRequest
from tracker.services.auth import bearer
from tracker.store import devices as device_store
from tracker.store.db import DB_ERRORS
from tracker.store.devices import Device

log = logging.getLogger(__name__)

BASIC_CHALLENGE = {"WWW-Authenticate": 'Basic realm="tracker", charset="UTF-8"'}

Endpoint = Callable[[Request], Awaitable[Response]]


def _refusals_counted(protocol: str) -> Callable[[Endpoint], Endpoint]:
    """Count an endpoint's error answers (`ApiError`) in the metrics, by error code."""

    def wrap(endpoint: Endpoint) -> Endpoint:
        @functools.wraps(endpoint)
        async def counted(request: Request) -> Response:
            try:
                return await endpoint(request)
            except ApiError as exc:
                metrics.count_refused(protocol, exc.code)
                raise

        return counted

    return wrap


async def protocol_request(request: Request, limit: int) -> ProtoRequest:
    """The decoder's view of an HTTP request: method, query pairs, lower-case headers, body."""
    body = await read_body(request, limit)
    return ProtoRequest(
        method=request.method,
        query=tuple(request.query_params.multi_items()),
        headers={key.lower(): value for key, value in request.headers.items()},
        body=body,
    )


def reply_response(reply: Reply, headers: Mapping[str, str] | None = None) -> Response:
    """The decoder's reply as an HTTP response, byte for byte."""
    return Response(
        reply.body, status_code=reply.status, media_type=reply.content_type, headers=headers
    )


def _log_rejects(protocol: str, device: Device, decoded: Decoded, rejected: int) -> None:
    if rejected:
        log.info(
            "%s: %d ping(s) of device %s rejected: %s",
            protocol,
            rejected,
            device.unique_id,
            "; ".join(r.reason for r in decoded.rejects[:3]) or "by the filters",
        )


async def _ingest(rt: Runtime, protocol: str, device: Device, decoded: Decoded) -> None:
    """Store the decoded pings (503 when they could not be committed)."""
    if not decoded.fixes and not decoded.rejects:
        return
    result = await store(rt, device, decoded, protocol)
    _log_rejects(protocol, device, decoded, len(result.rejects))


# --- Traccar Client / OsmAnd -------------------------------------------------------------


async def _registered_device(rt: Runtime, unique_id: str) -> Device | None:
    try:
        return await device_store.device_by_unique_id(rt.pool, unique_id)
    except DB_ERRORS as exc:
        raise unavailable(rt) from exc


@_refusals_counted("osmand")
async def osmand_positions(request: Request) -> Response:
    """GET/POST /ingest/osmand (and `/` of the OsmAnd listener): one Traccar Client ping."""
    rt = runtime(request)
    proto = await protocol_request(request, rt.settings.max_body_bytes)
    try:
        decoded = osmand.decode(proto, datetime.now(UTC))
    except ProtocolError as exc:
        raise ApiError(exc.status, "invalid_request", exc.message) from exc
    assert decoded.device_key is not None  # the decoder refuses a request without an id
    device = await _registered_device(rt, decoded.device_key)
    if device is None:
        raise ApiError(
            osmand.unknown_device_status(proto),
            "unknown_device",
            f"no device is registered with unique id {decoded.device_key!r}",
        )
    if not device.enabled:
        raise ApiError(403, "device_disabled", f"device {device.unique_id} is disabled")
    throttle.check_device(rt, device)
    await _ingest(rt, "osmand", device, decoded)
    return reply_response(decoded.reply)


# --- OwnTracks ---------------------------------------------------------------------------


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, BASIC_CHALLENGE)


async def _owntracks_device(rt: Runtime, proto: ProtoRequest) -> Device:
    """The device whose unique id is the Basic username and whose token is the password."""
    try:
        basic = owntracks.credentials(proto)
        unique_id = owntracks.device_key(proto)
    except ProtocolError as exc:
        raise _unauthorized(exc.message) from exc
    if basic is None or not basic[1]:
        # X-Limit-U and ?u= only name a device; anyone could send them.
        raise _unauthorized(
            "HTTP Basic authentication required: username = the device's unique id, "
            "password = its device token"
        )
    try:
        device = await rt.auth.device(basic[1])
    except DB_ERRORS as exc:
        raise unavailable(rt) from exc
    # One answer for "no such token" and "token of another device", so neither leaks.
    if device is None or device.unique_id != unique_id:
        raise _unauthorized("wrong username or password")
    if not device.enabled:
        raise ApiError(403, "device_disabled", f"device {device.unique_id} is disabled")
    return device


@_refusals_counted("owntracks")
async def owntracks_positions(request: Request) -> Response:
    """POST /ingest/owntracks: one OwnTracks message; answers ``[]`` once committed."""
    rt = runtime(request)
    proto = await protocol_request(request, rt.settings.max_body_bytes)
    # Authenticate before parsing, so an anonymous caller learns nothing about the body.
    device = await _owntracks_device(rt, proto)
    throttle.check_device(rt, device)
    try:
        decoded = owntracks.decode(proto, datetime.now(UTC))
    except ProtocolError as exc:
        raise ApiError(exc.status, "invalid_request", exc.message) from exc
    await _ingest(rt, "owntracks", device, decoded)
    return reply_response(decoded.reply)


# --- Overland ----------------------------------------------------------------------------


async def _overland(request: Request) -> Reply:
    rt = runtime(request)
    token = bearer(request.headers.get("authorization")) or request.query_params.get("token")
    device = await authenticate_device(rt, token)
    mark_authenticated(request)
    throttle.check_device(rt, device)
    proto = await protocol_request(request, rt.settings.max_body_bytes)
    try:
        decoded = overland.decode(proto, datetime.now(UTC))
    except ProtocolError as exc:
        raise ApiError(exc.status, "invalid_request", exc.message) from exc
    count = len(decoded.fixes) + len(decoded.rejects)
    if count > rt.settings.max_batch:
        raise ApiError(413, "batch_too_large", f"at most {rt.settings.max_batch} per batch")
    await _ingest(rt, "overland", device, decoded)
    return decoded.reply


async def overland_positions(request: Request) -> Response:
    """POST /ingest/overland: a batch; exactly ``{"result":"ok"}`` once all of it committed."""
    try:
        reply = await _overland(request)
    except ApiError as exc:
        metrics.count_refused("overland", exc.code)
        # Anything but {"result":"ok"} makes the app keep the batch for the next attempt.
        return reply_response(overland.error_reply(exc.message, exc.status), exc.headers)
    return reply_response(reply)
