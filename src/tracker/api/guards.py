"""Authentication guards shared by the endpoints."""

from __future__ import annotations

from starlette.requests import HTTPConnection

from tracker.api.origin import UNSAFE_METHODS, same_origin
from tracker.api.responses import ApiError
from tracker.api.runtime import Runtime
from tracker.api.slowbody import AUTHENTICATED
from tracker.services.auth import ADMIN, Principal, bearer
from tracker.store.db import DB_ERRORS

# The cookie holds a session's random id (HttpOnly, SameSite=Strict), never a credential:
# sessions live in PostgreSQL (sql/008_hardening.sql), end on sign-out, on revocation and
# with their key, on every instance at once.
SESSION_COOKIE = "tracker_session"


def runtime(conn: HTTPConnection) -> Runtime:
    """The instance's parts, built by the lifespan."""
    rt: Runtime = conn.app.state.runtime
    return rt


def unavailable(rt: Runtime) -> ApiError:
    """503 with Retry-After: the database cannot answer right now."""
    return ApiError(
        503,
        "unavailable",
        "database unavailable, retry later",
        {"Retry-After": str(rt.settings.retry_after_s)},
    )


def explicit_token(conn: HTTPConnection) -> str | None:
    """A credential sent on purpose: the bearer header or `?token=` (never the cookie)."""
    return bearer(conn.headers.get("authorization")) or conn.query_params.get("token")


def cross_origin() -> ApiError:
    """403 for a cookie-carrying request from another site's page."""
    return ApiError(
        403, "cross_origin", "the session cookie is accepted only from this server's own pages"
    )


def check_origin(conn: HTTPConnection) -> None:
    """403 unless the request may come from this server's own pages."""
    if not same_origin(conn, runtime(conn).settings.public_url):
        raise cross_origin()


async def principal(conn: HTTPConnection) -> Principal | None:
    """Admin/dispatcher from the bearer header, `?token=` or the session cookie. A state
    change authenticated by the cookie must come from our own origin (else 403)."""
    rt = runtime(conn)
    token = explicit_token(conn)
    try:
        if token:
            who = await rt.auth.principal(token)
        else:
            cookie = conn.cookies.get(SESSION_COOKIE)
            who = await rt.auth.session(cookie)
            if who is not None and conn.scope.get("method") in UNSAFE_METHODS:
                check_origin(conn)
    except DB_ERRORS as exc:
        raise unavailable(rt) from exc
    if who is not None:
        mark_authenticated(conn)
    return who


def mark_authenticated(conn: HTTPConnection) -> None:
    """Note on the request that its caller is known (see `AUTHENTICATED`)."""
    conn.scope[AUTHENTICATED] = True


async def require_dispatcher(conn: HTTPConnection) -> Principal:
    """Admin or dispatcher, else 401."""
    who = await principal(conn)
    if who is None:
        raise ApiError(401, "unauthorized", "dispatcher or admin credentials required")
    return who


async def require_admin(conn: HTTPConnection) -> Principal:
    """Admin only: 401 without credentials, 403 for a dispatcher."""
    who = await require_dispatcher(conn)
    if who.role != ADMIN:
        raise ApiError(403, "forbidden", "admin token required")
    return who
