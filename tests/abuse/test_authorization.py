"""Who may call what: every endpoint of the app × six callers, each a real request.

The callers: nobody; the device whose resources are reached for (`device`); another
registered device using its own token on them (`other`); a customer holding a stop's
tracking link (`customer`); a dispatcher API key; the admin. Each sends its credential the
way the endpoint takes credentials (bearer header, `?token=`, HTTP Basic, session cookie,
the token in the path, a WebSocket handshake). MATRIX says, per endpoint, the status each
caller must get; `test_matrix_covers_every_route` fails when the app has a route the
matrix does not list, so a new endpoint cannot ship without deciding who may use it.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.abuse.conftest import HOOK_URL, OWNER_ID, SPARE_ID, Fleet, route_body
from tests.abuse.test_openapi import app_operations
from tests.conftest import add_device
from tracker.api.guards import SESSION_COOKIE
from tracker.core import tokens

CALLERS = ("none", "device", "other", "customer", "dispatcher", "admin")
ACCEPTED = 101  # a WebSocket handshake that was accepted

Expect = tuple[int, int, int, int, int, int]  # per caller, in the order of CALLERS

PUBLIC: Expect = (200, 200, 200, 200, 200, 200)
STAFF: Expect = (401, 401, 401, 401, 200, 200)
ADMIN: Expect = (401, 401, 401, 401, 403, 200)

# (method, path as in the OpenAPI document; "WS" for WebSocket handshakes) -> expected.
MATRIX: dict[tuple[str, str], Expect] = {
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/readyz"): PUBLIC,
    ("GET", "/openapi.json"): PUBLIC,
    ("GET", "/metrics"): ADMIN,
    # The body names the owner: another device's token is refused for it.
    ("POST", "/api/v1/positions"): (401, 202, 403, 401, 401, 401),
    # OsmAnd has no credential (as in Traccar): the registered unique id is the identity.
    ("GET", "/ingest/osmand"): PUBLIC,
    ("POST", "/ingest/osmand"): PUBLIC,
    # Basic username = the owner, password = the caller's token.
    ("POST", "/ingest/owntracks"): (401, 200, 401, 401, 401, 401),
    # The token is the identity: another device stores under itself, never the owner.
    ("POST", "/ingest/overland"): (401, 200, 200, 401, 401, 401),
    ("GET", "/api/v1/devices"): STAFF,
    ("POST", "/api/v1/devices"): (401, 401, 401, 401, 403, 201),
    ("PATCH", "/api/v1/devices/{device}"): ADMIN,
    ("GET", "/api/v1/devices/{device}/positions"): STAFF,
    ("POST", "/api/v1/routes"): (401, 401, 401, 401, 201, 201),
    # Each device gets its own route only; the other device has none.
    ("GET", "/api/v1/routes"): STAFF,
    ("GET", "/api/v1/routes/current"): (401, 200, 404, 401, 401, 401),
    ("GET", "/api/v1/routes/{route_id}"): (401, 200, 403, 401, 200, 200),
    ("PATCH", "/api/v1/routes/{route_id}/stops/{stop_id}"): (401, 200, 403, 401, 200, 200),
    ("POST", "/api/v1/routes/{route_id}/stops/{stop_id}/tracking"): STAFF,
    ("POST", "/api/v1/routes/{route_id}/cancel"): STAFF,
    ("POST", "/api/v1/routes/{route_id}/reassign"): STAFF,
    ("GET", "/api/v1/routes/{route_id}/path"): (401, 200, 403, 401, 200, 200),
    ("GET", "/api/v1/events"): STAFF,
    ("GET", "/api/v1/accuracy"): STAFF,
    ("GET", "/api/v1/keys"): ADMIN,
    ("POST", "/api/v1/keys"): (401, 401, 401, 401, 403, 201),
    ("POST", "/api/v1/keys/{key_id}/revoke"): ADMIN,
    ("POST", "/api/v1/devices/{device}/token"): ADMIN,
    # The link is the credential; whatever else is put there is an unknown link.
    ("GET", "/t/{token}"): (404, 404, 404, 200, 404, 404),
    ("GET", "/api/v1/webhooks"): STAFF,
    ("POST", "/api/v1/webhooks"): (401, 401, 401, 401, 201, 201),
    ("GET", "/api/v1/webhooks/{webhook_id}"): STAFF,
    ("DELETE", "/api/v1/webhooks/{webhook_id}"): (401, 401, 401, 401, 204, 204),
    ("GET", "/api/v1/webhooks/{webhook_id}/deliveries"): STAFF,
    # Signing in: nobody sends no token (400); only staff tokens open a session.
    ("POST", "/api/v1/session"): (400, 401, 401, 401, 200, 200),
    ("GET", "/api/v1/session"): STAFF,
    ("DELETE", "/api/v1/session"): (204, 204, 204, 204, 204, 204),
    ("POST", "/api/v1/orders"): (401, 401, 401, 401, 201, 201),
    ("GET", "/api/v1/orders"): STAFF,
    ("POST", "/api/v1/orders/import"): STAFF,
    ("GET", "/api/v1/orders/{order_id}"): STAFF,
    ("PATCH", "/api/v1/orders/{order_id}"): STAFF,
    ("POST", "/api/v1/orders/{order_id}/cancel"): STAFF,
    ("POST", "/api/v1/depots"): (401, 401, 401, 401, 201, 201),
    ("GET", "/api/v1/depots"): STAFF,
    ("GET", "/api/v1/depots/{depot_id}"): STAFF,
    ("PATCH", "/api/v1/depots/{depot_id}"): STAFF,
    ("DELETE", "/api/v1/depots/{depot_id}"): (401, 401, 401, 401, 204, 204),
    ("POST", "/api/v1/vehicles"): (401, 401, 401, 401, 201, 201),
    ("GET", "/api/v1/vehicles"): STAFF,
    ("GET", "/api/v1/vehicles/{vehicle_id}"): STAFF,
    ("PATCH", "/api/v1/vehicles/{vehicle_id}"): STAFF,
    ("DELETE", "/api/v1/vehicles/{vehicle_id}"): (401, 401, 401, 401, 204, 204),
    ("GET", "/api/v1/sessions"): STAFF,
    # A session of the caller's own (the admin may end any): opened for each request.
    ("DELETE", "/api/v1/sessions/{session_id}"): (401, 401, 401, 401, 204, 204),
    ("GET", "/"): PUBLIC,
    ("GET", "/map"): PUBLIC,
    ("GET", "/driver"): PUBLIC,
    ("GET", "/docs"): PUBLIC,
    ("GET", "/manage"): PUBLIC,
    ("GET", "/plan"): PUBLIC,
    ("GET", "/static/vendor/polyline/{path}"): PUBLIC,
    ("GET", "/static/vendor/swagger-ui/{path}"): PUBLIC,
    ("GET", "/static/{path}"): PUBLIC,
    ("GET", "/static/vendor/leaflet/{path}"): PUBLIC,
    # Planning (staff). Re-planning is asked about things that do not exist: the guard
    # answers before the lookup, and the shared route stays as it is.
    ("POST", "/api/v1/plans"): (401, 401, 401, 401, 201, 201),
    ("GET", "/api/v1/plans/{plan_id}"): STAFF,
    ("POST", "/api/v1/plans/{plan_id}/dispatch"): (401, 401, 401, 401, 201, 201),
    # An edit of an order the plan does not hold: staff get past the guard to the 400.
    ("POST", "/api/v1/plans/{plan_id}/move"): (401, 401, 401, 401, 400, 400),
    ("POST", "/api/v1/replan/insert"): (401, 401, 401, 401, 404, 404),
    ("POST", "/api/v1/replan/reoptimise"): (401, 401, 401, 401, 404, 404),
    ("POST", "/api/v1/replan/move"): (401, 401, 401, 401, 404, 404),
    # The doorstep (issue 16). Reports go to the spare stop; the customer's link calls use a
    # fresh delivery of their own each time (see `fresh_link`), so no cell changes another.
    ("POST", "/api/v1/routes/{route_id}/stops/{stop_id}/report"): (401, 200, 403, 401, 200, 200),
    ("GET", "/api/v1/proofs/{proof_id}"): STAFF,
    ("GET", "/api/v1/driver/settings"): (401, 200, 200, 401, 200, 200),
    ("GET", "/t/{token}/details"): (404, 404, 404, 200, 404, 404),
    ("POST", "/t/{token}/instructions"): (404, 404, 404, 200, 404, 404),
    ("POST", "/t/{token}/reschedule"): (404, 404, 404, 201, 404, 404),
    ("POST", "/t/{token}/rating"): (404, 404, 404, 201, 404, 404),
    ("POST", "/t/{token}/messages"): (404, 404, 404, 200, 404, 404),
    ("GET", "/t/{token}/proofs/{proof_id}"): (404, 404, 404, 200, 404, 404),
    ("GET", "/api/v1/messages"): STAFF,
    ("GET", "/api/v1/message-templates"): STAFF,
    ("PUT", "/api/v1/message-templates/{kind}/{channel}/{language}"): STAFF,
    ("DELETE", "/api/v1/message-templates/{kind}/{channel}/{language}"): (
        401,
        401,
        401,
        401,
        204,
        204,
    ),
    ("GET", "/api/v1/reschedules"): STAFF,
    ("POST", "/api/v1/reschedules/{request_id}"): STAFF,
    ("GET", "/api/v1/ratings"): STAFF,
    ("WS", "/ws/dispatch"): (401, 401, 401, 401, ACCEPTED, ACCEPTED),
    ("WS", "/ws/track/{token}"): (404, 404, 404, ACCEPTED, 404, 404),
}


def secret(fleet: Fleet, caller: str) -> str | None:
    """The credential a caller holds."""
    return {
        "none": None,
        "device": fleet.owner.token,
        "other": fleet.other.token,
        "customer": fleet.tracking_token,
        "dispatcher": fleet.dispatcher,
        "admin": fleet.admin,
    }[caller]


@dataclass
class Call:
    """One HTTP request."""

    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    json: Any = None
    content: bytes | None = None  # a body that is not JSON (a CSV file)


def bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def now() -> str:
    return datetime.now(UTC).isoformat()


Builder = Callable[[Fleet, str | None], Awaitable[Call]]


def with_bearer(method: str, path: str, body: Any = None) -> Builder:
    """The credential as `Authorization: Bearer`, path parameters from the fleet."""

    async def build(fleet: Fleet, token: str | None) -> Call:
        url = path.format(
            device=OWNER_ID,
            route_id=fleet.route_id,
            stop_id=fleet.stop_id,
            spare_stop_id=fleet.spare_stop_id,
            webhook_id=fleet.webhook_id,
        )
        payload = body() if callable(body) else body
        return Call(method, url, bearer(token), json=payload)

    return build


async def owntracks(fleet: Fleet, token: str | None) -> Call:
    message = {"_type": "location", "lat": 48.137, "lon": 11.575, "tst": 1764057600}
    if token is None:  # names the device, proves nothing
        return Call("POST", "/ingest/owntracks", {"X-Limit-U": OWNER_ID}, json=message)
    basic = base64.b64encode(f"{OWNER_ID}:{token}".encode()).decode()
    return Call("POST", "/ingest/owntracks", {"Authorization": f"Basic {basic}"}, json=message)


async def overland(fleet: Fleet, token: str | None) -> Call:
    feature = {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": [11.575, 48.137]},
        "properties": {"timestamp": now(), "horizontal_accuracy": 5},
    }
    params = {"token": token} if token else {}
    return Call("POST", "/ingest/overland", params=params, json={"locations": [feature]})


async def tracking_page(fleet: Fleet, token: str | None) -> Call:
    return Call("GET", f"/t/{token or tokens.new_token()}")


async def sign_in(fleet: Fleet, token: str | None) -> Call:
    return Call("POST", "/api/v1/session", json={"token": token or ""})


async def session_cookie(fleet: Fleet, token: str) -> str:
    """The cookie a sign-in with `token` gives; the token itself for callers it does not
    sign in (which then proves a raw credential in the cookie opens nothing)."""
    async with httpx.AsyncClient(base_url=fleet.server.base_url, timeout=30.0) as client:
        r = await client.post("/api/v1/session", json={"token": token})
    if r.status_code != 200:
        return token
    return str(r.cookies[SESSION_COOKIE])


async def session(fleet: Fleet, token: str | None) -> Call:
    cookie = {"Cookie": f"{SESSION_COOKIE}={await session_cookie(fleet, token)}"} if token else {}
    return Call("GET", "/api/v1/session", cookie)


async def end_fresh_session(fleet: Fleet, token: str | None) -> Call:
    """Ending needs a session of the caller's own that still exists: one per request."""
    opened = await session_cookie(fleet, token) if token else None
    session_id = 999_999
    if opened is not None and opened != token:
        async with httpx.AsyncClient(base_url=fleet.server.base_url, timeout=30.0) as client:
            r = await client.get("/api/v1/sessions", headers=bearer(token))
        session_id = next(s["id"] for s in r.json()["sessions"])
    return Call("DELETE", f"/api/v1/sessions/{session_id}", bearer(token))


