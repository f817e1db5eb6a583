"""The dispatcher's live feed (WebSocket /ws/dispatch) and the sign-in session behind it.

Messages (JSON text frames, all with "type" and "v": 1) are described in tracker.live.fleet
and the README: a snapshot on connect, then at most one delta per tick. The client may send
{"type": "resync"} for a fresh snapshot or {"type": "ping"} for a {"type": "pong"}; protocol
level pings from the server (uvicorn's ws_ping_interval) detect dead connections.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket, WebSocketDisconnect

from tracker.api.body import json_object
from tracker.api.guards import SESSION_COOKIE, principal, require_dispatcher, runtime, unavailable
from tracker.api.responses import ApiError, ORJSONResponse, error_response
from tracker.core import tokens
from tracker.live.hub import DISPATCH, Subscriber
from tracker.services.auth import bearer
from tracker.store.db import DB_ERRORS

log = logging.getLogger(__name__)

# WebSocket close codes (RFC 6455 §7.4.1).
CLOSE_TRY_AGAIN = 1013


class SocketSink:
    """A Starlette WebSocket as the hub's Sink."""

    def __init__(self, websocket: WebSocket) -> None:
        self._ws = websocket

    async def send(self, text: str) -> None:
        await self._ws.send_text(text)

    def abort(self) -> None:
        # ASGI offers no way to drop a connection whose write buffer never drains (a
        # close frame would queue behind it), so reach the server's transport when the
        # receive callable is bound to the protocol object, as with uvicorn.
        owner = getattr(self._ws._receive, "__self__", None)
        abort = getattr(getattr(owner, "transport", None), "abort", None)
        if callable(abort):
            abort()


def _cross_site(websocket: WebSocket) -> bool:
    """A browser page from another origin opening the socket with our cookie."""
    origin = websocket.headers.get("origin")
    if not origin:
        return False
    return urlsplit(origin).netloc.lower() != websocket.headers.get("host", "").lower()


async def _deny(websocket: WebSocket, status: int, code: str, message: str) -> None:
    # A real HTTP answer (401/503 with the JSON error) where the server supports it.
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(error_response(status, code, message))
    else:
        await websocket.close(code=1008, reason=message)


async def dispatch_feed(websocket: WebSocket) -> None:
    """GET /ws/dispatch: snapshot of every vehicle, then deltas, for dispatchers/admins."""
    rt = runtime(websocket)
    try:
        who = await principal(websocket)
    except ApiError as exc:
        await _deny(websocket, exc.status, exc.code, exc.message)
        return
    explicit = bearer(websocket.headers.get("authorization")) or websocket.query_params.get("token")
    if who is None:
        await _deny(websocket, 401, "unauthorized", "dispatcher or admin credentials required")
        return
    if not explicit and _cross_site(websocket):
        await _deny(websocket, 403, "forbidden", "cross-origin use of the session cookie")
        return
    # The same key, and so the same count, whichever way the credential came.
    slot = socket_slot("dispatch", explicit or websocket.cookies.get(SESSION_COOKIE, ""))
    slots = rt.limits.sockets
    if not slots.acquire(slot):
        await _deny(websocket, 429, "too_many_sockets", too_many_sockets(slots.per_key))
        return
    try:
        await _feed(websocket)
    finally:
        slots.release(slot)


def socket_slot(kind: str, credential: str) -> str:
    """The key a credential's WebSockets are counted under (its digest, not the secret)."""
    return f"{kind}:{tokens.digest(credential).hex()}"


def too_many_sockets(per_key: int) -> str:
    """The message of the 429 refusing a socket beyond TRACKER_WS_MAX_PER_TOKEN."""
    return f"this credential already has {per_key} live connection(s) open here; close one"


async def _feed(websocket: WebSocket) -> None:
    await websocket.accept()
    hub = runtime(websocket).hub
    sub = hub.subscribe(DISPATCH, SocketSink(websocket))
    try:
        try:
            await hub.send_snapshot(sub)
        except DB_ERRORS:
            await websocket.close(CLOSE_TRY_AGAIN, "database unavailable, reconnect later")
            return
        async for text in websocket.iter_text():
            await _client_message(websocket, text, sub)
    except WebSocketDisconnect:
        pass
    finally:
        hub.unsubscribe(sub)


async def _client_message(websocket: WebSocket, text: str, sub: Subscriber) -> None:
    try:
        kind = orjson.loads(text).get("type")
    except (orjson.JSONDecodeError, AttributeError):
        return  # nothing is required from clients; ignore what we do not understand
    hub = runtime(websocket).hub
    if kind == "resync":
        try:
            await hub.send_snapshot(sub)
        except DB_ERRORS:
            log.warning("resync refused: database unavailable")
    elif kind == "ping":
        hub.pong(sub)


# -- sign-in session ----------------------------------------------------------------------


async def create_session(request: Request) -> Response:
    """POST /api/v1/session {"token": ...}: check a dispatcher/admin token and keep it in an
    HttpOnly, SameSite=Strict cookie, so the map page signs in once."""
    rt = runtime(request)
    data = await json_object(request, 4096)
    token = data.get("token")
    if not isinstance(token, str) or not token.strip():
        raise ApiError(400, "invalid_request", "token: required string")
    token = token.strip()
    try:
        who = await rt.auth.principal(token)
    except DB_ERRORS as exc:
        raise unavailable(rt) from exc
    if who is None:
        raise ApiError(401, "unauthorized", "not a dispatcher or admin token")
    response = ORJSONResponse({"role": who.role})
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=int(rt.settings.session_max_age_s),
        path="/",
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
    return response


async def read_session(request: Request) -> Response:
    """GET /api/v1/session: who the caller is (the cookie is unreadable from scripts)."""
    who = await require_dispatcher(request)
    return ORJSONResponse({"role": who.role})


async def delete_session(request: Request) -> Response:
    """DELETE /api/v1/session: sign out (forget the cookie)."""
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response
