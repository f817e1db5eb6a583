"""Prometheus metrics of a server process, and their exposition for `GET /metrics`.

Every metric lives in prometheus_client's default registry. `tracker serve` runs its
workers in prometheus_client's multiprocess mode (it sets PROMETHEUS_MULTIPROC_DIR before
any worker imports this module): each process writes its values to files in that
directory and a scrape of any worker sums them, so the numbers cover the whole server.
Without the variable (tests, an app embedded elsewhere) the registry is served as is.

Label values come from small fixed sets (protocols, reject codes, error codes, channel
kinds, event types), never from a device, a token or other request data, so the number of
series stays bounded. The ingest path uses children bound once at import (`INGEST`,
`REJECTED`): an increment is then about a microsecond, even in multiprocess mode.
"""

from __future__ import annotations

import glob
import math
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)

from tracker.core import accuracy
from tracker.core.model import Reject, RejectCode

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

PROTOCOLS = ("native", "osmand", "owntracks", "overland")

# -- ingest ------------------------------------------------------------------------------

PINGS_RECEIVED = Counter(
    "tracker_pings_received", "Pings decoded from ingest requests", ["protocol"]
)
PINGS_STORED = Counter("tracker_pings_stored", "Pings newly stored", ["protocol"])
PINGS_DUPLICATE = Counter(
    "tracker_pings_duplicate", "Pings already stored (a client's retry)", ["protocol"]
)
PINGS_REJECTED = Counter(
    "tracker_pings_rejected", "Pings refused by a decoder or a filter, by reason", ["reason"]
)
ADDRESS_LIMITED = Counter(
    "tracker_address_limited",
    "Requests and WebSocket handshakes refused (429) by the per-address rate limit",
)
INGEST_REFUSED = Counter(
    "tracker_ingest_refused",
    "Ingest requests answered with an error (nothing stored), by error code",
    ["protocol", "code"],
)


@dataclass(frozen=True, slots=True)
class ProtocolCounters:
    """One protocol's ping counters, bound once."""

    received: Counter
    stored: Counter
    duplicates: Counter


INGEST = {
    p: ProtocolCounters(PINGS_RECEIVED.labels(p), PINGS_STORED.labels(p), PINGS_DUPLICATE.labels(p))
    for p in PROTOCOLS
}
REJECTED = {code: PINGS_REJECTED.labels(code) for code in RejectCode.ALL}


# The ping counters move on every ingest request. In multiprocess mode an `inc` takes a lock,
# checks the pid and writes a memory-mapped file (~1.5 µs); the hot path adds to plain ints
# here instead, and `flush` hands the sums over: every second (`Runtime`), before each
# exposition, and at shutdown.
_pending: dict[Counter, int] = {}


def count_pings(counters: ProtocolCounters, received: int, stored: int, duplicates: int) -> None:
    """Pings of one request: decoded, newly stored, and found stored already."""
    pending = _pending
    for child, n in (
        (counters.received, received),
        (counters.stored, stored),
        (counters.duplicates, duplicates),
    ):
        if n:
            pending[child] = pending.get(child, 0) + n


def flush() -> None:
    """Add the hot path's pending counts to their counters."""
    while _pending:
        child, n = _pending.popitem()
        child.inc(n)


def count_rejects(rejects: Iterable[Reject]) -> None:
    """Rejected pings, by their reason code."""
    for reject in rejects:
        child = REJECTED.get(reject.code)
        (child or PINGS_REJECTED.labels(reject.code)).inc()


def count_refused(protocol: str, code: str) -> None:
    """An ingest request answered with the error `code` (an `ApiError` code)."""
    INGEST_REFUSED.labels(protocol, code).inc()


# -- group commit ------------------------------------------------------------------------