async def delete_fresh_webhook(fleet: Fleet, token: str | None) -> Call:
    """Deleting needs a webhook that still exists: one per request."""
    async with fleet.server.admin() as client:
        r = await client.post("/api/v1/webhooks", json={"url": HOOK_URL, "events": ["stop.failed"]})
    assert r.status_code == 201, r.text
    return Call("DELETE", f"/api/v1/webhooks/{r.json()['id']}", bearer(token))


async def plan_body(fleet: Fleet) -> dict[str, Any]:
    """A plan request: one inline van from a fresh depot, on a day without orders."""
    async with fleet.server.admin() as client:
        r = await client.post("/api/v1/depots", json={"name": "Matrix", "lat": 48.1, "lon": 11.5})
    assert r.status_code == 201, r.text
    van = {"name": "Matrix van", "start_depot_id": r.json()["id"]}
    return {"date": "2039-01-03", "vehicles": [van]}


async def new_plan(fleet: Fleet, token: str | None) -> Call:
    return Call("POST", "/api/v1/plans", bearer(token), json=await plan_body(fleet))


def on_fresh_plan(method: str, suffix: str, json: dict[str, Any] | None = None) -> Builder:
    """A call on a plan made for it (dispatching uses a plan up)."""

    async def build(fleet: Fleet, token: str | None) -> Call:
        async with fleet.server.admin() as client:
            r = await client.post("/api/v1/plans", json=await plan_body(fleet))
        assert r.status_code == 201, r.text
        return Call(method, f"/api/v1/plans/{r.json()['id']}{suffix}", bearer(token), json=json)

    return build


