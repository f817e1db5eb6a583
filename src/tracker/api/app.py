"""The Starlette application: routes, error handling, and the lifespan that builds a Runtime."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.types import Receive, Scope, Send

from tracker import heap, logs, metrics
from tracker.api import (
    clients,
    devices,
    doorstep,
    ingest,
    live,
    openapi,
    osmand_listener,
    pages,
    sessions,
    throttle,
    tracking,
    webhooks,
    workspace,
)
from tracker.api import metrics as metrics_api
from tracker.api import plans as plans_api
from tracker.api import routes as route_api
from tracker.api.guards import runtime
from tracker.api.orders_routes import ROUTES as ORDER_ROUTES
from tracker.api.paths import IdConvertor  # noqa: F401 (registers {name:id}, {name:any})
from tracker.api.responses import ApiError, ORJSONResponse, api_error_handler, error_response
from tracker.api.runtime import Runtime
from tracker.api.slowbody import has_body
from tracker.config import Settings
from tracker.store.db import DB_ERRORS

log = logging.getLogger(__name__)


async def healthz(request: Request) -> Response:
    """The process is up."""
    return ORJSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """The database answers."""
    rt = runtime(request)
    try:
        async with rt.pool.acquire(timeout=2.0) as conn:
            await conn.fetchval("SELECT 1")
    except DB_ERRORS:
        return error_response(503, "unavailable", "database unreachable", {"Retry-After": "5"})
    return ORJSONResponse({"status": "ready"})


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    headers = dict(exc.headers) if exc.headers else None
    return error_response(exc.status_code, code, str(exc.detail), headers)


async def refused_value(request: Request, exc: Exception) -> Response:
    """PostgreSQL refused a value taken from the request (a NUL character, a number or text
    too large for its column): the request is at fault, so 400, never 500."""
    log.info("refused value on %s %s: %s", request.method, request.url.path, exc)
    return error_response(
        400, "invalid_value", "a value in this request cannot be stored or looked up"
    )


async def server_error(request: Request, exc: Exception) -> Response:
    # Never leak a stack trace; the log has it.
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal_error", "internal server error")


def routes() -> list[BaseRoute]:
    """Every HTTP and WebSocket route of the server."""
    return [
        Route("/healthz", healthz),
        Route(ingest.PATH, ingest.Endpoint(), methods=["POST"]),
        Route("/readyz", readyz),
        Route("/metrics", metrics_api.scrape, methods=["GET"]),
        Route(openapi.PATH, openapi.openapi_json, methods=["GET"]),
        Route("/ingest/osmand", clients.osmand_positions, methods=["GET", "POST"]),
        Route("/ingest/owntracks", clients.owntracks_positions, methods=["POST"]),
        Route("/ingest/overland", clients.overland_positions, methods=["POST"]),
        Route("/api/v1/devices", devices.create_device, methods=["POST"]),
        Route("/api/v1/devices", devices.list_devices, methods=["GET"]),
        Route("/api/v1/devices/{device}", devices.update_device, methods=["PATCH"]),
        Route("/api/v1/devices/{device}/positions", devices.device_positions, methods=["GET"]),
        Route("/api/v1/routes", route_api.create_route, methods=["POST"]),
        # Before /{route_id}: "current" is not an id.
        Route("/api/v1/routes/current", route_api.current_route, methods=["GET"]),
        Route("/api/v1/routes/{route_id:id}", route_api.get_route, methods=["GET"]),
        Route(
            "/api/v1/routes/{route_id:id}/stops/{stop_id:id}",
            route_api.patch_stop,
            methods=["PATCH"],
        ),
        Route(
            "/api/v1/routes/{route_id:id}/stops/{stop_id:id}/tracking",
            tracking.reissue_link,
            methods=["POST"],
        ),
        Route("/api/v1/webhooks", webhooks.create_webhook, methods=["POST"]),
        Route("/api/v1/webhooks", webhooks.list_webhooks, methods=["GET"]),
        Route("/api/v1/webhooks/{webhook_id:id}", webhooks.get_webhook, methods=["GET"]),
        Route("/api/v1/webhooks/{webhook_id:id}", webhooks.delete_webhook, methods=["DELETE"]),
        Route(
            "/api/v1/webhooks/{webhook_id:id}/deliveries",
            webhooks.list_deliveries,
            methods=["GET"],
        ),
        *doorstep.ROUTES,  # before /t/{token:any}: it has /t/{token}/details and more
        # Anything below /t/ is taken as a link: every wrong one gets the same 404 page.
        Route("/t/{token:any}", tracking.tracking_page, methods=["GET"]),
        WebSocketRoute("/ws/track/{token}", tracking.track_feed),
        *sessions.ROUTES,
        WebSocketRoute("/ws/dispatch", live.dispatch_feed),
        *workspace.ROUTES,
        *ORDER_ROUTES,  # orders, depots, vehicles
        *plans_api.ROUTES,
        *pages.routes(),  # last: it mounts /static
    ]


# Paths whose last part is a secret (a customer's tracking token): the access log hides it.
SECRET_PATHS = ("/t/", "/ws/track/")


class TrackerApp(Starlette):
    """Starlette, with the native ingest endpoint answered ahead of its middleware stack,
    and every request given an id (and logged): by `logs.RequestContext` around Starlette,
    inline on the native ingest path."""

    def __init__(self, *args: Any, access_log: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._requests = logs.RequestContext(self._route, access_log, SECRET_PATHS)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        guarded = None
        if scope["type"] == "http" and has_body(scope):
            # Every body under a deadline; an anonymous caller's under a bound (slowbody).
            guarded = self.state.runtime.bodies.wrap(scope, receive)
            receive = guarded
        try:
            if ingest.is_native_ingest(scope):
                await self._native_ingest(scope, receive, send)
                return
            await self._requests(scope, receive, send)
        finally:
            if guarded is not None:
                guarded.release()

    async def _native_ingest(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The hot path does inline what `RequestContext` and `_route` do: wrapping its `send`
        # cost ~20 µs of CPU a request (a fifth of it), measured with 1 worker under wrk.
        rt = self.state.runtime
        rid, reset, started = self._requests.begin(scope)
        status = 500
        try:
            wait = throttle.client_wait(rt, scope)
            if wait is None:
                status = await ingest.serve(rt, scope, receive, send, rid)
            else:
                metrics.ADDRESS_LIMITED.inc()
                status = 429
                await throttle.refuse_client(rt, scope, receive, send, wait, rid)
        finally:
            self._requests.end(scope, status, started, reset)

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            # The per-address limit sees every request first, even unauthenticated ones.
            wait = throttle.client_wait(self.state.runtime, scope)
            if wait is not None:
                metrics.ADDRESS_LIMITED.inc()
                await throttle.refuse_client(self.state.runtime, scope, receive, send, wait)
                return
        await super().__call__(scope, receive, send)


def create_app(settings: Settings | None = None) -> Starlette:
    """Build the ASGI app; the lifespan connects on startup and flushes on shutdown."""
    settings = settings or Settings.from_env()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        rt = await Runtime.start(settings)
        app.state.runtime = rt
        try:
            async with osmand_listener.serving(rt, app.exception_handlers):
                yield
        finally:
            await rt.stop()

    return TrackerApp(
        routes=routes(),
        access_log=settings.access_log,
        lifespan=lifespan,
        exception_handlers={
            ApiError: api_error_handler,
            HTTPException: http_error,
            asyncpg.DataError: refused_value,
            Exception: server_error,
        },
    )


def app_from_env() -> Starlette:
    """Factory for `uvicorn --factory tracker.api.app:app_from_env` (used by `tracker serve`)."""
    app = create_app(Settings.from_env())
    heap.tune()
    return app
