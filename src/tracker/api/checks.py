"""Turning the planning package's field errors and query strings into 400 answers."""

from __future__ import annotations

from collections.abc import Iterable

from starlette.requests import Request

from tracker.api.responses import ApiError
from tracker.planning.fields import Invalid

# Credentials may ride in the query string (see guards.principal): never an unknown parameter.
CREDENTIAL_PARAMS = ("token",)


def invalid(exc: Invalid) -> ApiError:
    """400 naming every bad field: `priority: must be between 0 and 100; lat: ...`."""
    return ApiError(400, "invalid_request", str(exc))


def known_params(request: Request, allowed: Iterable[str]) -> None:
    """Refuse query parameters the endpoint does not take, naming them."""
    known = set(allowed) | set(CREDENTIAL_PARAMS)
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        raise ApiError(400, "invalid_request", f"unknown query parameter: {', '.join(unknown)}")


def int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    """An integer query parameter within [low, high]."""
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ApiError(400, "invalid_request", f"{name}: must be an integer") from exc
    if not low <= value <= high:
        raise ApiError(400, "invalid_request", f"{name}: must be between {low} and {high}")
    return value


def bool_param(request: Request, name: str) -> bool:
    """A true/false query parameter (absent = false)."""
    raw = request.query_params.get(name, "false").lower()
    if raw in ("1", "true", "yes"):
        return True
    if raw in ("0", "false", "no", ""):
        return False
    raise ApiError(400, "invalid_request", f"{name}: must be true or false")


def choice_param(request: Request, name: str, options: tuple[str, ...], default: str) -> str:
    """One of `options` (absent = `default`)."""
    raw = request.query_params.get(name, default)
    if raw not in options:
        raise ApiError(400, "invalid_request", f"{name}: must be one of {', '.join(options)}")
    return raw
