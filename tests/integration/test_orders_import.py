"""CSV import of orders through a real server and PostGIS, and `tracker orders import` as a
real process: every bad row reported by line and by the file's own column name, all or
nothing by default, dry runs that store nothing, skipping good rows' companions, and
re-sending a file without doubling its orders."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.conftest import ADMIN_TOKEN, DATA, Server

GOOD = DATA / "orders" / "good.csv"
BAD = DATA / "orders" / "bad.csv"
Json = dict[str, Any]


def unique(text: str) -> str:
    """The file with its order ids made unique to this test (the database is shared)."""
    tag = uuid.uuid4().hex[:6]
    return text.replace("AD-", f"AD{tag}-")


async def post_csv(server: Server, text: str | bytes, **params: str) -> tuple[int, Json]:
    async with server.admin() as client:
        r = await client.post(
            "/api/v1/orders/import",
            content=text.encode() if isinstance(text, str) else text,
            params=params,
            headers={"Content-Type": "text/csv; charset=utf-8"},
        )
    return r.status_code, r.json()


async def test_good_file_imports_every_row(server: Server, db: asyncpg.Pool) -> None:
    status, report = await post_csv(server, unique(GOOD.read_text()), time_zone="Europe/Andorra")
    assert status == 200, report
    assert (report["rows"], report["imported"], report["rejected"]) == (3, 3, 0)
    assert [o["line"] for o in report["orders"]] == [2, 3, 4]
    ids = [o["id"] for o in report["orders"]]
    rows = {
        r["id"]: r
        for r in await db.fetch(
            "SELECT id, recipient, windows, service_s, size, skills, priority, notes, "
            "geocode_status, ST_Y(location::geometry) AS lat FROM orders WHERE id = ANY($1)",
            ids,
        )
    }
    first, second, third = (rows[i] for i in ids)
    # 09:00 in Andorra in June is 07:00 UTC.
    assert first["windows"] == [["2030-06-03T07:00:00+00:00", "2030-06-03T10:00:00+00:00"]]
    assert (first["service_s"], first["size"], first["priority"]) == (
        180.0,
        {"parcels": 2.0, "kg": 7.5},
        40,
    )
    assert second["skills"] == ["fridge"]
    assert third["notes"] == 'pickup at the back door, ask for "Marta"'
    # No coordinates and no geocoder configured on this server: flagged for the dispatcher.
    assert (third["lat"], third["geocode_status"]) == (None, "unresolved")
    assert first["geocode_status"] == "given"


async def test_bad_file_is_rejected_whole_with_every_problem_named(
    server: Server, db: asyncpg.Pool
) -> None:
    text = unique(BAD.read_text())
    before = await db.fetchval("SELECT count(*) FROM orders")
    status, report = await post_csv(server, text)
    assert status == 422
    assert report["error"] == "invalid_rows"
    assert "nothing was imported" in report["message"]
    assert await db.fetchval("SELECT count(*) FROM orders") == before
    got = {(e["line"], e["field"]) for e in report["errors"]}
    assert got == {
        (3, "window_start"),  # end before start
        (4, "lat"),
        (4, "parcels"),
        (4, "priority"),
        (4, "kind"),
        (5, "address"),  # neither coordinates nor an address
        (6, "order_id"),  # repeats line 2
    }
    messages = {(e["line"], e["field"]): e["message"] for e in report["errors"]}
    assert messages[(4, "lat")] == "'north' is not a number"
    assert messages[(4, "priority")] == "'high' is not a number"
    assert messages[(4, "kind")] == "must be one of delivery, pickup"
    assert messages[(3, "window_start")] == "end must be after start"
    assert "repeats line 2" in messages[(6, "order_id")]
    assert report["rejected"] == 4 and report["imported"] == 0


async def test_dry_run_reports_and_stores_nothing(server: Server, db: asyncpg.Pool) -> None:
    before = await db.fetchval("SELECT count(*) FROM orders")
    text = unique(BAD.read_text())
    status, report = await post_csv(server, text, dry_run="true")
    assert status == 200
    assert report["dry_run"] is True
    # All or nothing by default: this file would store nothing.
    assert (report["imported"], report["rejected"], report["orders"]) == (0, 4, [])
    assert len(report["errors"]) == 7
    status, report = await post_csv(server, text, dry_run="true", on_error="skip")
    assert (report["imported"], report["rejected"]) == (1, 4)
    assert report["orders"] == [
        {
            "line": 2,
            "id": None,
            "external_id": report["orders"][0]["external_id"],
            "geocode_status": "given",
        }
    ]
    assert await db.fetchval("SELECT count(*) FROM orders") == before


async def test_skip_imports_the_good_rows(server: Server, db: asyncpg.Pool) -> None:
    status, report = await post_csv(server, unique(BAD.read_text()), on_error="skip")
    assert status == 200
    assert report["imported"] == 1 and report["rejected"] == 4
    (good,) = report["orders"]
    row = await db.fetchrow(
        "SELECT ST_Y(location::geometry) AS lat, ST_X(location::geometry) AS lon, size "
        "FROM orders WHERE id = $1",
        good["id"],
    )
    # Decimal commas of a ';' file are read as decimal points.
    assert (row["lat"], row["lon"], row["size"]) == (42.5063, 1.5218, {"parcels": 1.0, "kg": 2.5})


async def test_resending_a_file_doubles_nothing(server: Server, db: asyncpg.Pool) -> None:
    text = unique(GOOD.read_text())
    assert (await post_csv(server, text))[0] == 200
    status, again = await post_csv(server, text)
    assert status == 422
    assert {e["field"] for e in again["errors"]} == {"order_id"}
    assert all("exists already" in e["message"] for e in again["errors"])
    status, skipped = await post_csv(server, text, on_duplicate="skip")
    assert status == 200
    assert (skipped["imported"], skipped["skipped"]) == (0, 3)
    assert [d["line"] for d in skipped["duplicates"]] == [2, 3, 4]


@pytest.mark.parametrize(
    ("content", "params", "status", "named"),
    [
        (b"lat,lon,priorty\n1,2,3\n", {}, 400, "unknown column 'priorty'"),
        (b"lat,lon,lat\n1,2,3\n", {}, 400, "repeats"),
        (b"", {}, 400, "header row"),
        (b"lat,lon,date\n", {}, 400, "no rows"),
        (b"lat,lon,date\n\xff\xfe1,2\n", {}, 400, "line 2: not UTF-8"),
        (b'lat,lon,date\n1,2,"2030-01-01\n', {}, 400, "line"),
        (b"lat,lon,date\n1,2,2030-01-01,9\n", {"on_error": "skip"}, 200, ""),
        (b"lat,lon,date\n1,2,2030-01-01\n", {"time_zone": "Mars/Olympus"}, 400, "time_zone"),
        (b"lat,lon,date\n1,2,2030-01-01\n", {"on_error": "maybe"}, 400, "on_error"),
        (b"lat,lon,date\n1,2,2030-01-01\n", {"dry_run": "perhaps"}, 400, "dry_run"),
        (b"lat,lon,date\n1,2,2030-01-01\n", {"mode": "x"}, 400, "unknown query parameter: mode"),
    ],
)
async def test_unusable_files_are_4xx_naming_the_problem(
    server: Server, content: bytes, params: dict[str, str], status: int, named: str
) -> None:
    got, body = await post_csv(server, content, **params)
    assert got == status, body
    if status == 400:
        assert named in body["message"]
    else:
        assert body["errors"] == [
            {"line": 2, "field": "*", "message": "4 cells but the header names 3 columns"}
        ]


async def test_json_is_not_csv(server: Server) -> None:
    async with server.admin() as client:
        r = await client.post("/api/v1/orders/import", json={"orders": []})
    assert r.status_code == 415


async def cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tracker.tools.cli",
        "orders",
        "import",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_cli_imports_and_reports_lines(
    server: Server, tmp_path: Path, db: asyncpg.Pool
) -> None:
    good = tmp_path / "good.csv"
    good.write_text(unique(GOOD.read_text()))
    code, out, err = await cli(
        str(good),
        "--url",
        server.base_url,
        "--time-zone",
        "Europe/Andorra",
        env={"TRACKER_API_KEY": ADMIN_TOKEN},
    )
    assert code == 0, err
    assert "3 rows: imported 3, 0 with errors" in out
    assert "1 orders have no coordinates" in out
    bad = tmp_path / "bad.csv"
    bad.write_text(unique(BAD.read_text()))
    before = await db.fetchval("SELECT count(*) FROM orders")
    code, out, err = await cli(
        str(bad), "--url", server.base_url, "--token", ADMIN_TOKEN, "--dry-run"
    )
    assert code == 1
    assert "line 4, priority: 'high' is not a number" in out
    assert "line 3, window_start: end must be after start" in out
    assert await db.fetchval("SELECT count(*) FROM orders") == before
    code, out, err = await cli(str(bad), "--url", server.base_url, "--token", ADMIN_TOKEN)
    assert code == 1 and "nothing was imported" in err
    code, out, err = await cli(str(bad), "--url", server.base_url, "--token", "wrong")
    assert code == 2 and "HTTP 401" in err
    code, out, err = await cli(str(tmp_path / "none.csv"), "--token", "x")
    assert code == 2 and "no such file" in err
