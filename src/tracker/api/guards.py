"""Authentication guards shared by the endpoints."""

from __future__ import annotations

from starlette.requests import HTTPConnection

from tracker.api.responses import ApiError
from tracker.api.runtime import Runtime
from tracker.services.auth import ADMIN, Principal, bearer
from tracker.store.db import DB_ERRORS

# The cookie holds the credential itself (HttpOnly, SameSite=Strict), so every use is checked
# against the database: revoking a key ends its sessions on every instance at once.
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


async def principal(conn: HTTPConnection) -> Principal | None:
    """Admin/dispatcher from the bearer header, `?token=` or the session cookie."""
    rt = runtime(conn)
    token = (
        bearer(conn.headers.get("authorization"))
        or conn.query_params.get("token")
        or conn.cookies.get(SESSION_COOKIE)
    )
    try:
        return await rt.auth.principal(token)
    except DB_ERRORS as exc:
        raise unavailable(rt) from exc


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
