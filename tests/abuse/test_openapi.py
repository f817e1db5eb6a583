"""The OpenAPI document stays true: valid OpenAPI, one operation per route of the app (and
no operation the app does not have), enums and limits equal to the code's, served as is."""

from __future__ import annotations

import re
from typing import Any

import schemathesis
from starlette.routing import Mount, Route, WebSocketRoute

from tests.abuse.conftest import Fleet
from tests.conftest import ServerFactory
from tracker.api import devices as device_api
from tracker.api import ingest, openapi, throttle
from tracker.api import routes as route_api
from tracker.api import webhooks as webhook_api
from tracker.api.app import create_app
from tracker.config import Settings
from tracker.core.model import StopStatus
from tracker.core.webhooks import SUBSCRIBABLE
from tracker.protocols import native
from tracker.services.routing import SETTABLE
from tracker.store import webhooks as webhook_store

HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def template(path: str) -> str:
    """A Starlette path with its convertors dropped: `/x/{id:int}` -> `/x/{id}`."""
    return re.sub(r"\{(\w+):\w+\}", r"{\1}", path)


def app_operations() -> tuple[set[tuple[str, str]], set[str]]:
    """(method, path) of every HTTP operation the app answers, and its WebSocket paths."""
    app = create_app(Settings(admin_token="x"))
    operations = {("POST", ingest.PATH)}  # answered ahead of Starlette's router
    sockets: set[str] = set()
    for route in app.routes:
        if isinstance(route, WebSocketRoute):
            sockets.add(template(route.path))
        elif isinstance(route, Route):
            # Starlette adds HEAD to every GET route by itself.
            methods = (route.methods or {"GET"}) - {"HEAD"}
            operations |= {(m, template(route.path)) for m in methods}
        elif isinstance(route, Mount):
            operations.add(("GET", f"{route.path}/{{path}}"))
        else:
            raise AssertionError(f"a route of a kind this test does not know: {route!r}")
    return operations, sockets


def documented_operations() -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in openapi.document()["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }


def component(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = openapi.document()["components"]["schemas"][name]
    return schema


def test_document_is_valid_openapi() -> None:
    schemathesis.openapi.from_dict(openapi.document()).validate()


def test_every_route_is_documented_and_nothing_else() -> None:
    operations, _ = app_operations()
    documented = documented_operations()
    assert operations - documented == set(), "routes missing from src/tracker/openapi.yaml"
    assert documented - operations == set(), "documented operations the app does not have"


def test_websockets_are_described() -> None:
    _, sockets = app_operations()
    assert sockets
    description = openapi.document()["info"]["description"]
    for path in sockets:
        assert f"`GET {path}`" in description


def test_every_operation_documents_its_security_and_an_id() -> None:
    ids: list[str] = []
    schemes = set(openapi.document()["components"]["securitySchemes"])
    for item in openapi.document()["paths"].values():
        for method, operation in item.items():
            if method not in HTTP_METHODS:
                continue
            assert "security" in operation, operation["operationId"]
            for requirement in operation["security"]:
                assert set(requirement) <= schemes
            ids.append(operation["operationId"])
    assert len(ids) == len(set(ids))


def test_every_json_body_has_an_example() -> None:
    """The injection tests start from the example (and schemathesis sends it first)."""
    for path, item in openapi.document()["paths"].items():
        for method, operation in item.items():
            media = operation.get("requestBody", {}).get("content", {}).get("application/json")
            if media is not None:
                assert "example" in media, f"{method.upper()} {path}: add a body example"


def test_enums_are_the_codes() -> None:
    assert set(component("WebhookEvent")["enum"]) == set(SUBSCRIBABLE)
    assert set(component("DeliveryStatus")["enum"]) == set(webhook_store.STATUSES)
    assert set(component("SettableStopStatus")["enum"]) == set(SETTABLE)
    assert set(component("StopStatus")["enum"]) == set(StopStatus.ALL)


def test_limits_are_the_codes() -> None:
    paths = openapi.document()["paths"]
    assert component("PingBatch")["properties"]["positions"]["maxItems"] == Settings().max_batch
    assert component("NewRoute")["properties"]["stops"]["maxItems"] == route_api.MAX_STOPS
    assert component("NewStop")["properties"]["name"]["maxLength"] == route_api.MAX_TEXT
    assert component("NewStop")["properties"]["radius_m"]["maximum"] == route_api.MAX_RADIUS_M
    assert component("NewStop")["properties"]["service_s"]["maximum"] == route_api.MAX_SERVICE_S
    track = paths["/api/v1/devices/{device}/positions"]["get"]["parameters"]
    limit = next(p for p in track if p.get("name") == "limit")
    assert limit["schema"]["maximum"] == device_api.MAX_TRACK_POINTS
    deliveries = paths["/api/v1/webhooks/{webhook_id}/deliveries"]["get"]["parameters"]
    limit = next(p for p in deliveries if p.get("name") == "limit")
    assert limit["schema"]["maximum"] == webhook_api.MAX_LIMIT
    assert limit["schema"]["default"] == webhook_api.DEFAULT_LIMIT
    hook = paths["/api/v1/webhooks"]["post"]["requestBody"]["content"]["application/json"]
    assert hook["schema"]["properties"]["url"]["maxLength"] == webhook_api.MAX_URL


def test_ping_fields_are_the_decoders() -> None:
    assert set(component("Ping")["properties"]) == set(native._KNOWN)


async def test_served_without_credentials_as_is(fleet: Fleet) -> None:
    async with fleet.server.client() as client:
        r = await client.get(openapi.PATH)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.json() == openapi.document()
    assert r.json()["info"]["version"] != "filled in from tracker.__version__"


async def test_rate_limit_answers_are_documented(server_factory: ServerFactory) -> None:
    """With the per-address limit spent, every operation but the probes answers 429, and
    the document says so (and the probes, which never answer 429, do not)."""
    srv = await server_factory(rate_limit_ip="1/minute")
    async with srv.client() as client:
        await client.get("/map")  # spends the address's one request
        for method, path in sorted(documented_operations()):
            url = re.sub(r"\{\w+\}", "1", path)
            r = await client.request(method, url)
            responses = openapi.document()["paths"][path][method.lower()]["responses"]
            if path in throttle.EXEMPT_PATHS:
                assert r.status_code != 429 and "429" not in responses, path
                continue
            assert r.status_code == 429, (method, path, r.status_code)
            assert int(r.headers["retry-after"]) >= 1
            assert r.json()["error"] == "rate_limited"
            assert "429" in responses, (method, path)