NEW_ORDER = {"lat": 48.137, "lon": 11.575, "date": "2030-01-02", "recipient": "Matrix"}
NEW_DEPOT = {"name": "Matrix depot", "lat": 48.13, "lon": 11.57}
NEW_VEHICLE = {"name": "Matrix van", "capacity": {"parcels": 50}}
ORDERS_CSV = "lat,lon,date,recipient\n48.137,11.575,2030-01-02,Matrix\n"


def on_fresh(collection: str, body: dict[str, Any], method: str, suffix: str = "") -> Builder:
    """A request on a resource created for it (deleting or cancelling needs one of its own)."""

    async def build(fleet: Fleet, token: str | None) -> Call:
        async with fleet.server.admin() as client:
            r = await client.post(f"/api/v1/{collection}", json=body)
        assert r.status_code == 201, r.text
        url = f"/api/v1/{collection}/{r.json()['id']}{suffix}"
        payload = {"notes": "patched"} if collection == "orders" else {"name": "Patched"}
        return Call(method, url, bearer(token), json=payload if method == "PATCH" else None)

    return build


async def import_csv(fleet: Fleet, token: str | None) -> Call:
    headers = {**bearer(token), "Content-Type": "text/csv"}
    return Call(
        "POST", "/api/v1/orders/import", headers, {"dry_run": "true"}, content=ORDERS_CSV.encode()
    )


