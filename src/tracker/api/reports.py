"""A driver's report of a stop's outcome, with its proof; proof images for the dispatcher.

- `POST /api/v1/routes/{id}/stops/{stop_id}/report` (the route's device, or a dispatcher):
  `{"client_id": uuid, "status": "completed"|"failed", "time", "location": {"lat", "lon",
  "accuracy"}?, "far_reason"?, "proof": {"photo"?, "signature"? (base64 or data: URL),
  "name"?, "pin"?}, "reason_code"?, "reason_text"?, "next_step"?}` → 200 Route JSON.
  Completing needs every proof the stop requires; failing needs a reason code (`other`
  with a text) and, when the company allows any, a next step; either needs `far_reason`
  when the position is farther than TRACKER_FAR_FROM_STOP_M (and the stop's radius) from
  the stop (422 `far_from_stop` says how far). The phone makes `client_id`, so a report it
  syncs again after an outage is stored once.
- `GET /api/v1/proofs/{id}` (dispatcher): the image.
"""

from __future__ import annotations

import asyncio
import math
import uuid
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from tracker.api.body import json_object
from tracker.api.guards import principal, require_dispatcher, runtime, unavailable
from tracker.api.ingest import authenticate_device
from tracker.api.paths import IdConvertor  # noqa: F401 (registers {name:id})
from tracker.api.responses import ApiError, ORJSONResponse
from tracker.api.routes import EARLIEST, LATEST, authorise
from tracker.api.stopfields import unknown_fields
from tracker.core.model import StopStatus
from tracker.core.timeparse import TimeFormatError, parse_time
from tracker.services.auth import bearer
from tracker.services.proofimage import ProofRefused, clean, decode_base64
from tracker.services.routing import RouteNotFound, TransitionRefused
from tracker.store import proofs as store
from tracker.store.db import DB_ERRORS

REASON_CODES = ("not_home", "refused", "damaged", "no_access", "other")
REPORT_FIELDS = frozenset(
    {
        "client_id",
        "status",
        "time",
        "location",
        "far_reason",
        "proof",
        "reason_code",
        "reason_text",
        "next_step",
    }
)
PROOF_FIELDS = frozenset({"photo", "signature", "name", "pin"})
MAX_TEXT = 500
# Proof images must never be cached by a shared cache or sniffed as anything else.
IMAGE_HEADERS = {
    "Cache-Control": "private, no-store",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'",
}


def _invalid(message: str, status: int = 400, code: str = "invalid_request") -> ApiError:
    return ApiError(status, code, message)


def _text(data: dict[str, Any], name: str, where: str) -> str:
    value = data.get(name)
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise _invalid(f"{where}{name}: a string of at most {MAX_TEXT} characters")
    return value.strip()


def _location(value: Any) -> tuple[float, float] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _invalid("location: an object {lat, lon, accuracy?}")
    unknown_fields(value, frozenset({"lat", "lon", "accuracy"}), "location")
    lat, lon = value.get("lat"), value.get("lon")
    for name, v in (("lat", lat), ("lon", lon)):
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise _invalid(f"location.{name}: a finite number")
    assert isinstance(lat, int | float) and isinstance(lon, int | float)
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise _invalid("location: outside WGS84 lat/lon ranges")
    return float(lat), float(lon)


def next_steps(allowed: str) -> tuple[str, ...]:
    """The company's allowed next steps after a failure (TRACKER_FAILED_NEXT_STEPS)."""
    return tuple(s for s in allowed.split(",") if s)


def failure_reason(code: str, text: str) -> str:
    """The stop's `reason` text for a failure: the code's words and the driver's text."""
    words = code.replace("_", " ")
    return f"{words}: {text}" if text else words


