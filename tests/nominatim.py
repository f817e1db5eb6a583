"""A local HTTP server that answers `/search` as Nominatim does (format json/jsonv2), for
tests of the geocoding of orders. It records every request (query, parameters, User-Agent,
arrival time) and can be told to fail with 503 for its next N requests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.conftest import free_port

LICENCE = "Data © OpenStreetMap contributors, ODbL 1.0. https://osm.org/copyright"


def place(
    lat: float,
    lon: float,
    name: str,
    rank: int = 30,
    kind: str = "house",
    importance: float = 0.2,
) -> dict[str, Any]:
    """One result in Nominatim's jsonv2 shape (coordinates as strings, as it sends them)."""
    return {
        "place_id": abs(hash((lat, lon, name))) % 10_000_000,
        "licence": LICENCE,
        "osm_type": "node" if rank >= 30 else "way",
        "osm_id": abs(hash(name)) % 10_000_000_000,
        "lat": f"{lat:.7f}",
        "lon": f"{lon:.7f}",
        "category": "place" if rank >= 30 else "highway" if rank >= 26 else "boundary",
        "type": kind,
        "place_rank": rank,
        "importance": importance,
        "addresstype": kind,
        "name": name.split(",")[0],
        "display_name": name,
        "boundingbox": [
            f"{lat - 0.0001:.7f}",
            f"{lat + 0.0001:.7f}",
            f"{lon - 0.0001:.7f}",
            f"{lon + 0.0001:.7f}",
        ],
    }


@dataclass
class Hit:
    query: str
    params: dict[str, str]
    user_agent: str
    at: float


@dataclass
class FakeNominatim:
    """Answers: normalised (lower-case, trimmed) query → list of places."""

    answers: dict[str, list[dict[str, Any]]]
    url: str = ""
    hits: list[Hit] = field(default_factory=list)
    fail_next: int = 0

    async def search(self, request: Request) -> Response:
        params = dict(request.query_params)
        self.hits.append(
            Hit(
                params.get("q", ""), params, request.headers.get("user-agent", ""), time.monotonic()
            )
        )
        if self.fail_next > 0:
            self.fail_next -= 1
            return JSONResponse(
                {"error": "overloaded"}, status_code=503, headers={"Retry-After": "1"}
            )
        if params.get("format") not in ("json", "jsonv2"):
            return JSONResponse({"error": "format"}, status_code=400)
        found = self.answers.get(params.get("q", "").strip().lower(), [])
        return JSONResponse(found[: int(params.get("limit", "10"))])

    def queries(self) -> list[str]:
        return [h.query for h in self.hits]


@asynccontextmanager
async def nominatim(answers: dict[str, list[dict[str, Any]]]) -> AsyncIterator[FakeNominatim]:
    """Serve a FakeNominatim on a free port for the duration of the block."""
    fake = FakeNominatim({k.lower(): v for k, v in answers.items()})
    port = free_port()
    app = Starlette(routes=[Route("/search", fake.search, methods=["GET"])])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    fake.url = f"http://127.0.0.1:{port}"
    try:
        yield fake
    finally:
        server.should_exit = True
        await task
