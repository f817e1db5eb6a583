"""deploy/entrypoint.sh, the image's entrypoint, run for real with /bin/sh: it migrates a
fresh database (two instances starting at once), becomes `tracker serve` (exec: SIGTERM to
its pid stops the server with exit 0), and gives up on an unreachable database with one
line."""

from __future__ import annotations

import subprocess
from pathlib import Path

import asyncpg
import httpx

from tests.conftest import free_port
from tests.deploy.processes import (
    ENTRYPOINT,
    ROOT,
    Process,
    process_env,
    spawn,
    throwaway_database,
    wait_ready,
)


def cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")


async def test_two_entrypoints_migrate_a_fresh_database_serve_and_stop_on_sigterm(
    tmp_path: Path,
) -> None:
    async with throwaway_database(migrated=False) as url:
        started: list[Process] = []
        try:
            # Both at once, as compose starts tracker-1 and tracker-2: the migrations'
            # advisory lock lets one apply them while the other waits.
            for name in ("one", "two"):
                port = free_port()
                env = process_env(DATABASE_URL=url, HOST="127.0.0.1", PORT=str(port))
                argv = [str(ENTRYPOINT), "--log-level", "warning"]  # added to `serve`
                started.append(spawn(argv, env, tmp_path / f"{name}.log", port))
            for process in started:
                await wait_ready(process)
                async with httpx.AsyncClient(base_url=process.base_url) as client:
                    assert (await client.get("/healthz")).json() == {"status": "ok"}
                    assert (await client.get("/readyz")).json() == {"status": "ready"}
                # The shell is gone: its pid now runs the server, with the default workers.
                argv = cmdline(process.proc.pid)
                assert "serve" in argv and "sh" not in Path(argv[0]).name, argv
                assert argv[argv.index("--workers") + 1] == "2"
                assert argv[argv.index("--log-level") + 1] == "warning"

            conn = await asyncpg.connect(url)
            try:
                applied = [
                    r["name"] for r in await conn.fetch("SELECT name FROM schema_migrations")
                ]
            finally:
                await conn.close()
            expected = sorted(p.name for p in (ROOT / "sql").glob("[0-9][0-9][0-9]_*.sql"))
            assert sorted(applied) == expected

            for process in started:
                assert await process.stop() == 0, process.output()
        finally:
            for process in started:
                process.kill()


async def test_unreachable_database_gives_up_after_the_wait_with_one_line(tmp_path: Path) -> None:
    nobody = f"postgresql://postgres@127.0.0.1:{free_port()}/tracker"
    env = process_env(DATABASE_URL=nobody, DB_WAIT_S="2")
    done = subprocess.run([str(ENTRYPOINT)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("entrypoint: database not ready after 2s (DB_WAIT_S): ")
    assert "Connect call failed" in lines[0] or "refused" in lines[0].lower()


async def test_configuration_error_stops_at_once_with_its_line(tmp_path: Path) -> None:
    # With a minute to wait, retrying a bad setting would outlast the subprocess timeout.
    env = process_env(TRACKER_COMIT_MAX_ROWS="10", DB_WAIT_S="60")
    done = subprocess.run([str(ENTRYPOINT)], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "entrypoint: tracker: configuration error: TRACKER_COMIT_MAX_ROWS: unknown setting"
        " (did you mean TRACKER_COMMIT_MAX_ROWS?)"
    ]


async def test_a_bad_wait_is_refused() -> None:
    env = process_env(DB_WAIT_S="1m")
    done = subprocess.run([str(ENTRYPOINT)], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert done.stderr == "entrypoint: DB_WAIT_S=1m: expected whole seconds\n"


async def test_another_command_runs_instead_without_waiting() -> None:
    nobody = f"postgresql://postgres@127.0.0.1:{free_port()}/tracker"
    env = process_env(DATABASE_URL=nobody, DB_WAIT_S="60")
    argv = [str(ENTRYPOINT), "tracker", "device", "--help"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: tracker device")
