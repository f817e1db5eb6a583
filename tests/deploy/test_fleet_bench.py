"""bench/fleet_bench.py still runs end to end: a dozen devices for a couple of seconds, both
phases, on its own database. It checks the benchmark measures what it says (pings stored,
routes created and advanced, no errors), not any rate."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from tests.conftest import own_database
from tests.deploy.processes import ROOT


@pytest.mark.parametrize("client", ["python", "wrk"])
async def test_fleet_bench_runs_both_phases(tmp_path: Path, client: str) -> None:
    # scripts/setup.sh --test installs wrk (Debian package wrk): its absence is a failure.
    assert client != "wrk" or shutil.which("wrk") is not None, "wrk is not installed"
    out = tmp_path / "fleet.json"
    async with own_database("fleetbench", migrated=False) as url:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(ROOT / "bench" / "fleet_bench.py"),
            *("--devices", "12", "--clients", "4", "--workers", "1", "--seconds", "1.5"),
            *("--warmup-s", "0.5", "--settle-s", "0.5", "--client", client, "--json", str(out)),
            cwd=ROOT,
            env={**os.environ, "BENCH_FLEET_DATABASE_URL": url},
            stdout=asyncio.subprocess.DEVNULL,
        )
        assert await asyncio.wait_for(proc.wait(), 240) == 0
    routed, unrouted = json.loads(out.read_text())["phases"]
    assert (routed["phase"], unrouted["phase"]) == ("routed", "unrouted")
    for phase in (routed, unrouted):
        assert phase["client"] == client
        assert phase["acked"] > 0 and phase["not_stored"] == {}, phase
        assert phase["positions"] >= phase["acked"]
        assert phase["fixes_clamped_to_now"] == 0 and phase["newest_fix_age_s"] > 0
    assert routed["routes_by_status"] == {"active": 12}
    assert routed["events"] > 0 and routed["routes_behind"] == 0
    assert unrouted["events"] == 0 and "routes_by_status" not in unrouted
