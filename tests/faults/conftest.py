"""Helpers for the fault tests: a private PostgreSQL cluster that can be crashed, the real
`tracker serve` as a process that can be killed, phones that record every answer, and the
report every case writes its observed numbers to (artifacts/faults-report.json)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from tests.conftest import (
    ADMIN_TOKEN,
    ARTIFACTS,
    free_port,
    own_database,
)

REPORT = ARTIFACTS / "faults-report.json"
HOST = "127.0.0.1"


# -- the report -------------------------------------------------------------------------------


def record(case: str, numbers: Mapping[str, Any]) -> None:
    """Merge one case's observed numbers into the report (one key per case).

    Called before a case asserts, so a failing run still leaves its numbers behind."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with open(ARTIFACTS / ".faults-report.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            report: dict[str, Any] = json.loads(REPORT.read_text()) if REPORT.exists() else {}
        except ValueError:
            report = {}
        report[case] = {**numbers, "recorded_at": datetime.now(UTC).isoformat()}
        tmp = REPORT.with_suffix(".tmp")
        tmp.write_text(json.dumps(report, indent=2, sort_keys=True, default=str) + "\n")
        os.replace(tmp, REPORT)


# -- a private PostgreSQL cluster ---------------------------------------------------------------


def _postgres_bindir() -> Path:
    """The newest installed PostgreSQL whose share directory has PostGIS."""

    def version(p: Path) -> tuple[int, ...]:
        return tuple(int(x) for x in re.findall(r"\d+", p.name))

    for bindir in sorted(
        (p / "bin" for p in Path("/usr/lib/postgresql").glob("*")),
        key=lambda b: version(b.parent),
        reverse=True,
    ):
        postgis = Path("/usr/share/postgresql") / bindir.parent.name / "extension/postgis.control"
        if (bindir / "initdb").exists() and postgis.exists():
            return bindir
    found = shutil.which("initdb")
    if found is None:
        raise RuntimeError(
            "PostgreSQL server binaries with PostGIS are needed: run scripts/setup.sh --test"
        )
    return Path(found).parent


