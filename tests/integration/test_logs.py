"""Request ids and logs against real servers: `X-Request-ID` on every answer (the native
ingest fast path, Starlette's routes, errors, WebSocket handshakes), and `tracker serve`'s
output: one JSON object per line, request ids on the records of a request, no secrets.
"""

from __future__ import annotations

import contextlib
import re
import signal
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.conftest import ADMIN_TOKEN, DeviceCreds, Server, ServerFactory
from tests.faults.conftest import TrackerProcess

GENERATED = re.compile("[0-9a-f]{16}")


async def test_every_answer_carries_the_request_id(server: Server, device: DeviceCreds) -> None:
    ping = {"time": datetime.now(UTC).isoformat(), "lat": 48.1, "lon": 11.5}
    mine = {"X-Request-ID": "test-123"}
    async with server.client() as client:
        answers = {
            "ingest": await client.post(
                "/api/v1/positions", json=ping, headers={**device.headers, **mine}
            ),
            "ingest 401": await client.post("/api/v1/positions", json=ping, headers=mine),
            "healthz": await client.get("/healthz", headers=mine),
            "404": await client.get("/no/such/page", headers=mine),
            "401": await client.get("/api/v1/devices", headers=mine),
        }
        fresh = await client.get("/healthz")
        unsafe = await client.get("/healthz", headers={"X-Request-ID": "two words"})
        long = await client.get("/healthz", headers={"X-Request-ID": "x" * 100})
    assert {k: (r.status_code, r.headers.get("x-request-id")) for k, r in answers.items()} == {
        "ingest": (202, "test-123"),
        "ingest 401": (401, "test-123"),
        "healthz": (200, "test-123"),
        "404": (404, "test-123"),
        "401": (401, "test-123"),
    }
    for answer in (fresh, unsafe, long):
        assert GENERATED.fullmatch(answer.headers["x-request-id"]), answer.headers
    assert fresh.headers["x-request-id"] != unsafe.headers["x-request-id"]


async def test_a_websocket_handshake_returns_the_request_id(server_factory: ServerFactory) -> None:
    srv = await server_factory()
    async with connect(
        f"{srv.ws_url}/ws/dispatch?token={ADMIN_TOKEN}",
        additional_headers={"X-Request-ID": "ws-42"},
    ) as ws:
        assert ws.response is not None
        assert ws.response.headers["x-request-id"] == "ws-42"


def records(output: str) -> list[dict[str, Any]]:
    """Every line of the server's output, each of which must be one JSON object."""
    parsed = []
    for line in output.splitlines():
        if line.strip():
            record = orjson.loads(line)
            assert isinstance(record, dict), line
            assert {"time", "level", "logger", "message"} <= record.keys(), line
            parsed.append(record)
    return parsed


async def test_serve_writes_json_lines_with_request_ids_and_no_secrets(database_url: str) -> None:
    proc = TrackerProcess(database_url)
    try:
        await proc.start()
        async with httpx.AsyncClient(base_url=proc.base_url, timeout=30.0) as client:
            created = await client.post(
                "/api/v1/devices",
                json={"name": "Logged van", "unique_id": "logs-1"},
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            )
            assert created.status_code == 201, created.text
            dev_token = created.json()["token"]
            refused = await client.get(
                "/api/v1/devices",
                headers={"Authorization": "Bearer leaky-secret-token", "X-Request-ID": "test-123"},
            )
            fine = await client.get("/healthz", headers={"X-Request-ID": "quiet-200"})
            no_fix = await client.get(
                "/ingest/osmand",
                params={"id": "logs-1", "lat": "0", "lon": "0"},
                headers={"X-Request-ID": "test-456"},
            )
            link = await client.get("/t/secret-link-token?token=query-secret")
            # uvicorn's own lines about WebSocket handshakes show the whole URL.
            async with connect(f"{proc.ws_url}/ws/dispatch?token={ADMIN_TOKEN}") as ws:
                await ws.recv()
            with contextlib.suppress(InvalidStatus):
                async with connect(f"{proc.ws_url}/ws/track/secret-socket-token"):
                    pass
            overland = await client.post(
                "/ingest/overland?token=query-secret-2", json={"locations": []}
            )
        assert (refused.status_code, fine.status_code, no_fix.status_code) == (401, 200, 200)
        assert refused.headers["x-request-id"] == "test-123"
        assert (link.status_code, overland.status_code) == (404, 401)
        proc.signal(signal.SIGTERM)
        assert await proc.wait() in (0, -signal.SIGTERM)
        output = proc.log()
    finally:
        proc.stop()
    logged = records(output)
    [denied] = [r for r in logged if r.get("request_id") == "test-123"]
    assert denied["logger"] == "tracker.access"
    assert denied["level"] == "WARNING"
    assert (denied["method"], denied["path"], denied["status"]) == ("GET", "/api/v1/devices", 401)
    assert isinstance(denied["duration_ms"], float)
    # A record made by the code handling the request, not only the access line, has the id.
    [rejected] = [r for r in logged if r["logger"] == "tracker.api.clients"]
    assert rejected["request_id"] == "test-456"
    assert "no fix" in rejected["message"]
    # The access log is off: successes are not logged, errors are, paths without secrets.
    assert not [r for r in logged if r.get("request_id") == "quiet-200"]
    paths = {r["path"] for r in logged if r["logger"] == "tracker.access"}
    assert {"/t/{token}", "/ingest/overland", "/api/v1/devices"} <= paths
    assert {r["logger"] for r in logged} >= {"uvicorn.error", "tracker.access"}
    for secret in (
        "leaky-secret-token",
        "secret-link-token",
        "secret-socket-token",
        "query-secret",
        ADMIN_TOKEN,
        dev_token,
    ):
        assert secret not in output, secret


async def test_text_format_and_the_access_log_switch(database_url: str, tmp_path: Path) -> None:
    proc = TrackerProcess(
        database_url, TRACKER_LOG_FORMAT="text", TRACKER_ACCESS_LOG="on", TMPDIR=str(tmp_path)
    )
    try:
        await proc.start()
        async with httpx.AsyncClient(base_url=proc.base_url, timeout=30.0) as client:
            fine = await client.get("/healthz?token=query-secret", headers={"X-Request-ID": "t-7"})
        assert fine.status_code == 200
        assert len(list(tmp_path.glob("tracker-metrics-*"))) == 1
        proc.signal(signal.SIGTERM)
        # uvicorn ends a single process with the signal once it has shut down gracefully.
        assert await proc.wait() in (0, -signal.SIGTERM)
        assert list(tmp_path.glob("tracker-metrics-*")) == []  # the metrics files went too
        output = proc.log()
    finally:
        proc.stop()
    [line] = [line for line in output.splitlines() if "[t-7]" in line]
    assert re.search(r" INFO tracker\.access \[t-7\]: GET /healthz 200 [0-9.]+ ms$", line), line
    assert "query-secret" not in output
    assert not output.lstrip().startswith("{")
