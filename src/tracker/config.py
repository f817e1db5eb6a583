"""Settings read from the environment, in one place.

Each field of `Settings` names its environment variable and a one-line description; the
README's configuration table is checked against them by a test. A value that does not parse
or is out of range raises `ConfigError`, whose message is the one line the command prints
before it exits (no traceback).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, get_type_hints

from limits import parse_many

from tracker.core.destinations import check_networks

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/tracker"
DEFAULT_TILE_URL = "https://tile.openstreetmap.org/{z}/{x}/{y}.png"
DEFAULT_TILE_ATTRIBUTION = "&copy; OpenStreetMap contributors"

# Variables read elsewhere (paths of the checkout, the import tool's client side): known, so a
# typo check on TRACKER_* does not flag them.
OTHER_VARIABLES = frozenset(
    {"TRACKER_SQL_DIR", "TRACKER_WEB_DIR", "TRACKER_URL", "TRACKER_DEVICE_TOKEN", "TRACKER_API_KEY"}
)


class ConfigError(ValueError):
    """A setting that cannot be used; the message names the variable and what is wrong."""


def rate_limits(value: str) -> str:
    """Validate a rate-limit string in `limits` notation ("20/second;600/minute"), or off."""
    if value.strip().lower() in ("", "0", "off", "none"):
        return ""
    try:
        parse_many(value)
    except ValueError as exc:
        raise ValueError(f"expected e.g. '20/second' or 'off' ({exc})") from exc
    return value


def _setting(
    default: Any,
    env: str,
    doc: str,
    *,
    minimum: float | None = 0,
    check: Callable[[str], Any] | None = None,
) -> Any:
    return field(
        default=default, metadata={"env": env, "doc": doc, "minimum": minimum, "check": check}
    )


@dataclass(frozen=True)
class Settings:
    """Every knob of a server instance. `Settings.from_env()` is the only reader of os.environ."""

    database_url: str = _setting(DEFAULT_DATABASE_URL, "DATABASE_URL", "PostgreSQL with PostGIS")
    redis_url: str | None = _setting(
        None, "REDIS_URL", "Redis for fan-out between instances; unset = one instance"
    )
    admin_token: str | None = _setting(
        None, "TRACKER_ADMIN_TOKEN", "the admin's bearer token (device and key administration)"
    )
    # Group commit: a batch closes after this many milliseconds or rows, whichever first.
    commit_interval_ms: float = _setting(
        1.0, "TRACKER_COMMIT_INTERVAL_MS", "group commit: how long a batch gathers rows"
    )
    commit_max_rows: int = _setting(
        5000, "TRACKER_COMMIT_MAX_ROWS", "group commit: rows that close a batch early", minimum=1
    )
    max_body_bytes: int = _setting(
        4 * 1024 * 1024, "TRACKER_MAX_BODY_BYTES", "largest request body (413 beyond)", minimum=1
    )
    max_batch: int = _setting(
        10_000, "TRACKER_MAX_BATCH", "most pings in one request (413 beyond)", minimum=1
    )
    max_future_s: float = _setting(
        600.0, "TRACKER_MAX_FUTURE_S", "fixes further in the future are rejected"
    )
    max_speed_mps: float = _setting(
        100.0, "TRACKER_MAX_SPEED_MPS", "implausible-jump filter between consecutive fixes"
    )
    auth_cache_s: float = _setting(
        3600.0,
        "TRACKER_AUTH_CACHE_S",
        "longest an instance trusts a cached token lookup (changes made through the server "
        "reach every instance at once); 0 = no cache",
    )
    db_pool_size: int = _setting(
        8, "TRACKER_DB_POOL_SIZE", "database connections per worker process", minimum=1
    )
    retry_after_s: int = _setting(5, "TRACKER_RETRY_AFTER_S", "`Retry-After` sent with 503")
    tile_url: str = _setting(DEFAULT_TILE_URL, "TRACKER_TILE_URL", "map tiles (OpenStreetMap)")
    tile_attribution: str = _setting(
        DEFAULT_TILE_ATTRIBUTION, "TRACKER_TILE_ATTRIBUTION", "the tiles' attribution"
    )
    tick_ms: float = _setting(
        150.0, "TRACKER_TICK_MS", "live updates: one frame per socket per tick at most", minimum=1
    )
    stale_after_s: float = _setting(
        120.0, "TRACKER_STALE_AFTER_S", "markers turn grey after this long without a fix"
    )
    tracking_ttl_s: float = _setting(
        24 * 3600.0,
        "TRACKER_TRACKING_TTL_S",
        "a tracking link expires this long after its stop is done",
    )
    customer_max_stops_away: int = _setting(
        1,
        "TRACKER_CUSTOMER_MAX_STOPS_AWAY",
        "a customer sees the vehicle only when their stop is at most this many stops ahead",
    )
    # How long an instance trusts "this device has no active route" at most: route changes
    # travel on the bus and reach every instance at once, this only bounds a missed one.
    route_cache_s: float = _setting(
        3600.0,
        "TRACKER_ROUTE_CACHE_S",
        "longest an instance trusts 'this device has no route' (changes travel on the bus)",
    )
    # Route plans kept per worker, least recently used first out: a fleet whose routes do
    # not all fit rebuilds a plan on nearly every ping. About 35 kB for a 30-stop route on a
    # 400-point path, growing with the path.
    plan_cache: int = _setting(
        10_000,
        "TRACKER_PLAN_CACHE",
        "route plans kept per worker (one per active route)",
        minimum=1,
    )
    # Second listener serving only the OsmAnd protocol at `/` (Traccar's port is 5055).
    osmand_port: int | None = _setting(
        None, "TRACKER_OSMAND_PORT", "second listener for Traccar Client at `/`; 0 = off"
    )
    osmand_host: str = _setting(
        "127.0.0.1", "TRACKER_OSMAND_HOST", "address of that listener (`tracker serve --host`)"
    )
    # Live fan-out: the Redis pub/sub channel (instances sharing it act as one), how long a
    # WebSocket write may make no progress before the client is dropped, and how long the
    # dispatcher's sign-in cookie lives.
    bus_channel: str = _setting(
        "tracker:bus", "TRACKER_BUS_CHANNEL", "Redis pub/sub channel (separates deployments)"
    )
    ws_stuck_s: float = _setting(
        10.0, "TRACKER_WS_STUCK_S", "a socket whose writes make no progress this long is dropped"
    )
    session_max_age_s: float = _setting(
        7 * 24 * 3600.0, "TRACKER_SESSION_MAX_AGE_S", "lifetime of the dispatcher's session cookie"
    )
    # permessage-deflate compresses every frame again for each socket (its context is per
    # connection): ~4.5x less bandwidth, but it undoes the one-encode-per-tick sharing.
    ws_deflate: bool = _setting(
        False, "TRACKER_WS_DEFLATE", "per-message deflate (one compression per socket per frame)"
    )
    # Customer tracking links are absolute URLs on this base (the server's public address).
    public_url: str = _setting(
        "http://127.0.0.1:8000", "TRACKER_PUBLIC_URL", "base of the customer tracking links"
    )
    # stop.arriving fires (once per stop) and the tracking page says "arriving" when the ETA
    # is this close.
    arriving_s: float = _setting(
        300.0, "TRACKER_ARRIVING_S", "`stop.arriving` fires once when the ETA drops under this"
    )
    # Route planning (planner): straight-line travel when no road network is loaded, the
    # way from a stop to the network's nearest junction, and VROOM's search effort.
    plan_speed_kmh: float = _setting(
        30.0,
        "TRACKER_PLAN_SPEED_KMH",
        "planning without roads: straight-line driving speed",
        minimum=1,
    )
    plan_detour: float = _setting(
        1.3,
        "TRACKER_PLAN_DETOUR",
        "planning without roads: road distance per straight-line metre",
        minimum=1,
    )
    plan_access_kmh: float = _setting(
        15.0,
        "TRACKER_PLAN_ACCESS_KMH",
        "speed between a stop and its nearest road junction",
        minimum=1,
    )
    plan_exploration: int = _setting(
        0,
        "TRACKER_PLAN_EXPLORATION",
        "VROOM exploration level, 0 (fast) to 5 (thorough)",
        check=lambda v: _level(v),
    )
    plan_threads: int = _setting(
        2, "TRACKER_PLAN_THREADS", "threads VROOM searches with", minimum=1
    )
    plan_timeout_s: float = _setting(
        50.0,
        "TRACKER_PLAN_TIMEOUT_S",
        "longest VROOM search for one plan (its best so far); 0 = no limit",
    )
    # Webhook deliveries: how often each instance looks for due ones, the HTTP timeout, the
    # retry schedule (exponential from base to max, with jitter), when to give up, and how
    # many requests one instance has in flight.
    webhook_poll_s: float = _setting(
        1.0, "TRACKER_WEBHOOK_POLL_S", "how often an instance looks for due webhook deliveries"
    )
    webhook_timeout_s: float = _setting(
        10.0, "TRACKER_WEBHOOK_TIMEOUT_S", "webhook HTTP timeout", minimum=0.001
    )
    webhook_retry_base_s: float = _setting(
        10.0, "TRACKER_WEBHOOK_RETRY_BASE_S", "first webhook retry delay (doubles, with jitter)"
    )
    webhook_retry_max_s: float = _setting(
        3600.0, "TRACKER_WEBHOOK_RETRY_MAX_S", "longest webhook retry delay"
    )
    webhook_max_attempts: int = _setting(
        12, "TRACKER_WEBHOOK_MAX_ATTEMPTS", "webhook attempts before giving up", minimum=1
    )
    webhook_concurrency: int = _setting(
        8, "TRACKER_WEBHOOK_CONCURRENCY", "webhook requests in flight per instance", minimum=1
    )
    # Orders given only by address are geocoded (orders): a Nominatim-compatible /search
    # endpoint, at most one request per interval across all instances (Nominatim's public
    # service allows one a second and asks for a User-Agent naming the application).
    geocoder_url: str | None = _setting(
        None,
        "TRACKER_GEOCODER_URL",
        "Nominatim-compatible geocoder for orders given by address; unset = flag them unresolved",
    )
    geocoder_interval_s: float = _setting(
        1.0, "TRACKER_GEOCODER_INTERVAL_S", "least time between two geocoder requests"
    )
    geocoder_timeout_s: float = _setting(
        10.0, "TRACKER_GEOCODER_TIMEOUT_S", "geocoder HTTP timeout", minimum=0.001
    )
    geocoder_user_agent: str = _setting(
        "tracker-geocoder/0.1", "TRACKER_GEOCODER_USER_AGENT", "User-Agent of geocoder requests"
    )
    geocoder_countries: str = _setting(
        "",
        "TRACKER_GEOCODER_COUNTRIES",
        "ISO codes the geocoder searches in (`ad,fr`); unset = all",
    )
    # The doorstep (proof of delivery, customer messages): upload limits, what a failed
    # delivery may lead to, and the e-mail (SMTP) and SMS (Twilio-style HTTP API) channels.
    proof_max_bytes: int = _setting(
        3 * 1024 * 1024, "TRACKER_PROOF_MAX_BYTES", "largest photo or signature upload", minimum=1
    )
    proof_max_pixels: int = _setting(
        40_000_000, "TRACKER_PROOF_MAX_PIXELS", "largest proof image (width × height)", minimum=1
    )
    proof_retention_days: float = _setting(
        0.0,
        "TRACKER_PROOF_RETENTION_DAYS",
        "proof photos and signatures older than this are deleted; 0 = TRACKER_RETENTION_DAYS",
    )
    far_from_stop_m: float = _setting(
        200.0,
        "TRACKER_FAR_FROM_STOP_M",
        "completing or failing farther than this from the stop needs a stated reason",
    )
    undo_s: float = _setting(
        10.0, "TRACKER_UNDO_S", "how long the driver page holds a completion or failure for undo"
    )
    failed_next_steps: str = _setting(
        "retry_today,pickup_point,return_to_depot",
        "TRACKER_FAILED_NEXT_STEPS",
        "next steps a driver may choose after a failed delivery (comma-separated)",
        check=lambda v: _subset(v, ("retry_today", "pickup_point", "return_to_depot")),
    )
    company_name: str = _setting(
        "tracker", "TRACKER_COMPANY_NAME", "the sender's name in customer messages"
    )
    message_language: str = _setting(
        "en", "TRACKER_MESSAGE_LANGUAGE", "language of customer messages when a stop names none"
    )
    message_timezone: str = _setting(
        "UTC", "TRACKER_MESSAGE_TIMEZONE", "time zone of message times and quiet hours"
    )
    message_quiet_hours: str = _setting(
        "",
        "TRACKER_MESSAGE_QUIET_HOURS",
        "e.g. `21:00-08:00`: messages wait until it ends (arriving-soon ones are dropped)",
        check=lambda v: _quiet_hours(v),
    )
    message_poll_s: float = _setting(
        1.0, "TRACKER_MESSAGE_POLL_S", "how often an instance looks for due customer messages"
    )
    message_retry_base_s: float = _setting(
        30.0, "TRACKER_MESSAGE_RETRY_BASE_S", "first message retry delay (doubles, with jitter)"
    )
    message_retry_max_s: float = _setting(
        3600.0, "TRACKER_MESSAGE_RETRY_MAX_S", "longest message retry delay"
    )
    message_max_attempts: int = _setting(
        8, "TRACKER_MESSAGE_MAX_ATTEMPTS", "message attempts before giving up", minimum=1
    )
    smtp_host: str | None = _setting(
        None, "TRACKER_SMTP_HOST", "SMTP server for customer e-mail; unset = no e-mail"
    )
    smtp_port: int = _setting(587, "TRACKER_SMTP_PORT", "SMTP port", minimum=1)
    smtp_username: str | None = _setting(None, "TRACKER_SMTP_USERNAME", "SMTP login")
    smtp_password: str | None = _setting(None, "TRACKER_SMTP_PASSWORD", "SMTP password")
    smtp_tls: str = _setting(
        "starttls",
        "TRACKER_SMTP_TLS",
        "`starttls`, `tls` (implicit, port 465) or `off`",
        check=lambda v: _choice(v, ("starttls", "tls", "off")),
    )
    smtp_from: str = _setting(
        "tracker@localhost", "TRACKER_SMTP_FROM", "From address of customer e-mail"
    )
    sms_url: str | None = _setting(
        None,
        "TRACKER_SMS_URL",
        "SMS provider's Messages endpoint (Twilio's shape); unset = no SMS",
    )
    sms_account: str | None = _setting(
        None, "TRACKER_SMS_ACCOUNT", "SMS API account (HTTP basic user, e.g. Twilio SID)"
    )
    sms_token: str | None = _setting(None, "TRACKER_SMS_TOKEN", "SMS API secret (basic password)")
    sms_from: str = _setting("", "TRACKER_SMS_FROM", "SMS sender number or name")
    message_timeout_s: float = _setting(
        10.0, "TRACKER_MESSAGE_TIMEOUT_S", "SMTP and SMS API timeout", minimum=0.001
    )
    # Operations: logs, metrics, retention, limits.
    log_format: str = _setting(
        "json",
        "TRACKER_LOG_FORMAT",
        "`json` (one object per line, with request ids) or `text`",
        check=lambda v: _choice(v, ("json", "text")),
    )
    log_level: str = _setting(
        "info",
        "TRACKER_LOG_LEVEL",
        "`debug`, `info`, `warning` or `error`",
        check=lambda v: _choice(v, ("debug", "info", "warning", "error")),
    )
    access_log: bool = _setting(
        False, "TRACKER_ACCESS_LOG", "log every request (errors and 4xx are always logged)"
    )
    metrics_token: str | None = _setting(
        None, "TRACKER_METRICS_TOKEN", "bearer token for `GET /metrics` (the admin's works too)"
    )
    retention_days: float = _setting(
        0.0,
        "TRACKER_RETENTION_DAYS",
        "positions older than this are dropped, a month partition at a time; 0 keeps all",
    )
    retention_check_s: float = _setting(
        3600.0, "TRACKER_RETENTION_CHECK_S", "how often an instance applies the retention"
    )
    rate_limit_device: str = _setting(
        "20/second",
        "TRACKER_RATE_LIMIT_DEVICE",
        "ingest requests per device (`limits` notation, e.g. `20/second;600/minute`; `off`)",
        check=rate_limits,
    )
    rate_limit_ip: str = _setting(
        "500/second",
        "TRACKER_RATE_LIMIT_IP",
        "requests per client address, any endpoint (`off` disables)",
        check=rate_limits,
    )
    ws_max_per_token: int = _setting(
        20,
        "TRACKER_WS_MAX_PER_TOKEN",
        "WebSocket clients one credential may hold open per process (0 = no limit)",
    )
    # -- workspace: customer links a dispatcher can list again --------------------------------
    link_secret: str | None = _setting(
        None,
        "TRACKER_LINK_SECRET",
        "derives customer tracking links so dispatchers can list them on a route; unset: "
        "a link is shown only when it is made",
    )
    # Hardening (issue 15, harden-a): webhook destinations, token caches, slow bodies.
    webhook_allow_cidrs: str = _setting(
        "",
        "TRACKER_WEBHOOK_ALLOW_CIDRS",
        "networks webhooks may reach although not public (CIDRs, comma-separated, e.g. "
        "`10.0.0.0/8`); unset = public addresses only",
        check=check_networks,
    )
    auth_cache_size: int = _setting(
        120_000,
        "TRACKER_AUTH_CACHE_SIZE",
        "token lookups an instance keeps (device tokens, keys, sessions; least recently used "
        "go first)",
        minimum=1,
    )
    body_timeout_s: float = _setting(
        30.0,
        "TRACKER_BODY_TIMEOUT_S",
        "a request body must arrive within this many seconds of its headers (408 beyond)",
        minimum=0.001,
    )
    max_anonymous_bodies: int = _setting(
        64,
        "TRACKER_MAX_ANONYMOUS_BODIES",
        "request bodies read at once per process before the caller is authenticated (503 beyond)",
        minimum=1,
    )
    # ETAs and learning (issue 12): what leaving a stop does to an arrival nobody closed,
    # and how often an instance folds finished drives into the learned travel times.
    auto_complete: str = _setting(
        "visited",
        "TRACKER_AUTO_COMPLETE",
        "`visited`: leaving a stop records a visit (the driver completes it); `departure`: "
        "leaving completes it",
        check=lambda v: _choice(v, ("visited", "departure")),
    )
    learn_interval_s: float = _setting(
        300.0,
        "TRACKER_LEARN_INTERVAL_S",
        "how often an instance learns travel times from finished drives (0 = never; "
        "`tracker learn` runs it once)",
    )
    # Hardening (issue 15, harden-b): another customer's address is never shown, one request
    # cannot hold a worker, and no live frame outgrows what WebSocket clients accept (Python
    # websockets refuses messages over 1 MiB by default).
    customer_hide_radius_m: float = _setting(
        100.0,
        "TRACKER_CUSTOMER_HIDE_RADIUS_M",
        "customers do not see the vehicle this close to another customer's stop",
    )
    max_path_points: int = _setting(
        10_000,
        "TRACKER_MAX_PATH_POINTS",
        "a route's path is simplified to at most this many points",
        minimum=2,
    )
    ws_max_frame_bytes: int = _setting(
        256 * 1024,
        "TRACKER_WS_MAX_FRAME_BYTES",
        "live frames larger than this are split (a snapshot in parts)",
        minimum=4096,
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read every setting from its variable; raises ConfigError naming a bad one."""
        env = os.environ if environ is None else environ
        hints = get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = env.get(f.metadata["env"])
            if raw is None or raw.strip() == "":
                continue
            values[f.name] = _parse(f, hints[f.name], raw.strip())
        known = {f.metadata["env"] for f in dataclasses.fields(cls)} | OTHER_VARIABLES
        for name in sorted(env):
            if name.startswith("TRACKER_") and name not in known:
                close = difflib.get_close_matches(name, known, n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                raise ConfigError(f"{name}: unknown setting{hint}")
        if values.get("osmand_port") == 0:
            values["osmand_port"] = None
        return cls(**values)


def _level(value: str) -> int:
    level = int(value)
    if not 0 <= level <= 5:
        raise ValueError("expected a whole number from 0 to 5")
    return level


def _choice(value: str, allowed: tuple[str, ...]) -> str:
    if value.lower() not in allowed:
        raise ValueError(f"expected one of {', '.join(allowed)}")
    return value.lower()


def _subset(value: str, allowed: tuple[str, ...]) -> str:
    items = [v.strip().lower() for v in value.split(",") if v.strip()]
    wrong = [v for v in items if v not in allowed]
    if wrong:
        raise ValueError(f"expected some of {', '.join(allowed)}")
    return ",".join(items)


def _quiet_hours(value: str) -> str:
    from tracker.core.notices import parse_quiet_hours

    parse_quiet_hours(value)
    return value


def _parse(f: dataclasses.Field[Any], kind: Any, raw: str) -> Any:
    name = f.metadata["env"]
    check = f.metadata["check"]
    minimum = f.metadata["minimum"]
    try:
        if check is not None:
            return check(raw)
        if kind is bool:
            lowered = raw.lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError("expected true or false")
        if kind in (int, int | None):
            value: float = int(raw)
        elif kind is float:
            value = float(raw)
            if value != value or value in (float("inf"), float("-inf")):
                raise ValueError("expected a finite number")
        else:
            return raw
    except ValueError as exc:
        detail = str(exc) if "expected" in str(exc) else f"expected {_kind_name(kind)}"
        raise ConfigError(f"{name}={raw!r}: {detail}") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name}={raw!r}: must be at least {minimum:g}")
    return value


def _kind_name(kind: Any) -> str:
    return "a whole number" if kind in (int, int | None) else "a number"


def documented() -> list[tuple[str, str, str]]:
    """(variable, default, description) of every setting, for the README's table."""
    rows = []
    for f in dataclasses.fields(Settings):
        rows.append((f.metadata["env"], _default_text(f.default), f.metadata["doc"]))
    return rows


def _default_text(value: Any) -> str:
    if value is None or value == "":
        return "unset"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
