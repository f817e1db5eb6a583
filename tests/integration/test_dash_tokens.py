"""Tokens and the command line (finding 9 of issue 15): tokens the server makes never
begin with `-`, and the CLI takes a token that does (`--token -pQdR...`) as a value."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg
import httpx

from tests.conftest import ServerFactory, add_device, stored_positions
from tests.integration.test_import import munich_csv
from tracker.core import tokens
from tracker.tools.cli import join_secret_values


def dash_token() -> str:
    """A token as tracker made them before: URL-safe, 43 characters, here one with `-` first."""
    return "-" + secrets.token_urlsafe(32)[1:]


async def test_the_server_never_hands_out_a_token_starting_with_a_dash(
    server_factory: ServerFactory,
) -> None:
    srv = await server_factory()
    # One URL-safe token in 64 starts with `-`: 320 devices met ~5 of them before the fix.
    # Ten at a time: a loaded machine answers 320 at once slower than a client's pool waits.
    limit = asyncio.Semaphore(10)
    async with srv.admin() as client:

        async def token(k: int) -> str:
            async with limit:
                r = await client.post("/api/v1/devices", json={"name": f"dash {k}"})
            assert r.status_code == 201, r.text
            value: str = r.json()["token"]
            return value

        made = await asyncio.gather(*(token(k) for k in range(320)))
    assert [t for t in made if t.startswith("-")] == []
    assert all(not tokens.new_token().startswith("-") for _ in range(20_000))


async def test_tracker_import_takes_a_token_that_starts_with_a_dash(
    server_factory: ServerFactory, db: asyncpg.Pool
) -> None:
    srv = await server_factory()
    dev = await add_device(srv)
    token = dash_token()
    # A device registered before tokens avoided the dash.
    await db.execute(
        "UPDATE devices SET token_hash = $1 WHERE unique_id = $2",
        tokens.digest(token),
        dev.unique_id,
    )
    tracker = str(Path(sys.executable).with_name("tracker"))
    env = {k: v for k, v in os.environ.items() if k != "TRACKER_DEVICE_TOKEN"}
    args = [tracker, "import", str(munich_csv()), "--device", dev.unique_id, "--token", token]
    args += ["--url", srv.base_url, "--quiet"]
    done = await asyncio.to_thread(
        subprocess.run, args, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "1194 pings sent" in done.stdout
    assert len(await stored_positions(db, dev.unique_id)) > 1000


async def test_tracker_simulate_takes_an_admin_token_that_starts_with_a_dash(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    admin = dash_token()
    srv = await server_factory(admin_token=admin)
    prefix = f"dash-{uuid.uuid4().hex[:6]}"
    args = [
        sys.executable, "-m", "tracker.tools.cli", "simulate", "--url", srv.base_url,
        "--admin-token", admin, "--drivers", "1", "--duration", "1",
        "--prefix", prefix, "--tokens-file", str(tmp_path / "t.json"),
    ]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, out.decode()
    async with httpx.AsyncClient(
        base_url=srv.base_url, headers={"Authorization": f"Bearer {admin}"}
    ) as client:
        listed = (await client.get("/api/v1/devices")).json()
    assert f"{prefix}-01" in {d["id"] for d in listed["devices"]}


def test_option_names_and_explicit_values_are_left_alone() -> None:
    token = dash_token()
    assert join_secret_values(["import", "f.csv", "--token", token]) == [
        "import",
        "f.csv",
        f"--token={token}",
    ]
    # A forgotten value is still argparse's error, not a token called "--url".
    assert join_secret_values(["--token", "--url", "x"]) == ["--token", "--url", "x"]
    assert join_secret_values(["--token", "-h"]) == ["--token", "-h"]
    assert join_secret_values(["--token=-x1", "--device", "-d"]) == [
        "--token=-x1",
        "--device",
        "-d",
    ]
    assert join_secret_values(["--", "--token", token]) == ["--", "--token", token]
