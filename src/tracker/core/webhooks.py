"""Webhook notifications without I/O: which events can be subscribed to, the JSON body, its
signature, when an ETA change is worth telling, and the retry schedule.

Signature (as Stripe and others do it): the header `Tracker-Signature: t=<unix seconds>,
v1=<hex HMAC-SHA256>` where the HMAC, keyed with the subscription's secret, covers
`"<t>." + body`. Binding the time into the MAC lets a receiver refuse replays of old
deliveries; `verify` is the reference check a receiver can copy.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import orjson

from tracker.core.model import Event, EventType, JsonDict

SIGNATURE_HEADER = "Tracker-Signature"
DELIVERY_HEADER = "Tracker-Delivery"
EVENT_HEADER = "Tracker-Event"
SIGNATURE_VERSION = "v1"

# What a subscription may ask for: the six, and the other outcomes a business
# wires to messages (a skipped stop, the end of a route).
SUBSCRIBABLE = frozenset(
    {
        EventType.ETA_CHANGED,
        EventType.ARRIVING,
        EventType.ARRIVED,
        EventType.VISITED,
        EventType.COMPLETED,
        EventType.FAILED,
        EventType.SKIPPED,
        EventType.OFF_ROUTE,
        EventType.ROUTE_COMPLETED,
    }
)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """Hex HMAC-SHA256 of `"<timestamp>." + body` under `secret`."""
    message = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signature_header(secret: str, timestamp: int, body: bytes) -> str:
    """The `Tracker-Signature` header value of one attempt."""
    return f"t={timestamp},{SIGNATURE_VERSION}={sign(secret, timestamp, body)}"


def verify(secret: str, header: str, body: bytes, now_s: float, tolerance_s: float = 300.0) -> bool:
    """Whether `header` signs `body` with `secret`, made within `tolerance_s` of `now_s`."""
    fields: dict[str, list[str]] = {}
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if sep:
            fields.setdefault(key, []).append(value)
    try:
        timestamp = int(fields["t"][0])
    except (KeyError, ValueError):
        return False
    if abs(now_s - timestamp) > tolerance_s:
        return False
    expected = sign(secret, timestamp, body)
    return any(hmac.compare_digest(expected, sig) for sig in fields.get(SIGNATURE_VERSION, []))


def retry_delay(failures: int, base_s: float, max_s: float, jitter: float) -> float:
    """Seconds to wait after the `failures`-th failed attempt (1, 2, ...).

    Exponential (base, 2·base, 4·base, ... capped at `max_s`) with "equal jitter": half the
    step is fixed, half scaled by `jitter` in [0, 1), so receivers coming back from an
    outage are not hit by every sender in the same second.
    """
    if failures < 1:
        raise ValueError("failures counts from 1")
    step = min(max_s, base_s * 2.0 ** min(failures - 1, 62))
    return step / 2.0 + step / 2.0 * min(max(jitter, 0.0), 1.0)


def eta_worth_telling(last_told: datetime | None, eta: datetime, threshold_s: float) -> bool:
    """Whether a new ETA of a stop goes out to a subscription: the first one it would get
    always does, later ones when they moved at least `threshold_s` from the last one told."""
    if last_told is None:
        return True
    return abs((eta - last_told).total_seconds()) >= threshold_s


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def stop_json(row: Mapping[str, Any]) -> JsonDict:
    """What a delivery says about the stop: enough for the business to message its customer."""
    return {
        "id": row["id"],
        "seq": row["seq"],
        "name": row["name"],
        "recipient": row["recipient"],
        "status": row["status"],
        "eta": _iso(row["eta"]),
    }


def body(
    delivery_id: str,
    event_id: int,
    event: Event,
    device: str,
    stop: Mapping[str, Any] | None,
    data: Mapping[str, Any] | None = None,
) -> bytes:
    """The JSON body of a delivery (signed and sent as is on every attempt).

    `data` replaces the event's own data (an ETA change says which ETA it is measured from).
    """
    return orjson.dumps(
        {
            "id": delivery_id,
            "event_id": event_id,
            "type": event.type,
            "time": event.time.isoformat(),
            "device": device,
            "route_id": event.route_id,
            "stop": None if stop is None else stop_json(stop),
            "data": dict(event.data if data is None else data),
        }
    )
