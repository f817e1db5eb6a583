"""Customer tracking: the page at `/t/{token}` and its live feed at `/ws/track/{token}`.

A stop's token is its only credential: no login, no cookie. The page and the feed show only
what `tracker.core.privacy` allows (this stop's destination, phase and ETA, the vehicle only on
its way here) and never an internal id: the customer's channel is keyed and filtered on the
server. An unknown, expired or malformed token gets the same 404 page, byte for byte.

Feed messages (JSON text frames, "v": 1): `{"type": "snapshot", "time", "tracking": {...}}`
on connect, then `{"type": "delta", "time", "tracking": {...}}` whenever what the customer
sees changed (at most one per hub tick; each carries the whole, small state), and
`{"type": "pong"}` for a client's `{"type": "ping"}`. The socket is closed (1000) when the
link expires.

Also `POST /api/v1/routes/{id}/stops/{stop_id}/tracking` (dispatcher): a new link for a
stop whose link was lost (the old one stops working), since links are shown only once.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import re
import string
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

import orjson
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.websockets import WebSocket, WebSocketDisconnect

from tracker.api.guards import require_dispatcher, runtime, unavailable
from tracker.api.live import SocketSink, socket_slot, too_many_sockets
from tracker.api.pages import web_dir
from tracker.api.responses import ApiError, ORJSONResponse, error_response
from tracker.api.runtime import Runtime
from tracker.config import Settings
from tracker.core import privacy, tokens
from tracker.core.model import JsonDict
from tracker.core.privacy import Position, Rule, TrackedStop
from tracker.live.fleet import PROTOCOL_VERSION, Event, Message, Vehicle
from tracker.live.hub import Subscriber
from tracker.store import routes as route_store
from tracker.store import tracking as store
from tracker.store.db import DB_ERRORS
from tracker.store.tracking import TrackingTarget

# What tokens.new_token() makes (43 characters); anything else cannot be a token.
TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{22,128}")
CHANNEL_PREFIX = "track:"
CLOSE_TRY_AGAIN = 1013

NOT_FOUND_HTML = (
    b'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
    b'<meta name="viewport" content="width=device-width, initial-scale=1">'
    b"<title>Not found</title></head>"
    b"<body><h1>Not found</h1><p>This tracking link does not exist or has expired.</p>"
    b"</body></html>\n"
)

PHASE_LABELS = {
    privacy.SCHEDULED: "Scheduled",
    privacy.OUT_FOR_DELIVERY: "Out for delivery",
    privacy.NEXT_STOP: "You are the next stop",
    privacy.ARRIVING: "Arriving soon",
    privacy.ARRIVED: "The driver has arrived",
    privacy.DELIVERED: "Delivered",
    privacy.FAILED: "Not delivered",
    privacy.CANCELLED: "Cancelled",
}


# -- links ----------------------------------------------------------------------------------


def tracking_url(settings: Settings, token: str) -> str:
    """The absolute customer link of a token."""
    return f"{settings.public_url.rstrip('/')}/t/{token}"


def new_tokens(count: int) -> tuple[list[str], list[bytes]]:
    """Fresh tracking tokens (256 random bits each) and the digests that get stored."""
    fresh = [tokens.new_token() for _ in range(count)]
    return fresh, [tokens.digest(t) for t in fresh]


def with_tracking_urls(route: JsonDict, fresh: Sequence[str], settings: Settings) -> JsonDict:
    """A copy of a Route JSON whose stops (in seq order) show the links of the tokens just
    made. A copy: the original went out on the bus, where no link may ever appear."""
    links = dict(
        zip(
            sorted(s["seq"] for s in route["stops"]),
            (tracking_url(settings, t) for t in fresh),
            strict=True,
        )
    )
    stops = [{**s, "tracking_url": links[s["seq"]]} for s in route["stops"]]
    return {**route, "stops": stops}


async def reissue_link(request: Request) -> Response:
    """POST /api/v1/routes/{id}/stops/{stop_id}/tracking → {"tracking_url": ...}."""
    await require_dispatcher(request)
    rt = runtime(request)
    route_id: int = request.path_params["route_id"]
    stop_id: int = request.path_params["stop_id"]
    from tracker.api.link_keys import issue  # (workspace: links listed again; it imports this)
    from tracker.store.dispatch_board import keep_link_salt

    fresh, digests, salts = issue(rt.settings, 1)
    try:
        found = await store.replace_token(rt.pool, route_id, stop_id, digests[0])
        if found:
            await keep_link_salt(rt.pool, stop_id, salts[0] if salts else None)
    except DB_ERRORS as exc:
        raise unavailable(rt) from exc
    if not found:
        raise ApiError(404, "not_found", f"route {route_id} has no stop {stop_id}")
    return ORJSONResponse({"tracking_url": tracking_url(rt.settings, fresh[0])})


# -- finding the stop -------------------------------------------------------------------------


async def _target(rt: Runtime, token: str) -> TrackingTarget | None:
    """The stop behind `token`, or None (malformed, unknown and expired alike)."""
    if not TOKEN_RE.fullmatch(token):
        return None
    return await store.lookup(rt.pool, tokens.digest(token), rt.settings.tracking_ttl_s)


def rule(settings: Settings) -> Rule:
    """The visibility rule of this server's settings."""
    return Rule(
        max_stops_away=settings.customer_max_stops_away,
        arriving_s=settings.arriving_s,
        hide_radius_m=settings.customer_hide_radius_m,
    )


