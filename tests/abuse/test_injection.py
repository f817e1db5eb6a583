"""SQL injection, path traversal and oversized values in every string the API takes.

The targets come from the OpenAPI document (path, query and header parameters, and every
string in each JSON body schema), so a new parameter is attacked as soon as it is
documented; `test_openapi.py` makes sure every endpoint is. Each request carries valid
credentials and an otherwise valid request (the document's examples), so the payload gets
as deep into the server as it can. The answers must be deliberate (no 5xx), must not leak
files, SQL errors or stored secrets, and the database must be intact afterwards.

Static files and tracking links are also attacked with raw request lines, which no client
library normalises first.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, quote_plus

import httpx
import pytest

from tests.abuse.conftest import OWNER_ID, Fleet, credentials
from tracker.api import openapi
from tracker.core import tokens

PAYLOADS = [
    "' OR '1'='1",
    "'; DROP TABLE positions; --",
    "1 UNION SELECT token_hash FROM devices--",
    '" OR ""="',
    "1); DELETE FROM api_keys; --",
    "'; SELECT pg_sleep(60); --",
    "$1",
    "\\",
    "../../../../etc/passwd",
    "..%2f..%2fpyproject.toml",
    "%00",
    "\x00",
    "nul\x00in the middle",
    "%s%s%s%n",
    "{{7*7}}${7*7}",
    "<script>alert(1)</script>",
    "A" * 50_000,
]
# What must never appear in an answer (beyond an echo of the payload itself).
LEAKS = [
    "root:x:0:0",  # /etc/passwd
    "[build-system]",  # pyproject.toml
    "syntax error",
    "asyncpg",
    "postgres",
    "Traceback",
    'File "',
    "pg_sleep",
]
TIMEOUT_S = 30.0  # far below what an executed pg_sleep(60) would take
HTTP_METHODS = {"get", "post", "put", "patch", "delete"}


@dataclass(frozen=True)
class Target:
    """Where a payload goes: a parameter, or a string inside the JSON body."""

    location: str  # "path", "query", "header" or "body"
    name: str
    pointer: tuple[str | int, ...] = ()  # inside the body

    def __str__(self) -> str:
        where = "/".join(map(str, self.pointer)) if self.pointer else self.name
        return f"{self.location}:{where}"


def resolve(schema: dict[str, Any]) -> dict[str, Any]:
    """A schema with its `$ref` (into this document's components) followed."""
    while "$ref" in schema:
        node: Any = openapi.document()
        for part in schema["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        schema = node
    return schema


def string_pointers(
    schema: dict[str, Any], at: tuple[str | int, ...] = ()
) -> Iterator[tuple[str | int, ...]]:
    """Where a JSON body described by `schema` may hold a string."""
    schema = resolve(schema)
    kinds = schema.get("type", [])
    kinds = [kinds] if isinstance(kinds, str) else kinds
    if "string" in kinds or (at and not kinds and "enum" in schema):
        yield at
    for key in ("oneOf", "anyOf", "allOf"):
        for choice in schema.get(key, []):
            yield from string_pointers(choice, at)
    for name, sub in schema.get("properties", {}).items():
        yield from string_pointers(sub, (*at, name))
    if "items" in schema:
        yield from string_pointers(schema["items"], (*at, 0))


def put(body: Any, pointer: tuple[str | int, ...], value: str) -> Any:
    """A copy of `body` with `value` at `pointer` (objects and arrays made as needed)."""
    body = copy.deepcopy(body)
    node = body
    for part, following in zip(pointer, (*pointer[1:], None), strict=True):
        if following is None:
            if isinstance(part, int):
                node[:1] = [value]
            else:
                node[part] = value
            break
        fresh: Any = [] if isinstance(following, int) else {}
        if isinstance(part, int):
            if not node or not isinstance(node[0], type(fresh)):
                node[:1] = [fresh]
            node = node[0]
        else:
            if not isinstance(node.get(part), type(fresh)):
                node[part] = fresh
            node = node[part]
    return body


def json_body(operation: dict[str, Any]) -> tuple[dict[str, Any], Any] | None:
    """The JSON body schema and example of an operation, if it takes one."""
    media = operation.get("requestBody", {}).get("content", {}).get("application/json")
    if media is None:
        return None
    return media["schema"], media["example"]


def parameters(operation: dict[str, Any]) -> list[dict[str, Any]]:
    return [resolve(p) for p in operation.get("parameters", [])]


def targets(operation: dict[str, Any]) -> list[Target]:
    found = [Target(p["in"], p["name"]) for p in parameters(operation)]
    body = json_body(operation)
    if body is not None:
        pointers = dict.fromkeys(string_pointers(body[0]))  # ordered, unique
        found += [Target("body", "", pointer) for pointer in pointers if pointer]
    return found


def operations() -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in openapi.document()["paths"].items():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                yield method.upper(), path, operation


CASES = [
    pytest.param(method, path, id=f"{method} {path}")
    for method, path, operation in operations()
    if targets(operation)
]


def defaults(fleet: Fleet) -> dict[str, str]:
    """Valid values of the path parameters, from the fleet."""
    return {
        "device": OWNER_ID,
        "route_id": str(fleet.route_id),
        "stop_id": str(fleet.stop_id),
        "webhook_id": str(fleet.webhook_id),
        "order_id": str(fleet.order_id),
        "depot_id": str(fleet.depot_id),
        "vehicle_id": str(fleet.vehicle_id),
        "token": fleet.tracking_token,
        "path": "map.js",
        # The doorstep's (issue 16).
        "proof_id": "1",
        "request_id": "1",
        "kind": "delivered",
        "channel": "sms",
        "language": "en",
        # Editing a plan proposal (issue 14).
        "plan_id": "1",
    }


def example_query(operation: dict[str, Any]) -> dict[str, str]:
    return {p["name"]: str(p["example"]) for p in parameters(operation) if "example" in p}


def assert_no_leak(text: str, payload: str, secrets: list[str]) -> None:
    # An error message may quote the payload back (escaped): that is not a leak, nor is a
    # setup link carrying a device's name or id URL-encoded.
    echoes = (payload, repr(payload)[1:-1], json.dumps(payload)[1:-1], payload[:40])
    for echo in (*echoes, quote_plus(payload)):
        text = text.replace(echo, "")
    lowered = text.lower()
    for marker in LEAKS:
        assert marker.lower() not in lowered, marker
    for value in secrets:
        assert value not in text


async def table_state(fleet: Fleet) -> tuple[set[str], int, int, int]:
    pool = fleet.server.runtime.pool
    tables = {
        r["table_name"]
        for r in await pool.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
        )
    }
    devices = await pool.fetchval("SELECT count(*) FROM devices")
    keys = await pool.fetchval("SELECT count(*) FROM api_keys")
    routes = await pool.fetchval("SELECT count(*) FROM routes")
    return tables, devices, keys, routes


def header_safe(payload: str) -> bool:
    return payload.isprintable() and len(payload) < 8000


def build(
    fleet: Fleet, method: str, path: str, operation: dict[str, Any], target: Target, payload: str
) -> httpx.Request:
    """The operation's valid request (its examples, the fleet's ids) with `payload` at `target`."""
    values = defaults(fleet)
    query = example_query(operation)
    headers = credentials(operation, fleet)
    body = json_body(operation)
    content: Any = None if body is None else body[1]
    if target.location == "path":
        values[target.name] = quote(payload, safe="")
    elif target.location == "query":
        query[target.name] = payload
    elif target.location == "header":
        headers[target.name] = payload
    else:
        content = put(content, target.pointer, payload)
    if content is not None:
        headers["Content-Type"] = "application/json"
    return httpx.Request(
        method,
        fleet.server.base_url + path.format(**values),
        params=query,
        headers=headers,
        content=None if content is None else json.dumps(content).encode(),
    )


@pytest.mark.parametrize(("method", "path"), CASES)
async def test_payloads_are_inert(fleet: Fleet, method: str, path: str) -> None:
    operation = openapi.document()["paths"][path][method.lower()]
    before = await table_state(fleet)
    pool = fleet.server.runtime.pool
    digests = [r["token_hash"].hex() for r in await pool.fetch("SELECT token_hash FROM devices")]
    secrets = [fleet.owner.token, fleet.other.token, fleet.dispatcher, fleet.admin, *digests]
    created = 0
    keys_made = 0  # names are free text: a payload makes a key with that name
    async with httpx.AsyncClient(timeout=TIMEOUT_S) as client:
        for target in targets(operation):
            for payload in PAYLOADS:
                if target.location == "header" and not header_safe(payload):
                    continue  # not something HTTP can carry in a header
                sent = build(fleet, method, path, operation, target, payload)
                r = await client.send(sent)
                assert r.status_code < 500, (str(target), payload[:60], r.text[:300])
                assert_no_leak(r.text, payload, secrets)
                created += r.status_code == 201 and path == "/api/v1/devices"
                keys_made += r.status_code == 201 and path == "/api/v1/keys"
    tables, devices, keys, routes = await table_state(fleet)
    assert before[0] <= tables  # (ingest may add a month's partition of positions)
    assert keys == before[2] + keys_made
    if method == "GET":
        assert (devices, routes) == (before[1], before[3])
    else:
        assert devices == before[1] + created


# -- raw request lines -----------------------------------------------------------------------


async def raw_get(fleet: Fleet, target: str) -> tuple[int, bytes]:
    """GET exactly `target` (no client normalises it), as HTTP/1.1 over a plain socket."""
    reader, writer = await asyncio.open_connection("127.0.0.1", fleet.server.port)
    try:
        writer.write(
            f"GET {target} HTTP/1.1\r\nHost: tracker\r\nConnection: close\r\n\r\n".encode()
        )
        await writer.drain()
        response = await asyncio.wait_for(reader.read(), TIMEOUT_S)
    finally:
        writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


TRAVERSALS = [
    "../../pyproject.toml",
    "../../../../../../etc/passwd",
    "..%2f..%2fpyproject.toml",
    "..%2F..%2F..%2F..%2Fetc%2Fpasswd",
    "%2e%2e/%2e%2e/pyproject.toml",
    "%2e%2e%2f%2e%2e%2fpyproject.toml",
    "....//....//pyproject.toml",
    "..\\..\\pyproject.toml",
    "/etc/passwd",
    "//etc/passwd",
    "%2fetc%2fpasswd",
    "map.js%00.png",
    "map.js\x00",
    "node_modules/leaflet/package.json",
    "node_modules/leaflet/dist/leaflet.js",
    ".gitignore",
    "package.json",
    "track.html",
    "../src/tracker/app.py",
]


@pytest.mark.parametrize("prefix", ["/static/", "/static/vendor/leaflet/"])
async def test_static_files_stay_inside_web(fleet: Fleet, prefix: str) -> None:
    for traversal in TRAVERSALS:
        status, body = await raw_get(fleet, quote(prefix + traversal, safe="/%.\\"))
        assert status in (400, 404), (traversal, status)
        assert b"root:x:0:0" not in body and b"[build-system]" not in body
        assert b"import" not in body and b'"dependencies"' not in body
    # The files that are meant to be served are.
    own = await raw_get(fleet, "/static/map.js")
    leaflet = await raw_get(fleet, "/static/vendor/leaflet/leaflet.js")
    assert own[0] == 200 and leaflet[0] == 200


async def test_tracking_links_refuse_like_an_unknown_token(fleet: Fleet) -> None:
    unknown_status, unknown = await raw_get(fleet, f"/t/{tokens.new_token()}")
    assert unknown_status == 404
    attempts = [quote(p, safe="") for p in PAYLOADS if "/" not in p and "\x00" not in p]
    attempts += ["..%2F..%2Fpyproject.toml", "../../../etc/passwd", "..\\..\\web/track.html"]
    attempts += [f"{fleet.tracking_token}/../{fleet.tracking_token}", fleet.owner.token]
    attempts += [fleet.tracking_token + "%00", fleet.tracking_token + "/"]
    attempts += [fleet.tracking_token + "'--", fleet.tracking_token.upper(), "A" * 43]
    for attempt in attempts:
        status, body = await raw_get(fleet, f"/t/{attempt}")
        assert (status, body) == (404, unknown), attempt[:60]
    status, _ = await raw_get(fleet, f"/t/{fleet.tracking_token}")
    assert status == 200
