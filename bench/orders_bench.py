"""Orders: CSV import, listing and geocoding-cache throughput through a real `tracker serve`.

    .venv/bin/python bench/orders_bench.py [--rows 10000] [--database-url URL] [--json FILE]

Builds a CSV file of `--rows` orders around Andorra la Vella (coordinates, a window, size,
skills, a priority), then against a fresh database and server:
- dry run of the whole file (parse and check every row, store nothing);
- the import itself (all rows in one transaction);
- re-sending the same file with `on_duplicate=skip` (every row found stored already);
- listing: a filtered page of 100, a text search, and paging through the day by cursor.
Each figure is the wall time seen by the client. The machine may be shared: the load
average is printed with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import time
from pathlib import Path
from typing import Any

import httpx
from common import print_results, running_server

ADMIN = "bench-admin-token"
DEFAULT_DB = "postgresql://postgres@127.0.0.1:5432/tracker_orders_bench"
HEADER = (
    "order_id,recipient,address,lat,lon,date,window_start,window_end,parcels,kg,skills,priority"
)


def csv_text(rows: int, seed: int = 7) -> str:
    rng = random.Random(seed)
    lines = [HEADER]
    for i in range(rows):
        start = rng.choice(["08:00", "09:00", "10:00", "13:00", "14:00"])
        end = {"08:00": "11:00", "09:00": "12:00", "10:00": "13:00"}.get(start, "17:00")
        lines.append(
            f"B-{i:06d},Client {i},Carrer {i % 300} {i % 40},"
            f"{42.50 + rng.random() * 0.04:.5f},{1.50 + rng.random() * 0.05:.5f},"
            f"2030-06-03,{start},{end},{rng.randint(1, 4)},{rng.random() * 20:.1f},"
            f"{rng.choice(['', 'fridge', 'tail-lift'])},{rng.randint(0, 100)}"
        )
    return "\n".join(lines) + "\n"


async def run(base: str, rows: int) -> dict[str, Any]:
    text = csv_text(rows).encode()
    out: dict[str, Any] = {"rows": rows, "csv_bytes": len(text)}
    headers = {"Authorization": f"Bearer {ADMIN}"}
    async with httpx.AsyncClient(base_url=base, timeout=600, headers=headers) as client:

        async def timed(name: str, **kw: Any) -> httpx.Response:
            t = time.perf_counter()
            r = await client.request(**kw)
            out[name + "_s"] = round(time.perf_counter() - t, 3)
            assert r.status_code == 200, r.text[:300]
            return r

        csv = {"Content-Type": "text/csv"}
        params = {"time_zone": "Europe/Andorra"}
        url = "/api/v1/orders/import"
        r = await timed(
            "dry_run",
            method="POST",
            url=url,
            content=text,
            headers=csv,
            params={**params, "dry_run": "true"},
        )
        assert r.json()["imported"] == rows
        r = await timed("import", method="POST", url=url, content=text, headers=csv, params=params)
        assert r.json()["imported"] == rows
        r = await timed(
            "reimport_skip",
            method="POST",
            url=url,
            content=text,
            headers=csv,
            params={**params, "on_duplicate": "skip"},
        )
        assert r.json()["skipped"] == rows
        out["import_rows_per_s"] = round(rows / out["import_s"])
        await timed(
            "list_page",
            method="GET",
            url="/api/v1/orders",
            params={"date": "2030-06-03", "status": "unplanned", "limit": 100},
        )
        await timed(
            "text_search",
            method="GET",
            url="/api/v1/orders",
            params={"date": "2030-06-03", "q": "carrer 17 "},
        )
        t = time.perf_counter()
        cursor, seen = None, 0
        while True:
            p: dict[str, Any] = {"date": "2030-06-03", "limit": 1000}
            if cursor:
                p["cursor"] = cursor
            page = (await client.get("/api/v1/orders", params=p)).json()
            seen += len(page["orders"])
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == rows
        out["page_through_all_s"] = round(time.perf_counter() - t, 3)
    out["load_average"] = [round(x, 2) for x in os.getloadavg()]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10_000)
    ap.add_argument("--database-url", default=DEFAULT_DB)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    with running_server(args.database_url, ADMIN) as server:
        results = asyncio.run(run(server.base, args.rows))
    print_results(results, args.json)


if __name__ == "__main__":
    main()
