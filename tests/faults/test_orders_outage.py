"""PostgreSQL down while a dispatcher works with orders, depots and vehicles: every call
answers 503 with Retry-After (never a 500, never a 2xx for something not stored), and all of
them work again once the database is back. Runs a private cluster."""

from __future__ import annotations

import asyncio
import time

from tests.conftest import ServerFactory
from tests.faults.conftest import PrivatePostgres

ORDER = {"lat": 42.5063, "lon": 1.5218, "date": "2030-06-03", "recipient": "Outage"}
CSV = b"lat,lon,date\n42.5,1.5,2030-06-03\n"


async def test_orders_api_while_postgres_is_down(
    private_postgres: PrivatePostgres, server_factory: ServerFactory
) -> None:
    pg = private_postgres
    srv = await server_factory(database_url=pg.url())
    async with srv.admin() as client:
        created = await client.post("/api/v1/orders", json=ORDER)
        assert created.status_code == 201, created.text
        order_url = f"/api/v1/orders/{created.json()['id']}"
        await pg.crash()
        try:
            calls = [
                ("POST", "/api/v1/orders", {"json": ORDER}),
                ("POST", "/api/v1/orders", {"json": {"orders": [ORDER, ORDER]}}),
                ("GET", "/api/v1/orders", {}),
                ("GET", order_url, {}),
                ("PATCH", order_url, {"json": {"priority": 5}}),
                ("POST", f"{order_url}/cancel", {}),
                (
                    "POST",
                    "/api/v1/orders/import",
                    {"content": CSV, "headers": {"Content-Type": "text/csv"}},
                ),
                ("POST", "/api/v1/depots", {"json": {"name": "D", "lat": 1, "lon": 2}}),
                ("GET", "/api/v1/depots", {}),
                ("POST", "/api/v1/vehicles", {"json": {"name": "V"}}),
                ("GET", "/api/v1/vehicles", {}),
            ]
            for method, url, kwargs in calls:
                r = await client.request(method, url, **kwargs)  # type: ignore[arg-type]
                assert r.status_code == 503, (method, url, r.status_code, r.text[:200])
                assert int(r.headers["retry-after"]) >= 1
                assert r.json()["error"] == "unavailable"
        finally:
            await pg.start()
        # Back: the pool reconnects and nothing of the outage was stored.
        deadline = time.monotonic() + 30
        while True:
            r = await client.get("/api/v1/orders")
            if r.status_code == 200 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        assert r.status_code == 200
        assert r.json()["total"] == 1
        again = await client.post("/api/v1/orders", json=ORDER)
        assert again.status_code == 201
