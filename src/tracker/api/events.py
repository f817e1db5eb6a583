"""Event history: `GET /api/v1/events?device=&type=&route_id=&since=&before=&limit=`
(dispatcher): the newest stored route events first, as the live feed shows them, so the
map's feed can show what happened before the page was opened. `type` may repeat or hold
several types separated by commas; `before` pages on with the last id seen.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from tracker.api.fields import int_param, invalid, query_only, text_param
from tracker.api.guards import require_dispatcher, runtime, unavailable
from tracker.api.responses import ORJSONResponse
from tracker.core.timeparse import TimeFormatError, parse_time
from tracker.store import dispatch_board as board
from tracker.store.db import DB_ERRORS

MAX_EVENTS = 500
DEFAULT_EVENTS = 100
MAX_TYPES = 20
ID_LIMIT = 2**62


async def list_events(request: Request) -> Response:
    """GET /api/v1/events → {"events": [{id, type, time, device, route_id, stop_id, data}]}."""
    await require_dispatcher(request)
    query_only(request, ("device", "type", "route_id", "since", "before", "limit"))
    types = tuple(
        t for raw in request.query_params.getlist("type") for t in raw.split(",") if t.strip()
    )
    if len(types) > MAX_TYPES or any(len(t) > 64 for t in types):
        raise invalid(f"type: at most {MAX_TYPES} event types of at most 64 characters")
    since = None
    raw_since = request.query_params.get("since")
    if raw_since:
        try:
            since = parse_time(raw_since)
        except TimeFormatError as exc:
            raise invalid(f"since: {exc}") from exc
    route_id = request.query_params.get("route_id")
    query = board.EventQuery(
        device=text_param(request, "device"),
        types=tuple(t.strip() for t in types),
        route_id=None if route_id is None else int_param(request, "route_id", 0, 1, ID_LIMIT),
        since=since,
        before_id=(
            None
            if request.query_params.get("before") is None
            else int_param(request, "before", 0, 1, ID_LIMIT)
        ),
        limit=int_param(request, "limit", DEFAULT_EVENTS, 1, MAX_EVENTS),
    )
    rt = runtime(request)
    try:
        events = await board.recent_events(rt.pool, query)
    except DB_ERRORS as exc:
        raise unavailable(rt) from exc
    return ORJSONResponse({"events": events})