def _position(vehicle: Vehicle) -> Position | None:
    try:
        when = datetime.fromisoformat(vehicle["time"])
        course = vehicle.get("course")
        return Position(
            float(vehicle["lat"]),
            float(vehicle["lon"]),
            when,
            None if course is None else float(course),
        )
    except (KeyError, TypeError, ValueError):
        return None


def driving_route(summary: Any) -> int | None:
    """The route a vehicle drives by its latest route summary (None: not known)."""
    if isinstance(summary, dict) and summary.get("status") == privacy.ROUTE_ACTIVE:
        found = summary.get("id")
        return found if isinstance(found, int) else None
    return None


def _newer(a: Position | None, b: Position | None) -> Position | None:
    if a is None or (b is not None and b.time > a.time):
        return b
    return a


# -- the customer's channel -------------------------------------------------------------------


class CustomerView:
    """One stop's customer channel on the live hub (a hub `View` plus the channel's encoder).

    The hub hands it every update of its vehicle (it indexes channels by `device`); the view
    keeps the stop current with `tracker.core.privacy` and passes an update on only when what the
    customer sees changed. Frames always carry the current customer state, so a frame sent
    late to a slow reader is as fresh as any.
    """

    def __init__(
        self,
        tracked: TrackedStop,
        device: str,
        position: Position | None,
        rule: Rule,
        driving_route: int | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.device = device
        self.tracked = tracked
        self.position = position
        self.rule = rule
        self.driving_route = driving_route
        self._clock = clock
        self.current = self._state()
        self._merged: object = None
        # When this server saw the stop done (monotonic): the link expires a TTL later.
        self.closed_mono: float | None = time.monotonic() if tracked.done else None

    def _state(self) -> JsonDict:
        return privacy.customer_message(
            self.tracked, self.position, self._clock(), self.rule, self.driving_route
        )

    def _changed(self) -> JsonDict | None:
        state = self._state()
        if self.tracked.done and self.closed_mono is None:
            self.closed_mono = time.monotonic()
        if state == self.current:
            return None
        self.current = state
        return state

    def seed(self, route: JsonDict | None, position: Position | None) -> None:
        """Fold in what another connect just loaded from the database."""
        if route is not None:
            self.tracked = privacy.merge_route(self.tracked, route)
        self.position = _newer(self.position, position)
        self._changed()

    # hub View protocol

    def vehicle(self, vehicle: Vehicle) -> Vehicle | None:
        """A vehicle update (position and route summary) → the new state, if it changed."""
        if vehicle.get("id") != self.device:
            return None
        route = vehicle.get("route")
        # The hub hands every position the same summary object until the route changes:
        # merging it again would find nothing new.
        if isinstance(route, dict) and route is not self._merged:
            self.tracked = privacy.merge_route(self.tracked, route)
            self.driving_route = driving_route(route)
            self._merged = route
        self.position = _newer(self.position, _position(vehicle))
        return self._changed()

    def event(self, event: Event) -> Event | None:
        """A route event → the new state, if it changed (events themselves never pass)."""
        self.tracked = privacy.apply_event(self.tracked, event)
        return self._changed()

    # the channel's encoder

    def encode(self, message: Message) -> str:
        """A hub message as the customer frame: snapshot and delta carry the current state."""
        kind = message.get("type")
        frame: JsonDict = {"type": kind, "v": PROTOCOL_VERSION, "time": message.get("time")}
        if kind in ("snapshot", "delta"):
            frame["tracking"] = self.current
        return orjson.dumps(frame).decode()

    def closed_since(self, when: datetime) -> None:
        """The database says the stop (or its route) closed at `when` (server time)."""
        age = max(0.0, (datetime.now(UTC) - when).total_seconds())
        since = time.monotonic() - age
        if self.closed_mono is None or since < self.closed_mono:
            self.closed_mono = since

    def expired(self, ttl_s: float) -> bool:
        """Whether the link has run out since this server saw the stop done."""
        return self.closed_mono is not None and time.monotonic() - self.closed_mono > ttl_s


def channel_key(target: TrackingTarget) -> str:
    """The hub channel of a stop (server-side only; never sent)."""
    return f"{CHANNEL_PREFIX}{target.stop_id}"


async def _load(rt: Runtime, target: TrackingTarget) -> TrackedStop | None:
    route = await route_store.route_by_id(rt.pool, target.route_id)
    return None if route is None else privacy.from_route(route, target.stop_id)


# -- HTTP page --------------------------------------------------------------------------------


def _img_sources(tile_url: str) -> str:
    parts = urlsplit(tile_url.replace("{s}", "a"))
    if parts.scheme in ("http", "https") and parts.netloc:
        host = parts.netloc
        if "{s}" in tile_url.split("/")[2]:
            host = "*." + host.split(".", 1)[1] if "." in host else host
        return f"'self' data: {parts.scheme}://{host}"
    return "'self' data:"


@lru_cache(maxsize=8)
def content_security_policy(tile_url: str) -> str:
    """Nothing but this origin (and the tile server's images) may run or load."""
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; "
        f"img-src {_img_sources(tile_url)}; connect-src 'self'; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'none'"
    )


