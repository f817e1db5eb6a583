"""JSON responses and the one error shape every endpoint uses: {"error": code, "message": text}."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response


class ORJSONResponse(JSONResponse):
    """JSONResponse encoded with orjson (datetimes as ISO-8601)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)


class ApiError(Exception):
    """Raised anywhere in a handler to answer with a JSON error."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> Response:
    """A JSON error body naming the problem."""
    return ORJSONResponse({"error": code, "message": message}, status_code=status, headers=headers)


async def api_error_handler(request: Request, exc: Exception) -> Response:
    """Render ApiError."""
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message, exc.headers)
