"""OwnTracks in HTTP mode: one JSON message per POST to ``/ingest/owntracks``.

Identity. OwnTracks authenticates with HTTP Basic auth (the app's Identification
settings: username and password); the app also sends the username as ``X-Limit-U`` and
the device name as ``X-Limit-D``, and the Recorder accepts ``?u=user&d=device`` instead.
Here the username is the device's unique id and the password its device token, so
`Decoded.device_key` is the Basic-auth username, else ``X-Limit-U``, else ``?u=``; the
caller checks the password against that device's token (`credentials` reads it). The
device name (``X-Limit-D``/``?d=``) is not identity: the iOS app fills in "device" when
it is left empty. ``tid`` and ``topic`` are not identity either (Traccar uses them; a
two-letter tid is neither unique nor secret). No username at all: 401.

Payload. Only ``_type: location`` carries a fix (booklet "JSON" page):
``lat``/``lon`` degrees (required), ``tst`` epoch seconds of the fix (required),
``vel`` km/h, ``cog`` degrees, ``acc`` and ``alt`` metres. A negative ``vel``, ``cog`` or
``acc`` means unknown. Absent ``vel``/``cog`` stay unknown rather than zero: the booklet
says zeros are omitted, but some Android versions never send them.
Attributes use Traccar's names where Traccar has one: ``batt`` -> ``batteryLevel``,
``bs`` (1 unplugged, 2 charging, 3 full) -> ``charge``, trigger ``t`` -> ``event`` (and
``i``/``I`` -> ``ignition`` true/false, as Traccar), and for qtripp/Greenwich trackers
``ign`` -> ``ignition``, ``odometer`` km -> ``odometer`` m, ``uext`` -> ``power``,
``ubatt`` -> ``battery``. Other scalar fields (``tid``, ``conn``, ``m``, ``vac``,
``SSID``, ``inregions``, ``mcc``...) are kept under their own names; ``topic`` and
``created_at`` (when the message was built, not the fix) are dropped.

Other ``_type`` values (transition, waypoint, lwt, card, status...) are accepted and
ignored, and so is a zero-length body (the app posts one when a friend is deleted).
``encrypted`` messages cannot be read without the key and are reported as a reject.

Reply: 200 with the JSON array ``[]`` (the app reads the body as a list of messages).
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any

from tracker.core.model import Fix, JsonDict, Reject, RejectCode
from tracker.protocols import fields
from tracker.protocols.base import Decoded, ProtocolError, Reply, Request
from tracker.protocols.fields import FieldError

EMPTY = Reply(status=200, content_type="application/json", body=b"[]")

_CONSUMED = frozenset(
    {
        "_type",
        "lat",
        "lon",
        "tst",
        "vel",
        "cog",
        "acc",
        "alt",
        "batt",
        "bs",
        "t",
        "ign",
        "odometer",
        "uext",
        "ubatt",
        "topic",
        "created_at",
    }
)
_RENAMED_NUMBERS = {"batt": "batteryLevel", "uext": "power", "ubatt": "battery"}
_CHARGING = {1: False, 2: True, 3: True}  # bs: 0 unknown, 1 unplugged, 2 charging, 3 full
_IGNITION_TRIGGERS = {"i": True, "I": False}


def credentials(request: Request) -> tuple[str, str] | None:
    """The HTTP Basic username and password, or None when the request carries none.

    Raises ProtocolError(401) for a Basic header that does not decode.
    """
    scheme, _, encoded = fields.header(request.headers, "authorization").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        text = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except ValueError as exc:
        # binascii.Error, UnicodeDecodeError, and the ValueError b64decode raises for a
        # header with non-ASCII characters (HTTP headers arrive as latin-1): all ValueErrors.
        raise ProtocolError(401, "malformed Basic authorization header") from exc
    user, _, password = text.partition(":")
    return user, password


def device_key(request: Request) -> str:
    """The device's unique id: Basic-auth username, else X-Limit-U, else ``?u=``."""
    basic = credentials(request)
    if basic is not None and basic[0].strip():
        return basic[0].strip()
    limit_user = fields.header(request.headers, "x-limit-u")
    if limit_user:
        return limit_user
    for key, value in request.query:
        if key == "u" and value.strip():
            return value.strip()
    raise ProtocolError(
        401, "no device: set Username (the device's unique id) and Password (its token)"
    )


def decode(request: Request, now: datetime) -> Decoded:
    """Decode one OwnTracks HTTP message; raises ProtocolError when it is unusable."""
    decoded = Decoded(device_key=device_key(request), reply=EMPTY)
    if not request.body.strip():
        return decoded
    message = fields.json_object(request.body)
    kind = message.get("_type")
    if kind == "encrypted":
        decoded.rejects.append(
            Reject(
                0,
                "encrypted payload: this server has no key; turn encryption off",
                RejectCode.ENCRYPTED,
            )
        )
    elif kind == "location":
        try:
            decoded.fixes.append((0, _fix(message)))
        except FieldError as exc:
            decoded.rejects.append(Reject(0, str(exc), exc.code))
    return decoded


def _attributes(message: dict[str, Any]) -> JsonDict:
    attributes: JsonDict = {}
    for key, value in message.items():
        if key not in _CONSUMED:
            kept = fields.json_value(value)
            if kept is not None:
                attributes[key] = kept
    for source, target in _RENAMED_NUMBERS.items():
        value = message.get(source)
        if isinstance(value, int | float) and not isinstance(value, bool):
            kept = fields.json_value(value)
            if kept is not None:
                attributes[target] = kept
    battery_status = message.get("bs")
    if isinstance(battery_status, int) and battery_status in _CHARGING:
        attributes["charge"] = _CHARGING[battery_status]
    trigger = message.get("t")
    if isinstance(trigger, str) and trigger:
        attributes["event"] = trigger
        if trigger in _IGNITION_TRIGGERS:
            attributes["ignition"] = _IGNITION_TRIGGERS[trigger]
    if isinstance(message.get("ign"), bool):
        attributes["ignition"] = message["ign"]
    odometer = message.get("odometer")
    if odometer is not None:
        attributes["odometer"] = fields.number(odometer, "odometer") * 1000.0  # km -> m
    return attributes


def _fix(message: dict[str, Any]) -> Fix:
    lat, lon = fields.position(message.get("lat"), message.get("lon"))
    if message.get("tst") is None:
        raise FieldError("tst: missing (the time of the fix is required)")
    speed_kmh = fields.unknown_if_negative(message.get("vel"), "vel")
    return Fix(
        device_id=0,
        time=fields.epoch_seconds(message["tst"], "tst"),
        lat=lat,
        lon=lon,
        speed=None if speed_kmh is None else speed_kmh * fields.KMH_TO_MPS,
        course=fields.course(message.get("cog"), "cog"),
        accuracy=fields.unknown_if_negative(message.get("acc"), "acc"),
        altitude=fields.optional_number(message.get("alt"), "alt"),
        attributes=_attributes(message),
    )