def _headers(settings: Settings) -> dict[str, str]:
    # no-store: a shared or back-button cache must not keep a customer's page; no-referrer:
    # the token in the URL must not leak to the tile server or any link target.
    return {
        "Cache-Control": "no-store",
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
        "X-Robots-Tag": "noindex, nofollow",
        "Content-Security-Policy": content_security_policy(settings.tile_url),
    }


def not_found(settings: Settings) -> Response:
    """The one 404 answer for any token that does not open a page."""
    return Response(NOT_FOUND_HTML, 404, _headers(settings), media_type="text/html")


def _template() -> string.Template:
    return string.Template((web_dir() / "track.html").read_text(encoding="utf-8"))


def render_page(settings: Settings, state: JsonDict) -> str:
    """The tracking page with its first state filled in (the feed keeps it current)."""
    name = str(state["destination"]["name"] or "Your delivery")
    phase = str(state["phase"])
    return _template().substitute(
        title=html.escape(name),
        name=html.escape(name),
        phase=html.escape(PHASE_LABELS.get(phase, phase)),
        state=html.escape(orjson.dumps(state).decode(), quote=True),
        tile_url=html.escape(settings.tile_url, quote=True),
        tile_attribution=html.escape(settings.tile_attribution, quote=True),
    )


async def tracking_page(request: Request) -> Response:
    """GET /t/{token}: the customer's page, or the 404 page."""
    rt = runtime(request)
    token: str = request.path_params["token"]
    try:
        target = await _target(rt, token)
        tracked = None if target is None else await _load(rt, target)
    except DB_ERRORS:
        return Response(
            b"Temporarily unavailable, please reload in a moment.\n",
            503,
            {**_headers(rt.settings), "Retry-After": str(rt.settings.retry_after_s)},
            media_type="text/plain",
        )
    if target is None or tracked is None:
        return not_found(rt.settings)
    position, driving = target.position, target.driving_route
    known = rt.hub.fleet.get(target.device)
    if known is not None:
        position = _newer(position, _position(known))
        driving = driving_route(known.get("route")) or driving
    state = privacy.customer_message(
        tracked, position, datetime.now(UTC), rule(rt.settings), driving
    )
    return HTMLResponse(render_page(rt.settings, state), headers=_headers(rt.settings))


