"""Request ids and the access log of `logs.RequestContext`, driven as the ASGI app it is."""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest
from starlette.types import Message, Receive, Scope, Send

from tracker import logs


def test_a_sane_client_id_is_kept_anything_else_replaced() -> None:
    assert logs.request_id([(b"x-request-id", b"test-123")]) == "test-123"
    assert logs.request_id([(b"x-request-id", b"a1:b2/c3+d=e_f.g")]) == "a1:b2/c3+d=e_f.g"
    for bad in (b"", b"has space", b"x" * 65, b'quote"', b"new\nline", "ü".encode()):
        made = logs.request_id([(b"x-request-id", bad)])
        assert re.fullmatch("[0-9a-f]{16}", made), bad
    first, second = logs.request_id([]), logs.request_id([(b"host", b"x")])
    assert first != second


class App:
    """An ASGI app answering `status`, remembering the request id it saw."""

    def __init__(self, status: int) -> None:
        self.status = status
        self.seen: str | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.seen = logs.REQUEST_ID.get()
        logging.getLogger("tracker.test").info("inside")
        if scope["type"] == "websocket":
            await send({"type": "websocket.accept"})
            return
        await send({"type": "http.response.start", "status": self.status, "headers": []})
        await send({"type": "http.response.body", "body": b""})


async def call(
    middleware: logs.RequestContext, path: str, headers: list[tuple[bytes, bytes]], kind: str
) -> list[Message]:
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        sent.append(message)

    scope: dict[str, Any] = {
        "type": kind,
        "path": path,
        "query_string": b"token=secret",
        "headers": headers,
        "client": ("10.0.0.7", 5555),
    }
    if kind == "http":
        scope["method"] = "GET"
    await middleware(scope, receive, send)
    return sent


def access_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "tracker.access"]


class Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


async def test_the_id_is_returned_and_on_records_made_meanwhile(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = App(200)
    caplog.set_level(logging.INFO)
    keep = Keep()
    keep.addFilter(logs.RequestIdFilter())
    logger = logging.getLogger("tracker.test")
    logger.addHandler(keep)
    try:
        sent = await call(
            logs.RequestContext(app), "/healthz", [(b"x-request-id", b"test-123")], "http"
        )
        logger.info("after")
    finally:
        logger.removeHandler(keep)
    assert (b"x-request-id", b"test-123") in sent[0]["headers"]
    assert app.seen == "test-123"
    assert logs.REQUEST_ID.get() is None  # reset after the request
    inside, after = keep.records
    assert getattr(inside, "request_id", None) == "test-123"
    assert not hasattr(after, "request_id")
    assert access_records(caplog) == []  # a success is not logged with the access log off


async def test_errors_are_always_logged_and_tokens_hidden(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    middleware = logs.RequestContext(App(404), secret_prefixes=("/t/",))
    await call(middleware, "/t/the-secret-link", [(b"x-request-id", b"rid-9")], "http")
    [record] = access_records(caplog)
    assert record.levelno == logging.WARNING
    fields = {k: getattr(record, k) for k in ("method", "path", "status", "client")}
    assert fields == {"method": "GET", "path": "/t/{token}", "status": 404, "client": "10.0.0.7"}
    assert "secret" not in record.getMessage()
    assert getattr(record, "duration_ms", -1) >= 0


async def test_server_errors_log_at_error_level(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    await call(logs.RequestContext(App(503)), "/readyz", [], "http")
    [record] = access_records(caplog)
    assert record.levelno == logging.ERROR


async def test_the_access_log_switch_logs_every_request_and_socket(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    middleware = logs.RequestContext(App(200), access_log=True)
    await call(middleware, "/healthz", [], "http")
    sent = await call(middleware, "/ws/dispatch", [(b"x-request-id", b"ws-1")], "websocket")
    assert (b"x-request-id", b"ws-1") in sent[0]["headers"]
    http, ws = access_records(caplog)
    assert (http.levelno, http.getMessage().split()[:3]) == (
        logging.INFO,
        ["GET", "/healthz", "200"],
    )
    assert ws.getMessage().split()[:3] == ["WS", "/ws/dispatch", "101"]


def test_config_names_the_chosen_format() -> None:
    from tracker.config import Settings

    json_config = logs.config(Settings())
    text_config = logs.config(Settings(log_format="text", log_level="warning"))
    assert json_config["formatters"]["default"]["()"].startswith("pythonjsonlogger")
    assert text_config["formatters"]["default"]["fmt"] == logs.TEXT_FORMAT
    assert text_config["root"]["level"] == "WARNING"
    assert json_config["loggers"]["uvicorn.error"]["handlers"] == []
