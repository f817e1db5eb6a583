"""Real processes for the deployment tests: `tracker serve` (directly or through
deploy/entrypoint.sh), nginx running deploy/nginx.conf, and a throwaway database."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.conftest import ADMIN_TOKEN, free_port, own_database

ROOT = Path(__file__).resolve().parents[2]
ENTRYPOINT = ROOT / "deploy" / "entrypoint.sh"
NGINX_CONF = ROOT / "deploy" / "nginx.conf"
VENV_BIN = Path(sys.executable).parent
# The compose file's upstream lines, in order; the test swaps in local addresses.
COMPOSE_UPSTREAMS = ("tracker-1:8000", "tracker-2:8000")


def nginx_binary() -> str:
    """The nginx that scripts/setup.sh --test installs (Debian puts it in /usr/sbin)."""
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )
    if found is None:
        raise RuntimeError("nginx is not installed: run scripts/setup.sh --test")
    return found


def process_env(**settings: str) -> dict[str, str]:
    """This environment without any server setting of the caller's, plus `settings`, with
    the virtualenv's `tracker` first on PATH."""
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("TRACKER_")
        and k not in ("DATABASE_URL", "REDIS_URL", "FORWARDED_ALLOW_IPS")
    }
    base["PATH"] = f"{VENV_BIN}{os.pathsep}{base.get('PATH', '')}"
    # Tests post faster than phones; the limits are off unless a test sets them.
    base.update(
        TRACKER_RATE_LIMIT_DEVICE="off",
        TRACKER_RATE_LIMIT_IP="off",
        TRACKER_LOG_FORMAT="text",
        TRACKER_ADMIN_TOKEN=ADMIN_TOKEN,
    )
    base.update(settings)
    return base


def throwaway_database(migrated: bool) -> contextlib.AbstractAsyncContextManager[str]:
    """A new, uniquely named database on the test server, dropped afterwards."""
    return own_database(f"deploy_{uuid.uuid4().hex[:8]}", migrated)


@dataclass
class Process:
    """A child process with its output in a log file."""

    proc: subprocess.Popen[bytes]
    log: Path
    port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    async def wait_exit(self, timeout: float = 30.0) -> int:
        """The exit code, waiting up to `timeout` (then the process is killed)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self.proc.poll()
            if code is not None:
                return code
            await asyncio.sleep(0.05)
        self.proc.kill()
        raise AssertionError(f"pid {self.proc.pid} did not exit:\n{self.output()}")

    async def stop(self) -> int:
        """SIGTERM, then the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return await self.wait_exit()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def spawn(argv: list[str], env: Mapping[str, str], log: Path, port: int) -> Process:
    """Start `argv` with stdout and stderr going to `log`."""
    # Append mode: nginx reopens /dev/stdout for its access log with an offset of its own,
    # which would otherwise overwrite what went to stderr.
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, env=dict(env), stdout=out, stderr=subprocess.STDOUT)
    return Process(proc, log, port)


async def wait_ready(process: Process, path: str = "/readyz", timeout: float = 60.0) -> None:
    """Until `path` answers 200 on the process's port (fails if the process exits)."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=process.base_url, timeout=2.0) as client:
        while time.monotonic() < deadline:
            if process.proc.poll() is not None:
                raise AssertionError(f"exited with {process.proc.returncode}:\n{process.output()}")
            with contextlib.suppress(httpx.TransportError):
                if (await client.get(path)).status_code == 200:
                    return
            await asyncio.sleep(0.1)
    process.kill()
    raise AssertionError(f"not ready after {timeout}s:\n{process.output()}")


async def start_tracker(
    database_url: str,
    channel: str,
    log: Path,
    *,
    port: int | None = None,
    settings: Mapping[str, str] | None = None,
) -> Process:
    """`tracker serve` on 127.0.0.1 with the real Redis bus on `channel`, once ready."""
    from tests.conftest import TEST_REDIS_URL

    port = port or free_port()
    env = process_env(
        DATABASE_URL=database_url,
        REDIS_URL=TEST_REDIS_URL,
        TRACKER_BUS_CHANNEL=channel,
        **(settings or {}),
    )
    process = spawn(
        [str(VENV_BIN / "tracker"), "serve", "--port", str(port), "--log-level", "warning"],
        env,
        log,
        port,
    )
    await wait_ready(process)
    return process


def render_nginx_conf(
    text: str, upstreams: list[int], http_port: int, osmand_port: int, workdir: Path
) -> str:
    """deploy/nginx.conf with local upstream ports, local listen ports and its temporary
    files under `workdir`; everything else as in the file."""
    for name, port in zip(COMPOSE_UPSTREAMS, upstreams, strict=True):
        pattern = rf"(\n\s*server\s+){re.escape(name)}(\s)"
        text, count = re.subn(pattern, rf"\g<1>127.0.0.1:{port}\g<2>", text)
        assert count == 1, f"no `server {name}` line in deploy/nginx.conf"
    for listen, port in (("8000", http_port), ("5055", osmand_port)):
        text, count = re.subn(rf"\blisten {listen};", f"listen 127.0.0.1:{port};", text)
        assert count == 1, f"no `listen {listen};` in deploy/nginx.conf"
    temp = "\n".join(
        f"    {kind}_temp_path {workdir / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    text, count = re.subn(r"\nhttp \{\n", f"\nhttp {{\n{temp}\n", text)
    assert count == 1
    return text


async def start_nginx(upstreams: list[int], workdir: Path) -> tuple[Process, int]:
    """nginx running the rendered deploy/nginx.conf; returns it (on the HTTP port) and the
    OsmAnd port, once it answers."""
    http_port, osmand_port = free_port(), free_port()
    conf = workdir / "nginx.conf"
    conf.write_text(
        render_nginx_conf(NGINX_CONF.read_text(), upstreams, http_port, osmand_port, workdir)
    )
    main = f"daemon off; pid {workdir / 'nginx.pid'};"
    if os.geteuid() == 0:
        # Workers would otherwise drop to `nobody`, which cannot enter pytest's private tmp.
        main += " user root;"
    argv = [nginx_binary(), "-p", str(workdir), "-c", str(conf), "-e", "stderr", "-g", main]
    process = spawn(argv, os.environ, workdir / "nginx.log", http_port)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.proc.poll() is not None:
            raise AssertionError(f"nginx exited:\n{process.output()}")
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", http_port)
            writer.close()
            return process, osmand_port
        await asyncio.sleep(0.05)
    process.kill()
    raise AssertionError(f"nginx did not listen:\n{process.output()}")
