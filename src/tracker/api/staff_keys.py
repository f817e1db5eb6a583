"""Dispatcher and admin API keys (admin only): create, list, revoke.

- `GET /api/v1/keys` → `{"keys": [{id, name, role, enabled, created_at, revoked_at}]}`.
- `POST /api/v1/keys` `{"name", "role"?}` → 201 with the key, shown only in this reply.
- `POST /api/v1/keys/{id}/revoke` → 200: the key stops opening anything on every instance
  (its sessions end, its open maps are disconnected); revoking again changes nothing.
  Keys are never deleted: the list keeps who had access until when.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from tracker.api.body import json_object
from tracker.api.fields import invalid, only
from tracker.api.guards import require_admin, runtime, unavailable
from tracker.api.responses import ApiError, ORJSONResponse
from tracker.services.auth import ADMIN, DISPATCHER
from tracker.store import registry
from tracker.store.db import DB_ERRORS

ROLES = (DISPATCHER, ADMIN)
MAX_NAME = 200


async def list_keys(request: Request) -> Response:
    """GET /api/v1/keys: every key, newest first."""
    await require_admin(request)
    rt = runtime(request)
    try:
        keys = await registry.list_keys(rt.pool)
    except DB_ERRORS as exc:
        raise unavailable(rt) from exc
    return ORJSONResponse({"keys": [k.to_json() for k in keys]})


async def create_key(request: Request) -> Response:
    """POST /api/v1/keys {name, role?} → 201 {…key row, "key"}."""
    await require_admin(request)
    rt = runtime(request)
    data = await json_object(request)
    only(data, ("name", "role"))
    name = data.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME:
        raise invalid(f"name: required non-empty string of at most {MAX_NAME} characters")
    role = data.get("role", DISPATCHER)
    if role not in ROLES:
        raise invalid(f"role: one of {', '.join(ROLES)}")
    try:
        key, secret = await registry.create_key(rt.pool, name.strip(), role)
    except DB_ERRORS as exc:
        raise unavailable(rt) from exc
    return ORJSONResponse({**key.to_json(), "key": secret}, status_code=201)


async def revoke_key(request: Request) -> Response:
    """POST /api/v1/keys/{id}/revoke → 200 the key's row (enabled false, revoked_at)."""
    await require_admin(request)
    rt = runtime(request)
    try:
        key = await registry.revoke_key(rt.pool, request.path_params["key_id"])
    except DB_ERRORS as exc:
        raise unavailable(rt) from exc
    if key is None:
        raise ApiError(404, "not_found", f"no key {request.path_params['key_id']}")
    # Every instance drops the key's sessions and closes its open maps.
    await rt.auth.key_changed(key.id)
    return ORJSONResponse(key.to_json())