def osmand_builder(method: str) -> Builder:
    async def build(fleet: Fleet, token: str | None) -> Call:
        params = {"id": OWNER_ID, "lat": "48.137", "lon": "11.575", "timestamp": now()}
        return Call(method, "/ingest/osmand", bearer(token), params=params)

    return build


def own_ping() -> dict[str, Any]:
    return {"time": now(), "lat": 48.137, "lon": 11.575, "device_id": OWNER_ID}


def new_device() -> dict[str, Any]:
    return {"name": "Matrix van", "unique_id": f"matrix-{tokens.new_token()[:10]}"}


def new_route() -> dict[str, Any]:
    # The spare van's: a new route ends the van's old one, and the owner's must stay.
    return route_body(SPARE_ID)


async def fresh_route(fleet: Fleet) -> int:
    """A route of the spare van that a request may cancel or move."""
    async with fleet.server.admin() as client:
        r = await client.post("/api/v1/routes", json=route_body(SPARE_ID))
    assert r.status_code == 201, r.text
    route_id: int = r.json()["id"]
    return route_id


async def cancel_fresh_route(fleet: Fleet, token: str | None) -> Call:
    return Call("POST", f"/api/v1/routes/{await fresh_route(fleet)}/cancel", bearer(token))


async def reassign_fresh_route(fleet: Fleet, token: str | None) -> Call:
    """Hands the spare van's fresh route to a van of its own (the other van must keep
    having no route)."""
    url = f"/api/v1/routes/{await fresh_route(fleet)}/reassign"
    van = await add_device(fleet.server, "Reassigned van")
    return Call("POST", url, bearer(token), json={"device": van.unique_id})


