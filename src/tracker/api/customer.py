"""What a customer does on the tracking page, with the stop's link as the only credential.

- `GET /t/{token}/details`: the delivery window, the ETA and its range, the instructions
  and safe place, what the delivery can be moved to (and the request made), the PIN to
  show the driver, after a failure the reason and the next step, after delivery the proof
  and the rating.
- `POST /t/{token}/instructions` `{"instructions", "safe_place"}` (until the driver arrives).
- `POST /t/{token}/reschedule` `{"window": i}` or `{"pickup_point": i}`: one of the offered
  options, for the dispatcher to confirm.
- `POST /t/{token}/rating` `{"stars": 1-5, "comment"}` (once, after delivery).
- `POST /t/{token}/messages` `{"opt_out": true}`: no more messages to this contact.
- `GET /t/{token}/proofs/{id}`: a proof image of this stop.

Unknown, expired and malformed links get one JSON 404. POSTs must be JSON (415 otherwise),
which a cross-site form cannot send.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from tracker.api.body import json_object
from tracker.api.guards import runtime, unavailable
from tracker.api.reports import IMAGE_HEADERS
from tracker.api.responses import ApiError, ORJSONResponse
from tracker.api.runtime import Runtime
from tracker.api.stopfields import unknown_fields
from tracker.core import messages, notices, tokens
from tracker.core.model import JsonDict, StopStatus
from tracker.store import messages as message_store
from tracker.store import proofs as store
from tracker.store import routes as route_store
from tracker.store import tracking as tracking_store
from tracker.store.db import DB_ERRORS
from tracker.store.tracking import TrackingTarget

MAX_TEXT = 500
PREFIX = "/t/{token}"
NO_STORE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


def _not_found() -> ApiError:
    return ApiError(404, "not_found", "this tracking link does not exist or has expired")


async def _target(rt: Runtime, token: str) -> TrackingTarget:
    from tracker.api.tracking import TOKEN_RE  # the page's own token shape

    if not TOKEN_RE.fullmatch(token):
        raise _not_found()
    try:
        found = await tracking_store.lookup(
            rt.pool, tokens.digest(token), rt.settings.tracking_ttl_s
        )
    except DB_ERRORS as exc:
        raise unavailable(rt) from exc
    if found is None:
        raise _not_found()
    return found


async def publish_route(rt: Runtime, route_id: int) -> None:
    """Send a route's current JSON to the maps and phones (a stop's details changed)."""
    try:
        body = await rt.routing.route(route_id)
    except DB_ERRORS:
        return  # the next route update carries it
    if body is not None:
        await rt.bus.publish(messages.ROUTES, messages.route(body))


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _text(data: dict[str, Any], name: str, limit: int = MAX_TEXT) -> str:
    value = data.get(name)
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > limit:
        raise ApiError(400, "invalid_request", f"{name}: a string of at most {limit} characters")
    return value.strip()


def details_json(row: Any, stop: JsonDict | None, token: str) -> JsonDict:
    """The customer page's details of one stop (only this customer's own data)."""
    status = row["status"]
    outcome: JsonDict = row["outcome"] or {}
    done = status in StopStatus.DONE
    language = (stop or {}).get("language") or "en"
    result: JsonDict = {
        "status": status,
        "window": (
            {"start": _iso(row["window_start"]), "end": _iso(row["window_end"])}
            if row["window_start"] is not None and row["window_end"] is not None
            else None
        ),
        "eta": None,
        "instructions": row["instructions"],
        "safe_place": row["safe_place"],
        "can_edit_instructions": status == StopStatus.PENDING,
        # The code to tell the driver, while it is still needed.
        "pin": row["pin"] if "pin" in row["proof_required"] and not done else None,
        "reschedule": {
            "windows": row["reschedule_windows"],
            "pickup_points": row["pickup_points"],
            "request": row["request"],
            "allowed": status in (StopStatus.PENDING, StopStatus.FAILED)
            and bool(row["reschedule_windows"] or row["pickup_points"]),
        },
        "failure": None,
        "delivery": None,
        "rating": row["rating"],
        "can_rate": status == StopStatus.COMPLETED and row["rating"] is None,
        "messages": {
            "has_contact": bool(row["email"] or row["phone"]),
            "opted_out": row["opted_out"],
        },
    }
    if stop is not None and status == StopStatus.PENDING:
        result["eta"] = {
            "eta": stop.get("eta"),
            # The ETA's interval, when the route's ETA model gives one.
            "earliest": stop.get("eta_earliest"),
            "latest": stop.get("eta_latest"),
        }
    if status == StopStatus.FAILED:
        result["failure"] = {
            "reason_code": outcome.get("reason_code"),
            "reason": notices.label(notices.REASONS, outcome.get("reason_code"), language)
            or (stop or {}).get("reason"),
            "next_step": outcome.get("next_step"),
            "next_step_text": notices.label(notices.NEXT_STEPS, outcome.get("next_step"), language),
        }
    if status == StopStatus.COMPLETED:
        result["delivery"] = {
            "time": _iso(row["completed_at"]),
            "recipient_name": outcome.get("recipient_name") or "",
            "proofs": [
                {"kind": p["kind"], "url": f"/t/{token}/proofs/{p['id']}"}
                for p in outcome.get("proofs", [])
            ],
        }
    return result


async def _details(rt: Runtime, target: TrackingTarget, token: str) -> JsonDict:
    try:
        row = await store.customer_stop(rt.pool, target.stop_id)
        route = await route_store.route_by_id(rt.pool, target.route_id)
    except DB_ERRORS as exc:
        raise unavailable(rt) from exc
    if row is None:
        raise _not_found()
    stop = None
    if route is not None:
        stop = next((s for s in route["stops"] if s["id"] == target.stop_id), None)
    return details_json(row, stop, token)


async def get_details(request: Request) -> Response:
    """GET /t/{token}/details."""
    rt = runtime(request)
    token: str = request.path_params["token"]
    target = await _target(rt, token)
    return ORJSONResponse(await _details(rt, target, token), headers=NO_STORE)


async def post_instructions(request: Request) -> Response:
    """POST /t/{token}/instructions → 200 details; 409 once the driver arrived."""
    rt = runtime(request)
    token: str = request.path_params["token"]
    target = await _target(rt, token)
    data = await json_object(request, 16 * 1024)
    unknown_fields(data, frozenset({"instructions", "safe_place"}), "body")
    instructions = _text(data, "instructions", 1000)
    safe_place = _text(data, "safe_place", 200)
    try:
        ok = await store.set_instructions(rt.pool, target.stop_id, instructions, safe_place)
    except DB_ERRORS as exc:
        raise unavailable(rt) from exc
    if not ok:
        raise ApiError(409, "too_late", "the driver is already there or the stop is done")
    await publish_route(rt, target.route_id)
    return ORJSONResponse(await _details(rt, target, token), headers=NO_STORE)


def _index(data: dict[str, Any], name: str, options: list[Any]) -> Any:
    value = data.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < len(options):
        raise ApiError(
            400,
            "invalid_request",
            f"{name}: the index of an offered option, 0 to {len(options) - 1}",
        )
    return options[value]


async def post_reschedule(request: Request) -> Response:
    """POST /t/{token}/reschedule → 201 details; 409 while another request waits."""
    rt = runtime(request)
    token: str = request.path_params["token"]
    target = await _target(rt, token)
    data = await json_object(request, 16 * 1024)
    unknown_fields(data, frozenset({"window", "pickup_point"}), "body")
    if ("window" in data) == ("pickup_point" in data):
        raise ApiError(400, "invalid_request", "body: either window or pickup_point")
    try:
        row = await store.customer_stop(rt.pool, target.stop_id)
    except DB_ERRORS as exc:
        raise unavailable(rt) from exc
    if row is None:
        raise _not_found()
    if row["status"] not in (StopStatus.PENDING, StopStatus.FAILED):
        raise ApiError(409, "too_late", f"the delivery is already {row['status']}")
    window = point = None
    if "window" in data:
        chosen = _index(data, "window", row["reschedule_windows"])
        window = (
            datetime.fromisoformat(chosen["window_start"]),
            datetime.fromisoformat(chosen["window_end"]),
        )
    else:
        point = _index(data, "pickup_point", row["pickup_points"])
    try:
        made = await store.request_reschedule(rt.pool, target.stop_id, window, point)
    except DB_ERRORS as exc:
        raise unavailable(rt) from exc
    if made is None:
        raise ApiError(409, "request_pending", "a request already waits for the dispatcher")
    return ORJSONResponse(await _details(rt, target, token), 201, headers=NO_STORE)


async def post_rating(request: Request) -> Response:
    """POST /t/{token}/rating → 201 details; 409 before delivery or when rated already."""
    rt = runtime(request)
    token: str = request.path_params["token"]
    target = await _target(rt, token)
    data = await json_object(request, 16 * 1024)
    unknown_fields(data, frozenset({"stars", "comment"}), "body")
    stars = data.get("stars")
    if isinstance(stars, bool) or not isinstance(stars, int) or not 1 <= stars <= 5:
        raise ApiError(400, "invalid_request", "stars: a whole number from 1 to 5")
    comment = _text(data, "comment", 1000)
    try:
        row = await store.customer_stop(rt.pool, target.stop_id)
        if row is None:
            raise _not_found()
        if row["status"] != StopStatus.COMPLETED:
            raise ApiError(409, "not_delivered", "a delivery can be rated once it is delivered")
        if not await store.rate(rt.pool, target.stop_id, stars, comment):
            raise ApiError(409, "rated", "this delivery was rated already")
    except DB_ERRORS as exc:
        raise unavailable(rt) from exc
    return ORJSONResponse(await _details(rt, target, token), 201, headers=NO_STORE)


async def post_messages(request: Request) -> Response:
    """POST /t/{token}/messages {"opt_out": true} → 200 details."""
    rt = runtime(request)
    token: str = request.path_params["token"]
    target = await _target(rt, token)
    data = await json_object(request, 1024)
    unknown_fields(data, frozenset({"opt_out"}), "body")
    if data.get("opt_out") is not True:
        raise ApiError(400, "invalid_request", "opt_out: true")
    try:
        await message_store.opt_out(rt.pool, target.stop_id)
    except DB_ERRORS as exc:
        raise unavailable(rt) from exc
    return ORJSONResponse(await _details(rt, target, token), headers=NO_STORE)


async def get_proof(request: Request) -> Response:
    """GET /t/{token}/proofs/{id} → this stop's proof image."""
    rt = runtime(request)
    target = await _target(rt, request.path_params["token"])
    proof_id: int = request.path_params["proof_id"]
    try:
        row = await store.proof_for_stop(rt.pool, target.stop_id, proof_id)
    except DB_ERRORS as exc:
        raise unavailable(rt) from exc
    if row is None:
        raise ApiError(404, "not_found", f"no proof {proof_id} for this delivery")
    return Response(bytes(row["data"]), media_type=row["media_type"], headers=IMAGE_HEADERS)


ROUTES: list[BaseRoute] = [
    Route(f"{PREFIX}/details", get_details, methods=["GET"]),
    Route(f"{PREFIX}/instructions", post_instructions, methods=["POST"]),
    Route(f"{PREFIX}/reschedule", post_reschedule, methods=["POST"]),
    Route(f"{PREFIX}/rating", post_rating, methods=["POST"]),
    Route(f"{PREFIX}/messages", post_messages, methods=["POST"]),
    Route(PREFIX + "/proofs/{proof_id:id}", get_proof, methods=["GET"]),
]
