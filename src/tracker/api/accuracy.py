"""Live ETA accuracy: `GET /api/v1/accuracy?since=&until=` (dispatcher or admin).

Every stop arrival scored against the ETAs its stop was shown before (what the
`stop.eta_changed` events published: see `core.accuracy`), pooled over the arrivals in
[since, until) (ISO-8601 or epoch; both optional, default everything stored), by horizon
bucket: samples, MAE, bias, coverage of the 80 % interval, TransitApp accurate share, and
the TransitApp ETA Accuracy Benchmark score.
"""

from __future__ import annotations

from datetime import datetime

from starlette.requests import Request
from starlette.responses import Response

from tracker.api.fields import invalid, query_only
from tracker.api.guards import require_dispatcher, runtime, unavailable
from tracker.api.responses import ORJSONResponse
from tracker.api.routes import EARLIEST, LATEST
from tracker.core import accuracy
from tracker.core.timeparse import TimeFormatError, parse_time
from tracker.store import accuracy as store
from tracker.store.db import DB_ERRORS


def _time(request: Request, name: str) -> datetime | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    try:
        when = parse_time(raw)
    except TimeFormatError as exc:
        raise invalid(f"{name}: {exc}") from exc
    if not EARLIEST <= when < LATEST:
        raise invalid(f"{name}: out of range")
    return when


async def get_accuracy(request: Request) -> Response:
    """GET /api/v1/accuracy → {since, until, arrivals, buckets, all, score, transit_bands,
    horizons_s}."""
    await require_dispatcher(request)
    query_only(request, ("since", "until"))
    since = _time(request, "since")
    until = _time(request, "until")
    if since is not None and until is not None and until <= since:
        raise invalid("until: must be after since")
    rt = runtime(request)
    try:
        by_horizon, arrivals = await store.totals(rt.pool, since, until)
    except DB_ERRORS as exc:
        raise unavailable(rt) from exc
    report = accuracy.report(by_horizon)
    return ORJSONResponse(
        {
            "since": None if since is None else since.isoformat(),
            "until": None if until is None else until.isoformat(),
            "arrivals": arrivals,
            **report.to_json(),
            "horizons_s": list(accuracy.HORIZONS_S),
        }
    )