async def revoke_fresh_key(fleet: Fleet, token: str | None) -> Call:
    """Revoking needs a key nobody else uses: one per request."""
    async with fleet.server.admin() as client:
        r = await client.post("/api/v1/keys", json={"name": "to revoke"})
    assert r.status_code == 201, r.text
    return Call("POST", f"/api/v1/keys/{r.json()['id']}/revoke", bearer(token))


HOOK = {"url": HOOK_URL, "events": ["stop.completed"]}

# -- the doorstep's builders -------------------------------------------------------------------

PIXEL_PNG = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8Dw"
    "HwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
)
WINDOW = {"window_start": "2026-12-05T09:00:00Z", "window_end": "2026-12-05T11:00:00Z"}


def report_body(fleet: Fleet, photo: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "client_id": str(uuid.uuid4()),
        "status": "completed",
        "time": now(),
        # At the spare stop (route_body's second), so no far-away reason is needed.
        "location": {"lat": 48.139, "lon": 11.580},
    }
    if photo:
        body["proof"] = {"photo": PIXEL_PNG}
    return body


async def report_spare(fleet: Fleet, token: str | None) -> Call:
    return Call(
        "POST",
        f"/api/v1/routes/{fleet.route_id}/stops/{fleet.spare_stop_id}/report",
        bearer(token),
        json=report_body(fleet),
    )


async def fresh_delivery(fleet: Fleet, delivered: bool = False) -> tuple[str, int | None]:
    """A new route of the owner's (one stop with reschedule options): its link, and when
    `delivered`, the proof id of the photo its completion carried."""
    body = route_body(OWNER_ID)
    body["stops"][1]["reschedule_windows"] = [WINDOW]
    async with fleet.server.admin() as client:
        r = await client.post("/api/v1/routes", json=body)
        assert r.status_code == 201, r.text
        route = r.json()
        stop = route["stops"][1]
        link = stop["tracking_url"].rsplit("/", 1)[1]
        if not delivered:
            return link, None
        r = await client.post(
            f"/api/v1/routes/{route['id']}/stops/{stop['id']}/report",
            json=report_body(fleet, photo=True),
        )
        assert r.status_code == 200, r.text
        proofs = r.json()["stops"][1]["outcome"]["proofs"]
    return link, int(proofs[0]["id"])


def fresh_link(method: str, suffix: str, body: Any = None, delivered: bool = False) -> Builder:
    """The customer's calls: with a fresh delivery's link for the customer, the caller's own
    credential in the path for everyone else."""

    async def build(fleet: Fleet, token: str | None) -> Call:
        link, proof_id = await fresh_delivery(fleet, delivered)
        if token != fleet.tracking_token:
            link = token or tokens.new_token()
        path = suffix.format(proof_id=proof_id or 1)
        return Call(method, f"/t/{link}/{path}", json=body)

    return build


async def proof_for_staff(fleet: Fleet, token: str | None) -> Call:
    _, proof_id = await fresh_delivery(fleet, delivered=True)
    return Call("GET", f"/api/v1/proofs/{proof_id}", bearer(token))


TEMPLATE_PATH = "/api/v1/message-templates/delivered/sms/en"


async def delete_fresh_template(fleet: Fleet, token: str | None) -> Call:
    async with fleet.server.admin() as client:
        r = await client.put(TEMPLATE_PATH, json={"body": "Delivered at $time."})
    assert r.status_code == 200, r.text
    return Call("DELETE", TEMPLATE_PATH, bearer(token))


async def decide_fresh_request(fleet: Fleet, token: str | None) -> Call:
    link, _ = await fresh_delivery(fleet)
    async with fleet.server.client() as client:
        r = await client.post(f"/t/{link}/reschedule", json={"window": 0})
        assert r.status_code == 201, r.text
    async with fleet.server.admin() as client:
        pending = (await client.get("/api/v1/reschedules?status=pending")).json()["requests"]
    request_id = max(q["id"] for q in pending)
    return Call(
        "POST", f"/api/v1/reschedules/{request_id}", bearer(token), json={"decision": "decline"}
    )


