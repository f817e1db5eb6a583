"""Applying this process's rate limits (`tracker.api.ratelimit`) to requests: 429 + Retry-After.

Two limits, checked at two places:

- per client address, on every HTTP request and WebSocket handshake except the health and
  metrics probes, by `TrackerApp` before anything else (before authentication, so guessing
  tokens is throttled too). The address is the ASGI scope's client, which uvicorn rewrites
  from X-Forwarded-For when the peer is a trusted proxy (FORWARDED_ALLOW_IPS);
- per device, by every ingest endpoint once the device is known, before its pings are
  stored: a refused request stores nothing, and the phone sends it again later.
"""

from __future__ import annotations

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from tracker.api.responses import ApiError
from tracker.api.runtime import Runtime
from tracker.store.devices import Device

# Probes must answer while a monitoring system polls them from one address.
EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


def rate_limited(message: str, retry_after: int) -> ApiError:
    """The 429 answer: JSON error with `Retry-After` in whole seconds."""
    return ApiError(
        429,
        "rate_limited",
        f"{message}; retry in {retry_after} s",
        {"Retry-After": str(retry_after)},
    )


def check_device(rt: Runtime, device: Device) -> None:
    """Count one ingest request of `device`; 429 when it is over its limit."""
    limit = rt.limits.device
    if limit.enabled:
        wait = limit.hit(str(device.id))
        if wait is not None:
            raise rate_limited(
                f"too many requests from device {device.unique_id} ({limit.describe()})", wait
            )


def client_wait(rt: Runtime, scope: Scope) -> int | None:
    """Count one request of the scope's client address: None when allowed, else the
    seconds it must wait. Addresses unknown to the server (a Unix socket) are not limited."""
    limit = rt.limits.ip
    if not limit.enabled or scope["path"] in EXEMPT_PATHS:
        return None
    client = scope.get("client")
    return None if client is None else limit.hit(client[0])


async def refuse_client(
    rt: Runtime,
    scope: Scope,
    receive: Receive,
    send: Send,
    retry_after: int,
    request_id: str | None = None,
) -> None:
    """Answer an HTTP request or a WebSocket handshake with the 429 of the address limit
    (with `X-Request-ID` when given: the native ingest path has no middleware to add it)."""
    error = rate_limited(
        f"too many requests from this address ({rt.limits.ip.describe()})", retry_after
    )
    body = orjson.dumps({"error": error.code, "message": error.message})
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", str(retry_after).encode()),
    ]
    if request_id is not None:
        headers.append((b"x-request-id", request_id.encode("ascii")))
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 429, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return
    await receive()  # websocket.connect
    if "websocket.http.response" in scope.get("extensions", {}):
        await send({"type": "websocket.http.response.start", "status": 429, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1008, "reason": "rate limited"})


class AddressLimit:
    """ASGI middleware applying the per-address limit in front of another app (the OsmAnd
    listener's; the main app checks it itself, ahead of its fast ingest path)."""

    def __init__(self, app: ASGIApp, rt: Runtime) -> None:
        self.app = app
        self.rt = rt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            wait = client_wait(self.rt, scope)
            if wait is not None:
                await refuse_client(self.rt, scope, receive, send, wait)
                return
        await self.app(scope, receive, send)