COMMIT_ROWS = Histogram(
    "tracker_commit_rows",
    "Rows per group commit",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000),
)
COMMIT_SECONDS = Histogram(
    "tracker_commit_seconds",
    "Duration of a group commit (COPY, last positions, COMMIT)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
COMMITS_FAILED = Counter(
    "tracker_commits_failed",
    "Group commits that failed: unavailable (database down, requests get 503) or refused",
    ["reason"],
)

# -- live WebSocket fan-out --------------------------------------------------------------

WS_CLIENTS = Gauge(
    "tracker_ws_clients",
    "Open live WebSocket clients, by channel kind (dispatch, track)",
    ["channel"],
    multiprocess_mode="livesum",
)
WS_FRAMES_SENT = Counter(
    "tracker_ws_frames_sent", "Frames written to live WebSocket clients", ["channel"]
)
WS_FRAMES_MERGED = Counter(
    "tracker_ws_frames_merged",
    "Frames not sent to a slow reader: folded into its next frame instead",
    ["channel"],
)
WS_CLIENTS_STUCK = Counter(
    "tracker_ws_clients_stuck",
    "Live clients disconnected because their writes made no progress",
    ["channel"],
)


# -- bus ---------------------------------------------------------------------------------

BUS_RECONNECTS = Counter("tracker_bus_reconnects", "Redis subscriptions restored after being lost")
BUS_PUBLISHED = Counter("tracker_bus_published", "Messages published to Redis")
BUS_DROPPED = Counter(
    "tracker_bus_dropped", "Messages dropped from the outbox while Redis was unreachable"
)

# -- routes and webhooks -----------------------------------------------------------------

ROUTE_EVENTS = Counter("tracker_route_events", "Route and stop events stored, by type", ["type"])
WEBHOOK_DELIVERIES = Counter(
    "tracker_webhook_deliveries",
    "Webhook delivery attempts by outcome (delivered, retry, failed, cancelled)",
    ["outcome"],
)
MESSAGES = Counter(
    "tracker_messages",
    "Customer message attempts by channel (email, sms) and outcome "
    "(sent, retry, failed, suppressed, cancelled)",
    ["channel", "outcome"],
)

# -- live ETA accuracy -------------------------------------------------------------------
# Gauges, not counters: the figures are the deployment's, read from PostgreSQL (every
# instance's arrivals) over the last `ACCURACY_WINDOW_S` by a loop in every worker every
# `ACCURACY_REFRESH_S` (`Runtime`). All workers set the same values, so in multiprocess
# mode the most recent one is served ("livemostrecent": a dead worker's drop out).
# Counters bumped by the event sink would count a rolled-back transaction and restart
# from zero with each worker; these survive restarts and agree with GET /api/v1/accuracy.

ACCURACY_WINDOW_S = 24 * 3600.0
ACCURACY_REFRESH_S = 60.0
_ACC_LABELS = ["horizon"]
_ACC_MODE: Final = "livemostrecent"
ETA_ACCURACY_SAMPLES = Gauge(
    "tracker_eta_accuracy_samples",
    "ETAs scored against arrivals in the last 24 h, by horizon (0-5, 5-15, 15-30, 30+, all)",
    _ACC_LABELS,
    multiprocess_mode=_ACC_MODE,
)
ETA_ACCURACY_MAE = Gauge(
    "tracker_eta_accuracy_mae_seconds",
    "Mean absolute error of the ETAs shown, last 24 h, by horizon",
    _ACC_LABELS,
    multiprocess_mode=_ACC_MODE,
)
ETA_ACCURACY_BIAS = Gauge(
    "tracker_eta_accuracy_bias_seconds",
    "Mean ETA minus arrival (positive: the vehicle came earlier), last 24 h, by horizon",
    _ACC_LABELS,
    multiprocess_mode=_ACC_MODE,
)
ETA_ACCURACY_COVERAGE = Gauge(
    "tracker_eta_accuracy_coverage_ratio",
    "Share of arrivals inside the 80 % interval shown, last 24 h, by horizon",
    _ACC_LABELS,
    multiprocess_mode=_ACC_MODE,
)
ETA_ACCURACY_ACCURATE = Gauge(
    "tracker_eta_accuracy_accurate_ratio",
    "TransitApp accurate share (horizons up to 15 min), last 24 h, by horizon",
    _ACC_LABELS,
    multiprocess_mode=_ACC_MODE,
)
ETA_ACCURACY_SCORE = Gauge(
    "tracker_eta_accuracy_score_ratio",
    "TransitApp ETA Accuracy Benchmark score of the ETAs shown, last 24 h",
    multiprocess_mode=_ACC_MODE,
)


def set_accuracy(report: accuracy.Report) -> None:
    """Publish a live accuracy report (NaN where nothing was measured)."""

    def num(v: float | None) -> float:
        return math.nan if v is None else v

    for f in (*report.buckets, report.overall):
        label = f.label.removesuffix(" min")
        ETA_ACCURACY_SAMPLES.labels(label).set(f.count)
        ETA_ACCURACY_MAE.labels(label).set(num(f.mae_s))
        ETA_ACCURACY_BIAS.labels(label).set(num(f.bias_s))
        ETA_ACCURACY_COVERAGE.labels(label).set(num(f.coverage))
        ETA_ACCURACY_ACCURATE.labels(label).set(num(f.accurate))
    ETA_ACCURACY_SCORE.set(num(report.score))


# -- exposition --------------------------------------------------------------------------

_LIVE_GAUGE_FILE = re.compile(r"gauge_live\w+?_(\d+)\.db$")


def exposition() -> tuple[bytes, str]:
    """The metrics in Prometheus text format, and their content type.

    In multiprocess mode the values of every worker are summed (gauges per their mode);
    without it, this process's registry is served.
    """
    flush()
    path = os.environ.get(MULTIPROC_ENV)
    # The variable counts only if it was set before the metrics were created (then their
    # values live in files); otherwise this process's values are all there is.
    if not path or not getattr(values.ValueClass, "_multiprocess", False):
        return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
    _forget_dead_workers(path)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path)  # type: ignore[no-untyped-call]
    return generate_latest(registry), CONTENT_TYPE_LATEST


def _forget_dead_workers(path: str) -> None:
    # A worker that died (and was replaced by uvicorn) leaves its live gauges behind;
    # prometheus_client expects the supervisor to call mark_process_dead, and uvicorn's
    # has no hook for it, so each scrape does it for files of pids that are gone.
    for name in glob.glob(os.path.join(path, "gauge_live*.db")):
        found = _LIVE_GAUGE_FILE.search(name)
        pid = int(found.group(1)) if found else None
        if pid is not None and not _alive(pid):
            multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