BUILDERS: dict[tuple[str, str], Builder] = {
    ("GET", "/healthz"): with_bearer("GET", "/healthz"),
    ("GET", "/readyz"): with_bearer("GET", "/readyz"),
    ("GET", "/openapi.json"): with_bearer("GET", "/openapi.json"),
    ("GET", "/metrics"): with_bearer("GET", "/metrics"),
    ("POST", "/api/v1/positions"): with_bearer("POST", "/api/v1/positions", own_ping),
    ("GET", "/ingest/osmand"): osmand_builder("GET"),
    ("POST", "/ingest/osmand"): osmand_builder("POST"),
    ("POST", "/ingest/owntracks"): owntracks,
    ("POST", "/ingest/overland"): overland,
    ("GET", "/api/v1/devices"): with_bearer("GET", "/api/v1/devices"),
    ("POST", "/api/v1/devices"): with_bearer("POST", "/api/v1/devices", new_device),
    ("PATCH", "/api/v1/devices/{device}"): with_bearer(
        "PATCH", "/api/v1/devices/{device}", {"enabled": True}
    ),
    ("GET", "/api/v1/devices/{device}/positions"): with_bearer(
        "GET", "/api/v1/devices/{device}/positions"
    ),
    ("POST", "/api/v1/routes"): with_bearer("POST", "/api/v1/routes", new_route),
    ("GET", "/api/v1/routes/current"): with_bearer("GET", "/api/v1/routes/current"),
    ("GET", "/api/v1/routes/{route_id}"): with_bearer("GET", "/api/v1/routes/{route_id}"),
    # Arriving again at the stop one has arrived at changes nothing: the same answer each time.
    ("PATCH", "/api/v1/routes/{route_id}/stops/{stop_id}"): with_bearer(
        "PATCH", "/api/v1/routes/{route_id}/stops/{stop_id}", {"status": "arrived"}
    ),
    # The spare stop: re-issuing the customer's own link would end it.
    ("POST", "/api/v1/routes/{route_id}/stops/{stop_id}/tracking"): with_bearer(
        "POST", "/api/v1/routes/{route_id}/stops/{spare_stop_id}/tracking"
    ),
    ("GET", "/api/v1/routes"): with_bearer("GET", "/api/v1/routes"),
    ("POST", "/api/v1/routes/{route_id}/cancel"): cancel_fresh_route,
    ("POST", "/api/v1/routes/{route_id}/reassign"): reassign_fresh_route,
    ("GET", "/api/v1/routes/{route_id}/path"): with_bearer("GET", "/api/v1/routes/{route_id}/path"),
    ("GET", "/api/v1/events"): with_bearer("GET", "/api/v1/events"),
    ("GET", "/api/v1/accuracy"): with_bearer("GET", "/api/v1/accuracy"),
    ("GET", "/api/v1/keys"): with_bearer("GET", "/api/v1/keys"),
    ("POST", "/api/v1/keys"): with_bearer("POST", "/api/v1/keys", {"name": "matrix key"}),
    ("POST", "/api/v1/keys/{key_id}/revoke"): revoke_fresh_key,
    # The spare van's: rotating the owner's token would lock out its other cells.
    ("POST", "/api/v1/devices/{device}/token"): with_bearer(
        "POST", f"/api/v1/devices/{SPARE_ID}/token"
    ),
    ("GET", "/t/{token}"): tracking_page,
    ("GET", "/api/v1/webhooks"): with_bearer("GET", "/api/v1/webhooks"),
    ("POST", "/api/v1/webhooks"): with_bearer("POST", "/api/v1/webhooks", HOOK),
    ("GET", "/api/v1/webhooks/{webhook_id}"): with_bearer("GET", "/api/v1/webhooks/{webhook_id}"),
    ("DELETE", "/api/v1/webhooks/{webhook_id}"): delete_fresh_webhook,
    ("GET", "/api/v1/webhooks/{webhook_id}/deliveries"): with_bearer(
        "GET", "/api/v1/webhooks/{webhook_id}/deliveries"
    ),
    ("POST", "/api/v1/session"): sign_in,
    ("GET", "/api/v1/session"): session,
    ("DELETE", "/api/v1/session"): with_bearer("DELETE", "/api/v1/session"),
    ("POST", "/api/v1/plans"): new_plan,
    ("GET", "/api/v1/plans/{plan_id}"): on_fresh_plan("GET", ""),
    ("POST", "/api/v1/plans/{plan_id}/dispatch"): on_fresh_plan("POST", "/dispatch"),
    ("POST", "/api/v1/plans/{plan_id}/move"): on_fresh_plan(
        "POST", "/move", {"order_id": 987654321, "vehicle": None}
    ),
    ("POST", "/api/v1/replan/insert"): with_bearer(
        "POST", "/api/v1/replan/insert", {"order_id": 987654321}
    ),
    ("POST", "/api/v1/replan/reoptimise"): with_bearer(
        "POST", "/api/v1/replan/reoptimise", {"route_id": 987654321}
    ),
    ("POST", "/api/v1/replan/move"): with_bearer(
        "POST", "/api/v1/replan/move", {"stops": [987654321], "route_id": 987654321}
    ),
    ("POST", "/api/v1/orders"): with_bearer("POST", "/api/v1/orders", NEW_ORDER),
    ("GET", "/api/v1/orders"): with_bearer("GET", "/api/v1/orders"),
    ("POST", "/api/v1/orders/import"): import_csv,
    ("GET", "/api/v1/orders/{order_id}"): on_fresh("orders", NEW_ORDER, "GET"),
    ("PATCH", "/api/v1/orders/{order_id}"): on_fresh("orders", NEW_ORDER, "PATCH"),
    ("POST", "/api/v1/orders/{order_id}/cancel"): on_fresh("orders", NEW_ORDER, "POST", "/cancel"),
    ("POST", "/api/v1/depots"): with_bearer("POST", "/api/v1/depots", NEW_DEPOT),
    ("GET", "/api/v1/depots"): with_bearer("GET", "/api/v1/depots"),
    ("GET", "/api/v1/depots/{depot_id}"): on_fresh("depots", NEW_DEPOT, "GET"),
    ("PATCH", "/api/v1/depots/{depot_id}"): on_fresh("depots", NEW_DEPOT, "PATCH"),
    ("DELETE", "/api/v1/depots/{depot_id}"): on_fresh("depots", NEW_DEPOT, "DELETE"),
    ("POST", "/api/v1/vehicles"): with_bearer("POST", "/api/v1/vehicles", NEW_VEHICLE),
    ("GET", "/api/v1/vehicles"): with_bearer("GET", "/api/v1/vehicles"),
    ("GET", "/api/v1/vehicles/{vehicle_id}"): on_fresh("vehicles", NEW_VEHICLE, "GET"),
    ("PATCH", "/api/v1/vehicles/{vehicle_id}"): on_fresh("vehicles", NEW_VEHICLE, "PATCH"),
    ("DELETE", "/api/v1/vehicles/{vehicle_id}"): on_fresh("vehicles", NEW_VEHICLE, "DELETE"),
    ("GET", "/api/v1/sessions"): with_bearer("GET", "/api/v1/sessions"),
    ("DELETE", "/api/v1/sessions/{session_id}"): end_fresh_session,
    ("GET", "/"): with_bearer("GET", "/"),
    ("GET", "/map"): with_bearer("GET", "/map"),
    ("GET", "/driver"): with_bearer("GET", "/driver"),
    ("GET", "/docs"): with_bearer("GET", "/docs"),
    ("GET", "/manage"): with_bearer("GET", "/manage"),
    ("GET", "/plan"): with_bearer("GET", "/plan"),
    ("GET", "/static/vendor/polyline/{path}"): with_bearer(
        "GET", "/static/vendor/polyline/index.esm.js"
    ),
    ("GET", "/static/vendor/swagger-ui/{path}"): with_bearer(
        "GET", "/static/vendor/swagger-ui/swagger-ui-bundle.js"
    ),
    ("GET", "/static/{path}"): with_bearer("GET", "/static/map.js"),
    ("GET", "/static/vendor/leaflet/{path}"): with_bearer(
        "GET", "/static/vendor/leaflet/leaflet.js"
    ),
    ("POST", "/api/v1/routes/{route_id}/stops/{stop_id}/report"): report_spare,
    ("GET", "/api/v1/proofs/{proof_id}"): proof_for_staff,
    ("GET", "/api/v1/driver/settings"): with_bearer("GET", "/api/v1/driver/settings"),
    ("GET", "/t/{token}/details"): fresh_link("GET", "details"),
    ("POST", "/t/{token}/instructions"): fresh_link(
        "POST", "instructions", {"instructions": "Back door", "safe_place": "Garage"}
    ),
    ("POST", "/t/{token}/reschedule"): fresh_link("POST", "reschedule", {"window": 0}),
    ("POST", "/t/{token}/rating"): fresh_link("POST", "rating", {"stars": 5}, delivered=True),
    ("POST", "/t/{token}/messages"): fresh_link("POST", "messages", {"opt_out": True}),
    ("GET", "/t/{token}/proofs/{proof_id}"): fresh_link("GET", "proofs/{proof_id}", delivered=True),
    ("GET", "/api/v1/messages"): with_bearer("GET", "/api/v1/messages"),
    ("GET", "/api/v1/message-templates"): with_bearer("GET", "/api/v1/message-templates"),
    ("PUT", "/api/v1/message-templates/{kind}/{channel}/{language}"): with_bearer(
        "PUT", TEMPLATE_PATH, {"body": "Delivered at $time."}
    ),
    ("DELETE", "/api/v1/message-templates/{kind}/{channel}/{language}"): delete_fresh_template,
    ("GET", "/api/v1/reschedules"): with_bearer("GET", "/api/v1/reschedules"),
    ("POST", "/api/v1/reschedules/{request_id}"): decide_fresh_request,
    ("GET", "/api/v1/ratings"): with_bearer("GET", "/api/v1/ratings"),
}


