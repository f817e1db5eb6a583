"""GET /metrics: the Prometheus scrape endpoint.

A scraper authenticates with `Authorization: Bearer <TRACKER_METRICS_TOKEN>`; the admin's
credentials work too (a dispatcher's do not: 403). The metrics token is checked first and
needs no database, so metrics stay readable while PostgreSQL is down.
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from tracker import metrics
from tracker.api.guards import require_admin, runtime
from tracker.core import tokens
from tracker.services.auth import bearer


async def scrape(request: Request) -> Response:
    """Every metric of the server (all workers), in Prometheus text format."""
    expected = runtime(request).settings.metrics_token
    given = bearer(request.headers.get("authorization"))
    if not (expected and given and tokens.same(given, expected)):
        await require_admin(request)
    # Reading the workers' files is blocking I/O: keep it off the event loop.
    body, content_type = await run_in_threadpool(metrics.exposition)
    return Response(body, headers={"Content-Type": content_type})
