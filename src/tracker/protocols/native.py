"""The server's own JSON protocol: one ping as an object, or `{"positions": [...]}`.

Fields: `time` (ISO-8601 with zone, or epoch seconds/milliseconds), `lat`, `lon`, and
optional `speed` (m/s), `course`, `accuracy`, `altitude`, `attributes` (object). An
optional `device_id` (top level or per ping) must name the token's own device.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from tracker.core.model import Fix, Reject
from tracker.core.timeparse import TimeFormatError, parse_time
from tracker.protocols.base import Decoded, ProtocolError, Reply, Request

_OPTIONAL = ("speed", "course", "accuracy", "altitude")
_KNOWN = frozenset({"time", "lat", "lon", "device_id", "attributes", *_OPTIONAL})

ACCEPTED = Reply(status=202, content_type="application/json")


class PingError(ValueError):
    """One ping is unusable; the message says which field and why."""


def _number(ping: dict[str, Any], name: str, required: bool) -> float | None:
    value = ping.get(name)
    if value is None:
        if required:
            raise PingError(f"{name}: missing")
        return None
    kind = type(value)  # exact types: bool is an int subclass but not a coordinate
    if kind is float:
        return value  # type: ignore[no-any-return]
    if kind is int:
        return float(value)
    raise PingError(f"{name}: must be a number, got {kind.__name__}")


def parse_ping(ping: object, device_id: int = 0) -> tuple[Fix, str | None]:
    """One JSON ping to a Fix of `device_id` and the `device_id` it names, if any."""
    if not isinstance(ping, dict):
        raise PingError("a ping must be a JSON object")
    lat = _number(ping, "lat", True)
    lon = _number(ping, "lon", True)
    assert lat is not None and lon is not None
    if "time" not in ping or ping["time"] is None:
        raise PingError("time: missing")
    try:
        time = parse_time(ping["time"])
    except TimeFormatError as exc:
        raise PingError(f"time: {exc}") from exc
    attributes = ping.get("attributes")
    if attributes is None:
        attributes = {}
    elif not isinstance(attributes, dict):
        raise PingError("attributes: must be an object")
    if not ping.keys() <= _KNOWN:
        extra = {k: v for k, v in ping.items() if k not in _KNOWN}
        attributes = {**extra, **attributes}
    named = ping.get("device_id")
    if named is not None and not isinstance(named, str | int):
        raise PingError("device_id: must be a string")
    fix = Fix(
        device_id=device_id,
        time=time,
        lat=lat,
        lon=lon,
        speed=_number(ping, "speed", False),
        course=_number(ping, "course", False),
        accuracy=_number(ping, "accuracy", False),
        altitude=_number(ping, "altitude", False),
        attributes=attributes,
    )
    return fix, (str(named) if named is not None else None)


def decode(request: Request, now: datetime, max_batch: int = 10_000, device_id: int = 0) -> Decoded:
    """Decode a native JSON body. Raises ProtocolError for a body unusable as a whole.

    The device is known from the token before decoding, so fixes carry its id already.
    """
    try:
        body = orjson.loads(request.body)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(400, f"malformed JSON: {exc}") from exc
    if isinstance(body, dict) and "positions" in body:
        pings = body["positions"]
        if not isinstance(pings, list):
            raise ProtocolError(400, "positions: must be an array")
        if not pings:
            raise ProtocolError(400, "positions: empty")
        if len(pings) > max_batch:
            raise ProtocolError(413, f"positions: at most {max_batch} per request")
        top = body.get("device_id")
    elif isinstance(body, dict):
        pings, top = [body], None
    else:
        raise ProtocolError(400, 'body must be a ping object or {"positions": [...]}')
    decoded = Decoded(reply=ACCEPTED)
    names: set[str] = {str(top)} if top is not None else set()
    for index, ping in enumerate(pings):
        try:
            fix, named = parse_ping(ping, device_id)
        except PingError as exc:
            decoded.rejects.append(Reject(index, str(exc)))
            continue
        if named is not None:
            names.add(named)
        decoded.fixes.append((index, fix))
    if len(names) > 1:
        raise ProtocolError(403, "a request may carry pings of one device only")
    decoded.device_key = names.pop() if names else None
    return decoded