class PrivatePostgres:
    """A throw-away PostgreSQL cluster on a free port, which the tests may crash at will
    (the machine's shared server is never touched)."""

    def __init__(self) -> None:
        self.bindir = _postgres_bindir()
        self.root = Path(tempfile.mkdtemp(prefix="tracker-faults-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        # initdb refuses to run as root: the cluster belongs to the `postgres` user then.
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self._as:
            pw = pwd.getpwnam("postgres")
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        self.running = False

    def url(self, database: str = "tracker_faults") -> str:
        return f"postgresql://postgres@{HOST}:{self.port}/{database}"

    def _run(self, *args: str) -> None:
        done = subprocess.run(
            [*self._as, *args], capture_output=True, text=True, timeout=60, check=False
        )
        if done.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{args[0]} failed: {done.stdout}{done.stderr}{tail}")

    def init(self) -> None:
        self._run(
            str(self.bindir / "initdb"),
            "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync",
        )  # fmt: skip

    async def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses={HOST} "
            "-c shared_buffers=32MB -c max_connections=50"
        )
        await asyncio.to_thread(
            self._run,
            str(self.bindir / "pg_ctl"),
            "-D", str(self.data), "-l", str(self.root / "server.log"),
            "-o", options, "-w", "-t", "60", "start",
        )  # fmt: skip
        self.running = True

    async def crash(self) -> None:
        """Stop at once, like a power cut of the database: no checkpoint, no goodbye."""
        await asyncio.to_thread(
            self._run, str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
            "-w", "stop",
        )  # fmt: skip
        self.running = False

    def remove(self) -> None:
        if self.running:
            with contextlib.suppress(Exception):
                self._run(
                    str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"
                )
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
async def database_url() -> AsyncIterator[str]:
    """A fresh migrated database per fault module, dropped after it: these tests register
    hundreds of devices, which would swell every later dispatcher snapshot in the session's
    shared database."""
    async with own_database("faults") as url:
        yield url


@pytest.fixture(scope="module")
async def db(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A plain pool on the module's database, for assertions on what was stored."""
    from tracker.store.db import create_pool

    pool = await create_pool(database_url, 4)
    yield pool
    await pool.close()


@pytest.fixture
async def private_postgres() -> AsyncIterator[PrivatePostgres]:
    """A running private cluster with an empty, migrated tracker database."""
    from tracker.store.migrations import ensure_database, migrate

    pg = PrivatePostgres()
    try:
        await asyncio.to_thread(pg.init)
        await pg.start()
        await ensure_database(pg.url())
        await migrate(pg.url())
        yield pg
    finally:
        pg.remove()


# -- the real server as a process ---------------------------------------------------------------


class TrackerProcess:
    """`tracker serve` in its own process group, so a kill reaches every worker."""

    def __init__(self, database_url: str, workers: int = 1, **settings: str) -> None:
        self.port = free_port()
        self.workers = workers
        self.log_path = Path(tempfile.mkstemp(prefix="tracker-faults-", suffix=".log")[1])
        # Only what the test sets: an unknown TRACKER_* variable would stop start-up.
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("TRACKER_") and k not in ("DATABASE_URL", "REDIS_URL")
        }
        env.update(
            DATABASE_URL=database_url,
            TRACKER_ADMIN_TOKEN=ADMIN_TOKEN,
            TRACKER_RATE_LIMIT_DEVICE="off",
            TRACKER_RATE_LIMIT_IP="off",
            **settings,
        )
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self, timeout: float = 30.0) -> None:
        """Start and wait until /healthz answers."""
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tracker.tools.cli", "serve", "--host", HOST,
                 "--port", str(self.port), "--workers", str(self.workers)],
                env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tracker serve exited: {self.log()[-3000:]}")
            with contextlib.suppress(OSError, ConnectionError):
                conn = await HttpConnection.open(HOST, self.port)
                try:
                    answer = await asyncio.wait_for(conn.request("GET", "/healthz"), 2)
                finally:
                    conn.close()
                # Every worker is up once the supervisor's socket answers repeatedly.
                if answer.status == 200:
                    return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"tracker serve did not start: {self.log()[-3000:]}")

    def signal(self, sig: signal.Signals) -> None:
        """Send `sig` to the server (SIGTERM: uvicorn forwards it to its workers)."""
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill_group(self) -> None:
        """SIGKILL every process of the server at once: supervisor and workers."""
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    async def wait(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        return await asyncio.to_thread(self.proc.wait, timeout)

    def rss_kib(self) -> int:
        """Resident memory of the server process (one worker: the server itself)."""
        status = Path(f"/proc/{self.pid}/status").read_text()
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        assert match is not None
        return int(match.group(1))

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def metric(self, name: str, **labels: str) -> float:
        """A sample's value from GET /metrics (summed over matching samples; 0 if none)."""
        from prometheus_client.parser import text_string_to_metric_families

        conn = await HttpConnection.open(HOST, self.port)
        try:
            answer = await conn.request("GET", "/metrics", token=ADMIN_TOKEN)
        finally:
            conn.close()
        assert answer.status == 200, answer
        return sum(
            sample.value
            for family in text_string_to_metric_families(answer.body.decode())
            for sample in family.samples
            if sample.name == name and labels.items() <= sample.labels.items()
        )

    def stop(self) -> None:
        """End whatever is left of the server and forget its log."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill_group()
        self.log_path.unlink(missing_ok=True)


@pytest.fixture
def tracker_processes() -> Iterator[list[TrackerProcess]]:
    """Servers a test started; every one still running is ended afterwards."""
    started: list[TrackerProcess] = []
    yield started
    for proc in started:
        proc.stop()


# -- HTTP without a client library's overhead ------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


class HttpConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection, responses parsed by httptools: a phone's link.
    (httpx costs about 1 ms of CPU per request, too much to load a server on 2 cores.)"""

    def __init__(self) -> None:
        import httptools

        self._parser = httptools.HttpResponseParser(self)
        self._done: asyncio.Future[Answer] | None = None
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._field = ""
        self.transport: asyncio.Transport | None = None
        self.lost = False

    @classmethod
    async def open(cls, host: str, port: int) -> HttpConnection:
        loop = asyncio.get_running_loop()
        _, proto = await loop.create_connection(cls, host, port)
        return proto

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self._parser.feed_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self._done is not None and not self._done.done():
            self._done.set_exception(ConnectionResetError("connection lost"))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._done is not None and not self._done.done():
            answer = Answer(self._parser.get_status_code(), self._headers, b"".join(self._body))
            self._done.set_result(answer)

    async def request(
        self, method: str, path: str, body: bytes = b"", token: str | None = None
    ) -> Answer:
        """Send one request and wait for its answer (ConnectionResetError if the link dies)."""
        if self.transport is None or self.lost:
            raise ConnectionResetError("connection lost")
        self._done = asyncio.get_running_loop().create_future()
        self._headers, self._body = {}, []
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {HOST}\r\n{auth}"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        self.transport.write(head.encode() + body)
        return await self._done

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


# -- phones -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ping:
    """One fix a phone sent: `seq` is also stored in its attributes, to check the row."""

    seq: int
    time: datetime
    lat: float
    lon: float

    def json(self) -> dict[str, Any]:
        return {
            "time": self.time.isoformat(),
            "lat": self.lat,
            "lon": self.lon,
            "accuracy": 5.0,
            "attributes": {"seq": self.seq},
        }


@dataclass
class Phone:
    """A device posting sequential pings with unique fix times, one per request and every
    `batch_every`-th request a batch, recording the answer to each ping."""

    unique_id: str
    token: str
    host: str
    port: int
    start: datetime = field(default_factory=lambda: datetime.now(UTC) - timedelta(hours=1))
    batch_every: int = 4
    batch_size: int = 3
    pause_s: float = 0.01
    lat0: float = 50.85
    sent: list[Ping] = field(default_factory=list)
    acked: list[Ping] = field(default_factory=list)
    # Pings whose request failed without a 2xx, with the reason ("503", "reset", ...).
    failed: list[tuple[Ping, str]] = field(default_factory=list)
    answers: Counter[str] = field(default_factory=Counter)
    rejected: int = 0
    # (sent at, answered at, status or reason, Retry-After) per request, monotonic times.
    log: list[tuple[float, float, str, str | None]] = field(default_factory=list)
    _seq: int = 0
    _conn: HttpConnection | None = None

    def use(self, conn: HttpConnection) -> None:
        """Post over `conn` (shared with other phones posting one after another)."""
        self._conn = conn

    async def connect(self) -> None:
        """Open the phone's connection and use it once, so the server is serving it."""
        self._conn = await HttpConnection.open(self.host, self.port)
        answer = await self._conn.request("GET", "/healthz")
        assert answer.status == 200, answer

    def next_pings(self, count: int) -> list[Ping]:
        pings = []
        for _ in range(count):
            seq = self._seq
            self._seq += 1
            # 0.2 s and ~1 m apart: an ordinary drive for the filters, and an hour of
            # fix times before any would be in the future.
            t = self.start + timedelta(milliseconds=200 * seq)
            pings.append(Ping(seq, t, self.lat0 + seq * 1e-5, 4.35))
        return pings

    async def post(self, pings: list[Ping]) -> str:
        """Post pings in one request (a batch when several); returns the outcome."""
        body = (
            orjson.dumps(pings[0].json())
            if len(pings) == 1
            else orjson.dumps({"positions": [p.json() for p in pings]})
        )
        self.sent.extend(pings)
        began = time.monotonic()
        retry_after: str | None = None
        reply: dict[str, Any] = {}
        try:
            if self._conn is None or self._conn.lost:
                self._conn = await HttpConnection.open(self.host, self.port)
            answer = await asyncio.wait_for(
                self._conn.request("POST", "/api/v1/positions", body, self.token), 30
            )
            outcome = str(answer.status)
            retry_after = answer.headers.get("retry-after")
            reply = answer.json()
        except ConnectionRefusedError:
            outcome = "refused"
            self._conn = None
        except (ConnectionError, OSError, TimeoutError):
            outcome = "reset"
            if self._conn is not None:
                self._conn.close()
            self._conn = None
        self.log.append((began, time.monotonic(), outcome, retry_after))
        self.answers[outcome] += len(pings)
        if outcome.startswith("2"):
            # Every ping here is valid: a rejected one would be a bug of its own.
            self.rejected += reply.get("rejected", 0)
            self.acked.extend(pings)
        else:
            self.failed.extend((p, outcome) for p in pings)
        return outcome

    async def run(self, stop: asyncio.Event) -> None:
        """Post until `stop` is set."""
        n = 0
        while not stop.is_set():
            n += 1
            count = self.batch_size if n % self.batch_every == 0 else 1
            outcome = await self.post(self.next_pings(count))
            # A refused connection is retried a little later, as a phone would.
            await asyncio.sleep(0.05 if outcome == "refused" else self.pause_s)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


async def stored_rows(url: str, unique_ids: list[str]) -> dict[tuple[str, datetime], list[Any]]:
    """(device, fix_time) -> the `seq` attribute of every row stored under that key."""
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT d.unique_id, p.fix_time, p.attributes::text AS attributes "
            "FROM positions p JOIN devices d ON d.id = p.device_id "
            "WHERE d.unique_id = ANY($1::text[])",
            unique_ids,
        )
    finally:
        await conn.close()
    found: dict[tuple[str, datetime], list[Any]] = {}
    for row in rows:
        seq = orjson.loads(row["attributes"]).get("seq")
        found.setdefault((row["unique_id"], row["fix_time"]), []).append(seq)
    return found


