"""Sign-in sessions of the map pages (issue 15, finding 6).

- `POST /api/v1/session {"token"}`: check a dispatcher key or the admin token, open a
  server-side session and set its cookie: an HttpOnly, SameSite=Strict cookie holding the
  session's random id, never the token.
- `GET /api/v1/session`: who the caller is. `DELETE /api/v1/session`: sign out (the session
  ends on every instance, its sockets close).
- `GET /api/v1/sessions`: the caller's live sessions (a dispatcher's key's; every session for
  the admin). `DELETE /api/v1/sessions/{id}`: end one of them.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from tracker.api.body import json_object
from tracker.api.guards import (
    SESSION_COOKIE,
    check_origin,
    require_dispatcher,
    runtime,
    unavailable,
)
from tracker.api.paths import IdConvertor  # noqa: F401 (registers {name:id})
from tracker.api.responses import ApiError, ORJSONResponse
from tracker.services.auth import ADMIN, Principal
from tracker.store import sessions as store
from tracker.store.db import DB_ERRORS

COOKIE_ARGS: dict[str, Any] = {"path": "/", "httponly": True, "samesite": "strict"}


async def create_session(request: Request) -> Response:
    """POST /api/v1/session {"token": ...}: open a session, set its cookie."""
    rt = runtime(request)
    # Another site's page must not sign a browser in (to a session of the attacker's).
    check_origin(request)
    data = await json_object(request, 4096)
    token = data.get("token")
    if not isinstance(token, str) or not token.strip():
        raise ApiError(400, "invalid_request", "token: required string")
    client = request.client.host if request.client else ""
    try:
        opened = await rt.auth.open_session(
            token.strip(),
            rt.settings.session_max_age_s,
            request.headers.get("user-agent", ""),
            client,
        )
    except DB_ERRORS as exc:
        raise unavailable(rt) from exc
    if opened is None:
        raise ApiError(401, "unauthorized", "not a dispatcher or admin token")
    who, secret = opened
    response = ORJSONResponse({"role": who.role})
    response.set_cookie(
        SESSION_COOKIE,
        secret,
        max_age=int(rt.settings.session_max_age_s),
        secure=request.url.scheme == "https",
        **COOKIE_ARGS,
    )
    return response


async def read_session(request: Request) -> Response:
    """GET /api/v1/session: who the caller is (the cookie is unreadable from scripts)."""
    who = await require_dispatcher(request)
    return ORJSONResponse({"role": who.role})


async def delete_session(request: Request) -> Response:
    """DELETE /api/v1/session: sign out; the session ends everywhere, its sockets close."""
    rt = runtime(request)
    secret = request.cookies.get(SESSION_COOKIE)
    if secret:
        try:
            who = await rt.auth.session(secret)
            if who is not None and who.session_id is not None:
                check_origin(request)
                await rt.auth.end_session(who.session_id, None)
        except DB_ERRORS as exc:
            raise unavailable(rt) from exc
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, **COOKIE_ARGS)
    return response


def _scope(who: Principal) -> int | None:
    """Whose sessions a caller may see and end: the admin every one (None), a dispatcher
    those of its key."""
    return None if who.role == ADMIN else (who.key_id if who.key_id is not None else -1)


def _iso(value: Any) -> str:
    return str(value.isoformat())


async def list_sessions(request: Request) -> Response:
    """GET /api/v1/sessions: live sessions, newest first (never their cookie's id)."""
    who = await require_dispatcher(request)
    rt = runtime(request)
    try:
        rows = await store.list_sessions(rt.pool, _scope(who))
    except DB_ERRORS as exc:
        raise unavailable(rt) from exc
    return ORJSONResponse(
        {
            "sessions": [
                {
                    "id": r["id"],
                    "role": r["role"],
                    "key": r["key_name"],
                    "created_at": _iso(r["created_at"]),
                    "last_seen_at": _iso(r["last_seen_at"]),
                    "expires_at": _iso(r["expires_at"]),
                    "user_agent": r["user_agent"],
                    "client": r["client"],
                    "current": r["id"] == who.session_id,
                }
                for r in rows
            ]
        }
    )


async def end_session(request: Request) -> Response:
    """DELETE /api/v1/sessions/{id}: end one of the caller's sessions (204, else 404)."""
    who = await require_dispatcher(request)
    rt = runtime(request)
    session_id: int = request.path_params["session_id"]
    try:
        ended = await rt.auth.end_session(session_id, _scope(who))
    except DB_ERRORS as exc:
        raise unavailable(rt) from exc
    if not ended:
        raise ApiError(404, "not_found", f"no session {session_id} of yours")
    return Response(status_code=204)


ROUTES: list[BaseRoute] = [
    Route("/api/v1/session", create_session, methods=["POST"]),
    Route("/api/v1/session", read_session, methods=["GET"]),
    Route("/api/v1/session", delete_session, methods=["DELETE"]),
    Route("/api/v1/sessions", list_sessions, methods=["GET"]),
    Route("/api/v1/sessions/{session_id:id}", end_session, methods=["DELETE"]),
]
