"""Small checks shared by the workspace's endpoints: known fields only, query parameters."""

from __future__ import annotations

from collections.abc import Collection
from datetime import date
from typing import Any

from starlette.requests import Request

from tracker.api.responses import ApiError


def invalid(message: str) -> ApiError:
    """400 invalid_request with `message`."""
    return ApiError(400, "invalid_request", message)


def only(data: dict[str, Any], allowed: Collection[str], where: str = "body") -> None:
    """Refuse a body holding a field this operation does not know (naming it): a misspelt
    field silently dropped would do the wrong thing without a word."""
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise invalid(
            f"{where}: unknown field {unknown[0]!r} (known: {', '.join(sorted(allowed))})"
        )


def query_only(request: Request, allowed: Collection[str]) -> None:
    """Refuse an unknown query parameter (a typo would otherwise widen the answer)."""
    unknown = sorted(set(request.query_params) - set(allowed) - {"token"})
    if unknown:
        raise invalid(f"unknown query parameter {unknown[0]!r}")


def int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    """An integer query parameter within [low, high]."""
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise invalid(f"{name}: must be an integer") from exc
    if not low <= value <= high:
        raise invalid(f"{name}: between {low} and {high}")
    return value


def day_param(request: Request, name: str) -> date | None:
    """A YYYY-MM-DD query parameter."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError as exc:
        raise invalid(f"{name}: a day as YYYY-MM-DD") from exc


def choice_param(request: Request, name: str, choices: Collection[str]) -> str | None:
    """A query parameter that must be one of `choices`."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    if raw not in choices:
        raise invalid(f"{name}: one of {', '.join(sorted(choices))}")
    return raw


def text_param(request: Request, name: str, max_length: int = 128) -> str | None:
    """A short text query parameter."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    if len(raw) > max_length:
        raise invalid(f"{name}: at most {max_length} characters")
    return raw