@dataclass
class Audit:
    """Acknowledged versus stored, over every phone."""

    sent: int
    acked: int
    failed: int
    stored: int
    acked_missing: int
    duplicated: int
    wrong_row: int
    failed_but_stored: int

    def as_json(self) -> dict[str, int]:
        return dict(self.__dict__)


async def audit(url: str, phones: list[Phone]) -> Audit:
    """Check each phone's pings against the table: which are stored, once, with their seq."""
    stored = await stored_rows(url, [p.unique_id for p in phones])
    acked_missing = wrong_row = failed_but_stored = 0
    for phone in phones:
        for ping in phone.acked:
            seqs = stored.get((phone.unique_id, ping.time))
            if not seqs:
                acked_missing += 1
            elif seqs != [ping.seq]:
                wrong_row += 1
        for ping, _ in phone.failed:
            if (phone.unique_id, ping.time) in stored:
                failed_but_stored += 1
    return Audit(
        sent=sum(len(p.sent) for p in phones),
        acked=sum(len(p.acked) for p in phones),
        failed=sum(len(p.failed) for p in phones),
        stored=sum(len(v) for v in stored.values()),
        acked_missing=acked_missing,
        duplicated=sum(1 for v in stored.values() if len(v) > 1),
        wrong_row=wrong_row,
        failed_but_stored=failed_but_stored,
    )


# -- a WebSocket client that never reads ---------------------------------------------------


def stuck_websocket(host: str, port: int, path: str) -> socket.socket:
    """Complete a WebSocket handshake with a tiny receive buffer, then never read again."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # Set before connecting, so the advertised window stays small too.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect((host, port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)  # byte by byte: stop right after the handshake's answer
        if not chunk:
            raise ConnectionError("closed during the handshake")
        head += chunk
    if b" 101 " not in head.split(b"\r\n", 1)[0]:
        raise ConnectionError(f"handshake refused: {head!r}")
    return sock