async def report_stop(request: Request) -> Response:
    """POST /api/v1/routes/{id}/stops/{stop_id}/report → 200 Route JSON."""
    route_id: int = request.path_params["route_id"]
    stop_id: int = request.path_params["stop_id"]
    await authorise(request, route_id)
    rt = runtime(request)
    settings = rt.settings
    # Two images in base64 (4/3 of their size) and the rest of the fields.
    limit = 2 * (settings.proof_max_bytes * 4 // 3 + 64) + 64 * 1024
    data = await json_object(request, limit)
    unknown_fields(data, REPORT_FIELDS, "body")
    try:
        client_id = uuid.UUID(str(data.get("client_id")))
    except ValueError as exc:
        raise _invalid("client_id: required UUID made by the client") from exc
    status = data.get("status")
    if status not in (StopStatus.COMPLETED, StopStatus.FAILED):
        raise _invalid("status: completed or failed")
    try:
        reported_at = parse_time(data.get("time"))
    except TimeFormatError as exc:
        raise _invalid(f"time: {exc}") from exc
    if not EARLIEST <= reported_at < LATEST:
        raise _invalid("time: out of range")
    at = _location(data.get("location"))
    proof = data.get("proof") or {}
    if not isinstance(proof, dict):
        raise _invalid("proof: an object {photo?, signature?, name?, pin?}")
    unknown_fields(proof, PROOF_FIELDS, "proof")
    reason_code = data.get("reason_code")
    reason_text = _text(data, "reason_text", "")
    next_step = data.get("next_step")
    allowed_steps = next_steps(settings.failed_next_steps)
    if status == StopStatus.FAILED:
        if reason_code not in REASON_CODES:
            raise _invalid(f"reason_code: one of {', '.join(REASON_CODES)} when a stop failed")
        if reason_code == "other" and not reason_text:
            raise _invalid("reason_text: required with reason_code other")
        if allowed_steps and next_step not in allowed_steps:
            raise _invalid(f"next_step: one of {', '.join(allowed_steps)}")
        if not allowed_steps and next_step is not None:
            raise _invalid("next_step: the company offers none")
    elif reason_code is not None or next_step is not None:
        raise _invalid("reason_code, next_step: only for a failed stop")
    try:
        ctx = await store.stop_context(rt.pool, route_id, stop_id, client_id, at)
    except DB_ERRORS as exc:
        raise unavailable(rt) from exc
    if ctx is None:
        raise ApiError(404, "not_found", f"route {route_id} has no stop {stop_id}")
    if ctx.status in StopStatus.DONE and ctx.status != status and not ctx.has_report:
        raise ApiError(409, "invalid_transition", f"stop {stop_id} is already {ctx.status}")
    far_reason = _text(data, "far_reason", "")
    limit_m = max(settings.far_from_stop_m, ctx.radius_m)
    if ctx.distance_m is not None and ctx.distance_m > limit_m and not far_reason:
        raise _invalid(
            f"far_reason: required, the position is {ctx.distance_m:.0f} m from the stop "
            f"(more than {limit_m:.0f} m)",
            422,
            "far_from_stop",
        )
    name = _text(proof, "name", "proof.")
    pin = _text(proof, "pin", "proof.")
    images = []
    if not ctx.has_report:
        if status == StopStatus.COMPLETED:
            missing = [
                k
                for k in ctx.proof_required
                if not (name if k == "name" else pin if k == "pin" else proof.get(k))
            ]
            if missing:
                raise _invalid(
                    f"proof.{missing[0]}: required for this stop "
                    f"(it requires {', '.join(ctx.proof_required)})",
                    422,
                    "proof_required",
                )
            if "pin" in ctx.proof_required and pin != ctx.pin:
                raise _invalid("proof.pin: not the code the customer was sent", 422, "wrong_pin")
        try:
            for kind in ("photo", "signature"):
                if proof.get(kind) is None:
                    continue
                raw = decode_base64(proof[kind], f"proof.{kind}", settings.proof_max_bytes)
                images.append(
                    await asyncio.to_thread(
                        clean, raw, kind, f"proof.{kind}", settings.proof_max_pixels
                    )
                )
        except ProofRefused as exc:
            raise ApiError(exc.status, exc.code, str(exc)) from exc
    report = {
        "client_id": client_id,
        "status": status,
        "reason_code": reason_code,
        "reason_text": reason_text,
        "next_step": next_step,
        "recipient_name": name,
        "pin_ok": (pin == ctx.pin) if "pin" in ctx.proof_required else None,
        "lat": None if at is None else at[0],
        "lon": None if at is None else at[1],
        "distance_m": None if ctx.distance_m is None else round(ctx.distance_m, 1),
        "far_reason": far_reason,
        "reported_at": reported_at,
    }
    reason = None
    if status == StopStatus.FAILED:
        assert isinstance(reason_code, str)
        reason = failure_reason(reason_code, reason_text)
    try:
        if not ctx.has_report:
            await store.save_report(rt.pool, stop_id, report, images)
        try:
            body = await rt.routing.set_stop_status(
                route_id, stop_id, status, reason, datetime.now(UTC)
            )
        except (TransitionRefused, RouteNotFound) as exc:
            if not ctx.has_report:
                await store.drop_report(rt.pool, stop_id, client_id)
            code = 409 if isinstance(exc, TransitionRefused) else 404
            error = "invalid_transition" if code == 409 else "not_found"
            raise ApiError(code, error, str(exc)) from exc
    except DB_ERRORS as exc:
        raise unavailable(rt) from exc
    return ORJSONResponse(body)


async def refuse_unproven(request: Request, route_id: int, stop_id: int, status: str) -> None:
    """A device may not complete a stop that requires proof through the plain status
    change (PATCH): 422, the report endpoint takes the proof. Dispatchers may."""
    if status != StopStatus.COMPLETED or await principal(request) is not None:
        return
    rt = runtime(request)
    try:
        required = await store.proof_required(rt.pool, route_id, stop_id)
    except DB_ERRORS as exc:
        raise unavailable(rt) from exc
    if required:
        raise _invalid(
            f"status: this stop requires proof ({', '.join(required)}); "
            f"POST /api/v1/routes/{route_id}/stops/{stop_id}/report",
            422,
            "proof_required",
        )


async def driver_settings(request: Request) -> Response:
    """GET /api/v1/driver/settings (device token or dispatcher): what the driver page asks."""
    rt = runtime(request)
    if await principal(request) is None:
        await authenticate_device(rt, bearer(request.headers.get("authorization")))
    s = rt.settings
    return ORJSONResponse(
        {
            "far_from_stop_m": s.far_from_stop_m,
            "undo_s": s.undo_s,
            "reason_codes": list(REASON_CODES),
            "next_steps": list(next_steps(s.failed_next_steps)),
            "proof_max_bytes": s.proof_max_bytes,
        }
    )


async def proof_image(request: Request) -> Response:
    """GET /api/v1/proofs/{id} (dispatcher) → the image."""
    await require_dispatcher(request)
    rt = runtime(request)
    proof_id: int = request.path_params["proof_id"]
    try:
        row = await store.proof_by_id(rt.pool, proof_id)
    except DB_ERRORS as exc:
        raise unavailable(rt) from exc
    if row is None:
        raise ApiError(404, "not_found", f"no proof {proof_id}")
    return Response(bytes(row["data"]), media_type=row["media_type"], headers=IMAGE_HEADERS)


ROUTES: list[BaseRoute] = [
    Route("/api/v1/routes/{route_id:id}/stops/{stop_id:id}/report", report_stop, methods=["POST"]),
    Route("/api/v1/proofs/{proof_id:id}", proof_image, methods=["GET"]),
    Route("/api/v1/driver/settings", driver_settings, methods=["GET"]),
]
