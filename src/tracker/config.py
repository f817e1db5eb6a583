"""Settings read from the environment, in one place."""

from __future__ import annotations

import os
from dataclasses import dataclass


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return float(raw) if raw not in (None, "") else default


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return int(raw) if raw not in (None, "") else default


DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/tracker"
DEFAULT_TILE_URL = "https://tile.openstreetmap.org/{z}/{x}/{y}.png"
DEFAULT_TILE_ATTRIBUTION = "&copy; OpenStreetMap contributors"


@dataclass(frozen=True)
class Settings:
    """Every knob of a server instance. `Settings.from_env()` is the only reader of os.environ."""

    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str | None = None
    admin_token: str | None = None
    # Group commit: a batch closes after this many milliseconds or rows, whichever first.
    commit_interval_ms: float = 1.0
    commit_max_rows: int = 5000
    max_body_bytes: int = 4 * 1024 * 1024
    max_batch: int = 10_000
    max_future_s: float = 600.0
    max_speed_mps: float = 100.0
    auth_cache_s: float = 5.0
    db_pool_size: int = 8
    retry_after_s: int = 5
    tile_url: str = DEFAULT_TILE_URL
    tile_attribution: str = DEFAULT_TILE_ATTRIBUTION
    tick_ms: float = 150.0
    stale_after_s: float = 120.0
    tracking_ttl_s: float = 24 * 3600.0
    customer_max_stops_away: int = 1
    # How long an instance trusts "this device has no active route" (a route created on
    # another instance is picked up within this time; its pings are applied then).
    route_cache_s: float = 5.0
    # Second listener serving only the OsmAnd protocol at `/` (Traccar's port is 5055).
    osmand_port: int | None = None
    osmand_host: str = "127.0.0.1"
    # Live fan-out: the Redis pub/sub channel (instances sharing it act as one), how long a
    # WebSocket write may make no progress before the client is dropped, and how long the
    # dispatcher's sign-in cookie lives.
    bus_channel: str = "tracker:bus"
    ws_stuck_s: float = 10.0
    session_max_age_s: float = 7 * 24 * 3600.0
    # permessage-deflate compresses every frame again for each socket (its context is per
    # connection): ~4.5x less bandwidth, but it undoes the one-encode-per-tick sharing.
    ws_deflate: bool = False
    # Customer tracking links are absolute URLs on this base (the server's public address).
    public_url: str = "http://127.0.0.1:8000"
    # stop.arriving fires (once per stop) and the tracking page says "arriving" when the ETA
    # is this close.
    arriving_s: float = 300.0
    # Webhook deliveries: how often each instance looks for due ones, the HTTP timeout, the
    # retry schedule (exponential from base to max, with jitter), when to give up, and how
    # many requests one instance has in flight.
    webhook_poll_s: float = 1.0
    webhook_timeout_s: float = 10.0
    webhook_retry_base_s: float = 10.0
    webhook_retry_max_s: float = 3600.0
    webhook_max_attempts: int = 12
    webhook_concurrency: int = 8

    @classmethod
    def from_env(cls) -> Settings:
        """Read settings from TRACKER_* variables, DATABASE_URL and REDIS_URL."""
        return cls(
            database_url=os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL,
            redis_url=os.environ.get("REDIS_URL") or None,
            admin_token=os.environ.get("TRACKER_ADMIN_TOKEN") or None,
            commit_interval_ms=_float("TRACKER_COMMIT_INTERVAL_MS", 1.0),
            commit_max_rows=_int("TRACKER_COMMIT_MAX_ROWS", 5000),
            max_body_bytes=_int("TRACKER_MAX_BODY_BYTES", 4 * 1024 * 1024),
            max_batch=_int("TRACKER_MAX_BATCH", 10_000),
            max_future_s=_float("TRACKER_MAX_FUTURE_S", 600.0),
            max_speed_mps=_float("TRACKER_MAX_SPEED_MPS", 100.0),
            auth_cache_s=_float("TRACKER_AUTH_CACHE_S", 5.0),
            db_pool_size=_int("TRACKER_DB_POOL_SIZE", 8),
            retry_after_s=_int("TRACKER_RETRY_AFTER_S", 5),
            tile_url=os.environ.get("TRACKER_TILE_URL") or DEFAULT_TILE_URL,
            tile_attribution=os.environ.get("TRACKER_TILE_ATTRIBUTION") or DEFAULT_TILE_ATTRIBUTION,
            tick_ms=_float("TRACKER_TICK_MS", 150.0),
            stale_after_s=_float("TRACKER_STALE_AFTER_S", 120.0),
            tracking_ttl_s=_float("TRACKER_TRACKING_TTL_S", 24 * 3600.0),
            customer_max_stops_away=_int("TRACKER_CUSTOMER_MAX_STOPS_AWAY", 1),
            route_cache_s=_float("TRACKER_ROUTE_CACHE_S", 5.0),
            osmand_port=_int("TRACKER_OSMAND_PORT", 0) or None,
            osmand_host=os.environ.get("TRACKER_OSMAND_HOST") or "127.0.0.1",
            bus_channel=os.environ.get("TRACKER_BUS_CHANNEL") or "tracker:bus",
            ws_stuck_s=_float("TRACKER_WS_STUCK_S", 10.0),
            session_max_age_s=_float("TRACKER_SESSION_MAX_AGE_S", 7 * 24 * 3600.0),
            ws_deflate=os.environ.get("TRACKER_WS_DEFLATE", "").lower() in ("1", "true", "yes"),
            public_url=os.environ.get("TRACKER_PUBLIC_URL") or "http://127.0.0.1:8000",
            arriving_s=_float("TRACKER_ARRIVING_S", 300.0),
            webhook_poll_s=_float("TRACKER_WEBHOOK_POLL_S", 1.0),
            webhook_timeout_s=_float("TRACKER_WEBHOOK_TIMEOUT_S", 10.0),
            webhook_retry_base_s=_float("TRACKER_WEBHOOK_RETRY_BASE_S", 10.0),
            webhook_retry_max_s=_float("TRACKER_WEBHOOK_RETRY_MAX_S", 3600.0),
            webhook_max_attempts=_int("TRACKER_WEBHOOK_MAX_ATTEMPTS", 12),
            webhook_concurrency=_int("TRACKER_WEBHOOK_CONCURRENCY", 8),
        )
