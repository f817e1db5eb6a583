"""Logging: one JSON object per line (or plain text), request ids, and the access log.

`config(settings)` is the `logging.config.dictConfig` dictionary of the whole process,
uvicorn's loggers included: `tracker serve` hands it to uvicorn so every worker applies it,
and the other commands apply it with `configure`. With TRACKER_LOG_FORMAT=json (the
default) a record becomes `{"time", "level", "logger", "message", "request_id"?, ...extra}`.

Every HTTP request and WebSocket connection gets an id: the client's `X-Request-ID` when it
is a short token of safe characters, else a fresh random one. It is sent back as the
`X-Request-ID` response header and, through a context variable, attached to every record
logged while the request is handled. `RequestContext` does this as plain ASGI code around
the whole app, the native ingest fast path included, and writes the access log: one line
per request when TRACKER_ACCESS_LOG is on, and always for answers >= 400. The access log
shows the path without the query string, hides the tokens of `secret_prefixes` paths, and
never shows headers, so neither tokens nor credentials reach the log.
"""

from __future__ import annotations

import itertools
import logging
import logging.config
import re
import secrets
import time
from contextvars import ContextVar, Token
from typing import Any

from pythonjsonlogger.core import RESERVED_ATTRS
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tracker.config import Settings

REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)
HEADER = b"x-request-id"
# Accepted from clients: short, and only characters that are safe in a header and a log.
_SANE_ID = re.compile(rb"[A-Za-z0-9._:+=/-]{1,64}")

access = logging.getLogger("tracker.access")

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"


class RequestIdFilter(logging.Filter):
    """Adds `request_id` to records logged while a request is handled."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = REQUEST_ID.get()
        if request_id is not None:
            record.request_id = request_id
        return True


class UvicornWebSocketLineFilter(logging.Filter):
    """Drops uvicorn's `"WebSocket /path?query" [accepted]` lines: they carry the query
    string (`?token=`) and tracking tokens in paths. `RequestContext` logs the same
    connections without them."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.name == "uvicorn.error" and '"WebSocket %s"' in str(record.msg))


def config(settings: Settings) -> dict[str, Any]:
    """The `dictConfig` of the process: format, level, and uvicorn's loggers routed here."""
    level = settings.log_level.upper()
    if settings.log_format == "json":
        formatter: dict[str, Any] = {
            "()": "pythonjsonlogger.orjson.OrjsonFormatter",
            "fmt": "%(levelname)s %(name)s %(message)s",
            "rename_fields": {"levelname": "level", "name": "logger"},
            "timestamp": "time",
            # uvicorn adds its message again with terminal colour codes.
            "reserved_attrs": [*RESERVED_ATTRS, "color_message"],
        }
    else:
        formatter = {
            "()": "logging.Formatter",
            "fmt": TEXT_FORMAT,
            "defaults": {"request_id": "-"},
        }
    # uvicorn's loggers lose their own handlers and propagate to the root's; its access
    # log stays off (`RequestContext` writes ours).
    uvicorn = {"handlers": [], "propagate": True, "level": level}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            "request_id": {"()": RequestIdFilter},
            "no_websocket_urls": {"()": UvicornWebSocketLineFilter},
        },
        "formatters": {"default": formatter},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "default",
                "filters": ["request_id", "no_websocket_urls"],
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["default"], "level": level},
        "loggers": {
            "uvicorn": uvicorn,
            "uvicorn.error": uvicorn,
            "uvicorn.access": uvicorn,
            # httpx logs every request it makes (webhook URLs) at info.
            "httpx": {"level": "WARNING"},
            "httpcore": {"level": "WARNING"},
        },
    }


def configure(settings: Settings) -> None:
    """Apply `config(settings)` to this process."""
    logging.config.dictConfig(config(settings))


# Fresh ids: a random prefix per process and a counter, unique across instances and
# workers without a system call per request.
_PREFIX = secrets.token_hex(4)
_SEQUENCE = itertools.count(1)


def request_id(headers: list[tuple[bytes, bytes]]) -> str:
    """The client's `X-Request-ID` when it is sane, else a new one (16 hex characters)."""
    for name, value in headers:
        if name == HEADER:
            if _SANE_ID.fullmatch(value):
                return value.decode("ascii")
            break
    return f"{_PREFIX}{next(_SEQUENCE) & 0xFFFFFFFF:08x}"


class RequestContext:
    """Plain ASGI middleware: request id (context variable and response header) and the
    access log, for HTTP requests and WebSocket connections."""

    def __init__(
        self, app: ASGIApp, access_log: bool = False, secret_prefixes: tuple[str, ...] = ()
    ) -> None:
        self.app = app
        self.access_log = access_log
        self.secret_prefixes = secret_prefixes

    def begin(self, scope: Scope) -> tuple[str, Token[str | None], float]:
        """Give a request its id (in the context variable); returns what `end` needs."""
        rid = request_id(scope["headers"])
        return rid, REQUEST_ID.set(rid), time.perf_counter()

    def end(self, scope: Scope, status: int, started: float, reset: Token[str | None]) -> None:
        """Write the access line if one is due, and leave the request's context."""
        if status >= 400 or self.access_log:
            self._log(scope, status, started)
        REQUEST_ID.reset(reset)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            await self.app(scope, receive, send)
            return
        rid, reset, started = self.begin(scope)
        header = (HEADER, rid.encode("ascii"))
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            event = message["type"]
            if event == "http.response.start" or event == "websocket.http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            elif event == "websocket.accept":
                status = 101
                message["headers"] = [*message.get("headers", ()), header]
            elif event == "websocket.close" and status == 0:
                status = 403  # closed before the handshake: the server answers 403
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            if status == 0:
                status = 500
            raise
        finally:
            self.end(scope, status, started, reset)

    def _log(self, scope: Scope, status: int, started: float) -> None:
        duration_ms = round((time.perf_counter() - started) * 1000.0, 1)
        method = scope.get("method", "WS")
        path = scope["path"]
        for prefix in self.secret_prefixes:
            if path.startswith(prefix):
                path = prefix + "{token}"
                break
        client = scope.get("client")
        address = client[0] if client else None
        level = (
            logging.ERROR if status >= 500 else logging.WARNING if status >= 400 else logging.INFO
        )
        access.log(
            level,
            "%s %s %d %.1f ms",
            method,
            path,
            status,
            duration_ms,
            extra={
                "method": method,
                "path": path,
                "status": status,
                "duration_ms": duration_ms,
                "client": address,
            },
        )
