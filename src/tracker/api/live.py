"""The dispatcher's live feed (WebSocket /ws/dispatch); sessions are in api/sessions.

Messages (JSON text frames, all with "type" and "v": 1) are described in tracker.live.fleet
and the README: a snapshot on connect, then at most one delta per tick. The client may send
{"type": "resync"} for a fresh snapshot or {"type": "ping"} for a {"type": "pong"}; protocol
level pings from the server (uvicorn's ws_ping_interval) detect dead connections.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import orjson
from starlette.websockets import WebSocket, WebSocketDisconnect

from tracker.api.guards import SESSION_COOKIE, explicit_token, principal, runtime
from tracker.api.origin import same_origin
from tracker.api.responses import ApiError, error_response
from tracker.core import tokens
from tracker.live.hub import DISPATCH, Subscriber
from tracker.services.auth import Principal
from tracker.store.db import DB_ERRORS

log = logging.getLogger(__name__)

# WebSocket close codes (RFC 6455 §7.4.1).
CLOSE_POLICY = 1008
CLOSE_TRY_AGAIN = 1013
# A revoked socket whose close frame does not leave within this is dropped.
CLOSE_WAIT_S = 1.0


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
    """A browser page from another origin (scheme and host) opening the socket with our
    cookie."""
    return not same_origin(websocket, runtime(websocket).settings.public_url)


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
    explicit = explicit_token(websocket)
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
        await _feed(websocket, who, explicit)
    finally:
        slots.release(slot)


def socket_slot(kind: str, credential: str) -> str:
    """The key a credential's WebSockets are counted under (its digest, not the secret)."""
    return f"{kind}:{tokens.digest(credential).hex()}"


def too_many_sockets(per_key: int) -> str:
    """The message of the 429 refusing a socket beyond TRACKER_WS_MAX_PER_TOKEN."""
    return f"this credential already has {per_key} live connection(s) open here; close one"


def revoker(websocket: WebSocket, sink: SocketSink, stop: Callable[[], None]) -> Callable[[], None]:
    """What closes a socket whose credential was revoked: stop its frames, send close
    1008, and drop the connection if that cannot leave in time (a stuck reader)."""

    async def close() -> None:
        stop()
        try:
            await asyncio.wait_for(
                websocket.close(CLOSE_POLICY, "credentials revoked"), CLOSE_WAIT_S
            )
        except Exception:
            sink.abort()

    tasks: set[asyncio.Task[None]] = set()

    def fire() -> None:
        task = asyncio.get_running_loop().create_task(close())
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    return fire


async def still_valid(websocket: WebSocket, who: Principal, explicit: str | None) -> bool:
    """Whether the credential that opened a socket still opens it (asked after a bus gap)."""
    auth = runtime(websocket).auth
    if explicit:
        return await auth.principal(explicit) is not None
    return await auth.session(websocket.cookies.get(SESSION_COOKIE)) is not None


async def _feed(websocket: WebSocket, who: Principal, explicit: str | None) -> None:
    await websocket.accept()
    rt = runtime(websocket)
    hub = rt.hub
    sink = SocketSink(websocket)
    sub = hub.subscribe(DISPATCH, sink)
    unwatch = rt.auth.watchers.watch(
        who.identities(),
        revoker(websocket, sink, lambda: hub.unsubscribe(sub)),
        lambda: still_valid(websocket, who, explicit),
    )
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
    except RuntimeError:
        # Closed by `revoker` while waiting for the client: nothing more to read.
        if not sub.closed:
            raise
    finally:
        unwatch()
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
