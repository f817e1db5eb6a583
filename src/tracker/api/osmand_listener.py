"""The optional second listener that makes Traccar Client's default server URL work.

Traccar serves the OsmAnd protocol at ``/`` of its own port, 5055, and that is the URL
Traccar Client and OsmAnd's tracking plugin are set up with. With ``TRACKER_OSMAND_PORT``
(``tracker serve --osmand-port 5055``) this server listens there too.

How: a second uvicorn server in the same process and event loop, started by the main
app's lifespan once the Runtime exists and stopped before the Runtime flushes. Its tiny
Starlette app routes only ``/`` (GET and POST) to the OsmAnd endpoint and shares the main
app's Runtime, so a ping on port 5055 takes exactly the path of one posted to
``/ingest/osmand``: the same group commit, the same filters and their memory of each
device's last fix, the same live publication. Nothing else of the API is reachable there.

With several workers every worker process binds the port with SO_REUSEPORT and the kernel
spreads connections among them, as uvicorn's shared socket does for the main port. The
listener installs no signal handlers: the main server owns shutdown and its lifespan
stops this listener (after the main port has drained, before the writer's last flush).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Generator, Mapping
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route

from tracker import logs
from tracker.api import clients, throttle
from tracker.api.runtime import Runtime
from tracker.api.slowbody import BodyLimit

log = logging.getLogger(__name__)


class _ListenerServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to the main server."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def osmand_app(rt: Runtime, exception_handlers: Mapping[Any, Any]) -> Starlette:
    """The ASGI app of the listener: the OsmAnd endpoint at ``/``, sharing `rt`."""
    app = Starlette(
        routes=[Route("/", clients.osmand_positions, methods=["GET", "POST"])],
        exception_handlers=dict(exception_handlers),
        middleware=[
            Middleware(logs.RequestContext, access_log=rt.settings.access_log),
            Middleware(throttle.AddressLimit, rt=rt),
            Middleware(BodyLimit, guard=rt.bodies),
        ],
    )
    app.state.runtime = rt
    return app


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to (host, port), shareable by worker processes (SO_REUSEPORT)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


@contextlib.asynccontextmanager
async def serving(rt: Runtime, exception_handlers: Mapping[Any, Any]) -> AsyncIterator[int | None]:
    """Run the listener while the context is open when the settings ask for one.

    Yields the port it listens on (None when disabled). A port that cannot be bound
    raises OSError, which fails the server's startup with the reason.
    """
    settings = rt.settings
    if settings.osmand_port is None:
        yield None
        return
    sock = bind(settings.osmand_host, settings.osmand_port)
    port: int = sock.getsockname()[1]
    config = uvicorn.Config(
        osmand_app(rt, exception_handlers),
        lifespan="off",
        log_config=None,
        access_log=False,
        ws="none",
        timeout_graceful_shutdown=10,
    )
    server = _ListenerServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="osmand-listener")
    while not server.started:
        if task.done():
            task.result()  # raises what stopped it
            raise RuntimeError("the OsmAnd listener stopped during startup")
        await asyncio.sleep(0.01)
    log.info("OsmAnd listener on http://%s:%d/", settings.osmand_host, port)
    try:
        yield port
    finally:
        server.should_exit = True
        await task