def test_matrix_covers_every_route() -> None:
    operations, sockets = app_operations()
    expected = operations | {("WS", path) for path in sockets}
    assert set(MATRIX) == expected, "decide who may call each endpoint in MATRIX"
    assert set(BUILDERS) == {key for key in MATRIX if key[0] != "WS"}


async def handshake(fleet: Fleet, path: str, token: str | None) -> int:
    """The status of a WebSocket handshake: 101 when accepted, else the refusal's status."""
    if path == "/ws/dispatch":
        url = f"{fleet.server.ws_url}/ws/dispatch" + (f"?token={token}" if token else "")
    else:
        url = f"{fleet.server.ws_url}/ws/track/{token or tokens.new_token()}"
    try:
        async with connect(url, open_timeout=10) as ws:
            await ws.recv(decode=True)  # the snapshot: accepted for real
            return ACCEPTED
    except InvalidStatus as refused:
        return refused.response.status_code


CELLS = [
    pytest.param(key, index, id=f"{key[0]} {key[1]} as {caller}")
    for key in MATRIX
    for index, caller in enumerate(CALLERS)
]


@pytest.mark.parametrize(("key", "index"), CELLS)
async def test_cell(fleet: Fleet, key: tuple[str, str], index: int) -> None:
    method, path = key
    token = secret(fleet, CALLERS[index])
    expected = MATRIX[key][index]
    if method == "WS":
        assert await handshake(fleet, path, token) == expected
        return
    call = await BUILDERS[key](fleet, token)
    async with httpx.AsyncClient(base_url=fleet.server.base_url, timeout=30.0) as client:
        r = await client.request(
            call.method,
            call.url,
            headers=call.headers,
            params=call.params,
            json=call.json,
            content=call.content,
        )
    assert r.status_code == expected, r.text[:300]
    if r.status_code in (401, 403) and path != "/ingest/overland":
        body = r.json()
        assert body["error"] and body["message"]


