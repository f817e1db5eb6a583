"""Reading request bodies with a size limit and a content-type check."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request

from tracker.api.responses import ApiError


def require_json(request: Request) -> None:
    """Refuse anything not declared as JSON (415)."""
    ctype = request.headers.get("content-type", "")
    if ctype.split(";", 1)[0].strip().lower() != "application/json":
        raise ApiError(415, "unsupported_media_type", "Content-Type must be application/json")


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, or 413 as soon as it exceeds `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise ApiError(413, "body_too_large", f"body exceeds {limit} bytes")
        except ValueError as exc:
            raise ApiError(400, "bad_request", "invalid Content-Length") from exc
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "body_too_large", f"body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def json_object(request: Request, limit: int = 64 * 1024) -> dict[str, Any]:
    """A JSON object body: 415 unless declared JSON, 413 past `limit`, 400 otherwise wrong."""
    require_json(request)
    body = await read_body(request, limit)
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "invalid_json", f"malformed JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_request", "body must be a JSON object")
    return data