# -- WebSocket feed ---------------------------------------------------------------------------


async def _refuse(websocket: WebSocket, response: Response) -> None:
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(response)
    else:
        await websocket.close(code=1008)


async def track_feed(websocket: WebSocket) -> None:
    """GET /ws/track/{token}: this stop's state as a snapshot, then deltas."""
    rt = runtime(websocket)
    token: str = websocket.path_params["token"]
    try:
        target = await _target(rt, token)
        tracked = None if target is None else await _load(rt, target)
    except DB_ERRORS:
        await _refuse(websocket, Response(b"", 503, {"Retry-After": "5"}))
        return
    if target is None or tracked is None:
        await _refuse(websocket, not_found(rt.settings))
        return
    slot = socket_slot("track", token)
    slots = rt.limits.sockets
    if not slots.acquire(slot):
        message = too_many_sockets(slots.per_key)
        await _refuse(websocket, error_response(429, "too_many_sockets", message))
        return
    try:
        await _feed(websocket, rt, target, tracked)
    finally:
        slots.release(slot)


async def _feed(
    websocket: WebSocket, rt: Runtime, target: TrackingTarget, tracked: TrackedStop
) -> None:
    await websocket.accept()
    hub = rt.hub
    fresh = CustomerView(
        tracked, target.device, target.position, rule(rt.settings), target.driving_route
    )
    sub = hub.subscribe(channel_key(target), SocketSink(websocket), fresh, fresh.encode)
    view = sub.channel.view
    assert isinstance(view, CustomerView)
    watchdog: asyncio.Task[None] | None = None
    try:
        try:
            # Load again now that updates reach the channel: whatever happened between the
            # first load and the subscription is in one or the other.
            route = await route_store.route_by_id(rt.pool, target.route_id)
        except DB_ERRORS:
            await websocket.close(CLOSE_TRY_AGAIN, "database unavailable, reconnect later")
            return
        known = hub.fleet.get(target.device)
        view.seed(route, _newer(target.position, None if known is None else _position(known)))
        if target.closed_at is not None:
            view.closed_since(target.closed_at)
        _snapshot(sub)
        watchdog = asyncio.create_task(_expire(websocket, view, rt.settings.tracking_ttl_s))
        async for text in websocket.iter_text():
            _client_message(rt, sub, text)
    except WebSocketDisconnect:
        pass
    finally:
        if watchdog is not None:
            watchdog.cancel()
        hub.unsubscribe(sub)


def _snapshot(sub: Subscriber) -> None:
    sub.reset(sub.channel.encode({"type": "snapshot", "time": datetime.now(UTC).isoformat()}))


def _client_message(rt: Runtime, sub: Subscriber, text: str) -> None:
    try:
        kind = orjson.loads(text).get("type")
    except (orjson.JSONDecodeError, AttributeError):
        return  # nothing is required from clients; ignore what we do not understand
    if kind == "ping":
        rt.hub.pong(sub)
    elif kind == "resync":
        _snapshot(sub)


async def _expire(websocket: WebSocket, view: CustomerView, ttl_s: float) -> None:
    """Close the socket once the link has expired (checked a few times per TTL)."""
    interval = min(max(ttl_s / 4.0, 0.25), 60.0)
    while not view.expired(ttl_s):
        await asyncio.sleep(interval)
    with contextlib.suppress(Exception):
        await websocket.close(1000, "tracking link expired")