@pytest.mark.parametrize("place", ["bearer", "query", "cookie"])
async def test_staff_credentials_work_in_every_place_and_only_theirs(
    fleet: Fleet, place: str
) -> None:
    """Dispatcher and admin credentials are read from the header, `?token=` and the session
    cookie (of a session they signed in) alike; a device token or tracking token in any of
    them opens nothing, nor does any token put in the cookie as it is."""

    async def sent(token: str) -> dict[str, Any]:
        if place == "bearer":
            return {"headers": {"Authorization": f"Bearer {token}"}}
        if place == "query":
            return {"params": {"token": token}}
        return {"headers": {"Cookie": f"{SESSION_COOKIE}={await session_cookie(fleet, token)}"}}

    async with httpx.AsyncClient(base_url=fleet.server.base_url, timeout=30.0) as client:
        for caller in CALLERS[1:]:
            token = secret(fleet, caller)
            assert token is not None
            devices = await client.get("/api/v1/devices", **await sent(token))
            create = await client.post("/api/v1/devices", json=new_device(), **await sent(token))
            if place == "cookie":
                raw = {"Cookie": f"{SESSION_COOKIE}={token}"}
                assert (await client.get("/api/v1/devices", headers=raw)).status_code == 401
            if caller in ("dispatcher", "admin"):
                assert devices.status_code == 200
                assert create.status_code == (201 if caller == "admin" else 403)
            else:
                assert (devices.status_code, create.status_code) == (401, 401), caller
