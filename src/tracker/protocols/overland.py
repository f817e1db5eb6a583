"""Overland (iOS, and the Android port): a batch of GeoJSON Point features per POST.

Body: ``{"locations": [Feature...], "current": Feature?, "trip": {...}?}`` (Overland-iOS
README, "API"). Each location feature has ``geometry.coordinates`` ``[lon, lat]`` and
``properties``: ``timestamp`` ISO-8601, ``speed`` m/s, ``course`` degrees (newer
versions), ``altitude`` m, ``horizontal_accuracy`` / ``vertical_accuracy`` m, ``motion``,
``battery_state``, ``battery_level`` (0..1), ``wifi`` (SSID), ``device_id``.

Meaning of negative values follows CoreLocation, whose numbers Overland forwards: a
negative speed or course is unknown; a negative ``vertical_accuracy`` means the altitude
is invalid (so it is dropped); a negative ``horizontal_accuracy`` means the coordinates
themselves are invalid, so that point is rejected.

Skipped silently (they are not fixes, so neither stored nor rejected): features without
geometry, and the app's bookkeeping features that reuse the last location with a later
timestamp (``properties.action``: paused/resumed/visit..., ``properties.type: "trip"``).

``current`` is the newest point, sent when the queue holds more than one batch: it is
decoded as one more fix with index ``len(locations)``, so the live map jumps to where the
phone is instead of replaying the backlog; when it arrives again inside a later batch it
has the same time, and the store's (device, time) key makes that a duplicate.

Attributes use Traccar's names where Traccar has one: ``battery_level`` ->
``batteryLevel`` (percent), ``battery_state`` charging/full -> ``charge`` true, unplugged
-> false. ``motion`` (a list such as ["driving", "stationary"]) is kept as
``motionStates`` because Traccar's ``motion`` is a boolean. ``wifi``, ``device_id`` and
``trip_id`` are kept when not empty, ``speed_accuracy``/``course_accuracy``/
``vertical_accuracy`` when not negative. The "tracking stats" (pauses, activity,
desired_accuracy, deferred, significant_change, locations_in_payload, tracking_mode)
describe the app's settings, not the fix, and are dropped; ``locations_in_payload`` also
changes when a point is retried in another batch.

Identity comes from the device token (``?token=`` on the receiver URL, or the
``Authorization: Bearer`` header Overland sends when an access token is set), so
`Decoded.device_key` is None; ``properties.device_id`` is a free label, not identity.

Reply. `Decoded.reply` is exactly ``{"result":"ok"}``, which tells the app to delete the
batch from its queue: send it only after the batch is committed. Rejected points are
part of "the batch": they would fail again on every retry and block the queue, so they
are reported, not retried. When storing fails, answer `error_reply` (any other answer
keeps the batch on the phone for the next attempt).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson

from tracker.core.model import Fix, JsonDict, Reject, RejectCode
from tracker.core.timeparse import TimeFormatError, parse_time
from tracker.protocols import fields
from tracker.protocols.base import Decoded, ProtocolError, Reply, Request
from tracker.protocols.fields import FieldError

OK = Reply(status=200, content_type="application/json", body=b'{"result":"ok"}')

_CHARGING = {"charging": True, "full": True, "unplugged": False}
_LABELS = ("wifi", "device_id", "trip_id")
_ACCURACIES = ("speed_accuracy", "course_accuracy", "vertical_accuracy")


def error_reply(message: str, status: int = 503) -> Reply:
    """An answer that makes Overland keep the batch; the app shows `message` to the user."""
    return Reply(
        status=status, content_type="application/json", body=orjson.dumps({"error": message})
    )


def decode(request: Request, now: datetime) -> Decoded:
    """Decode one Overland batch; raises ProtocolError when the body is unusable."""
    body = fields.json_object(request.body)
    locations = body.get("locations")
    if not isinstance(locations, list):
        raise ProtocolError(400, 'locations: missing; expected {"locations": [...]}')
    features: list[object] = list(locations)
    if isinstance(body.get("current"), dict):
        features.append(body["current"])
    decoded = Decoded(device_key=None, reply=OK)
    for index, feature in enumerate(features):
        try:
            fix = _fix(feature)
        except FieldError as exc:
            decoded.rejects.append(Reject(index, str(exc), exc.code))
            continue
        if fix is not None:
            decoded.fixes.append((index, fix))
    return decoded


def _attributes(properties: dict[str, Any]) -> JsonDict:
    attributes: JsonDict = {}
    level = properties.get("battery_level")
    if isinstance(level, int | float) and not isinstance(level, bool) and 0 <= level <= 1:
        attributes["batteryLevel"] = round(level * 100)
    state = properties.get("battery_state")
    if isinstance(state, str) and state in _CHARGING:
        attributes["charge"] = _CHARGING[state]
    motion = properties.get("motion")
    if isinstance(motion, list) and all(isinstance(item, str) for item in motion):
        attributes["motionStates"] = motion
    for key in _LABELS:
        value = properties.get(key)
        if isinstance(value, str) and value:
            attributes[key] = value
    for key in _ACCURACIES:
        value = fields.unknown_if_negative(properties.get(key), key)
        if value is not None:
            attributes[key] = value
    return attributes


def _fix(feature: object) -> Fix | None:
    if not isinstance(feature, dict):
        raise FieldError("location: must be a GeoJSON Feature object")
    geometry = feature.get("geometry")
    properties = feature.get("properties")
    if not isinstance(properties, dict):
        properties = {}
    if geometry is None or "action" in properties or properties.get("type") == "trip":
        return None
    if not isinstance(geometry, dict) or geometry.get("type") != "Point":
        raise FieldError("geometry: must be a GeoJSON Point")
    coordinates = geometry.get("coordinates")
    if not isinstance(coordinates, list) or len(coordinates) < 2:
        raise FieldError("geometry.coordinates: expected [lon, lat]")
    lat, lon = fields.position(coordinates[1], coordinates[0])
    horizontal = fields.optional_number(
        properties.get("horizontal_accuracy"), "horizontal_accuracy"
    )
    if horizontal is not None and horizontal < 0:
        raise FieldError(
            "horizontal_accuracy: negative, the phone marked the position invalid",
            RejectCode.NO_FIX,
        )
    timestamp = properties.get("timestamp")
    if timestamp is None:
        raise FieldError("timestamp: missing")
    try:
        time = parse_time(timestamp)
    except TimeFormatError as exc:
        raise FieldError(f"timestamp: {exc}") from exc
    altitude = fields.optional_number(properties.get("altitude"), "altitude")
    if altitude is None and len(coordinates) > 2:
        altitude = fields.optional_number(coordinates[2], "geometry.coordinates[2]")
    vertical = fields.optional_number(properties.get("vertical_accuracy"), "vertical_accuracy")
    if vertical is not None and vertical < 0:
        altitude = None
    return Fix(
        device_id=0,
        time=time,
        lat=lat,
        lon=lon,
        speed=fields.unknown_if_negative(properties.get("speed"), "speed"),
        course=fields.course(properties.get("course"), "course"),
        accuracy=horizontal,
        altitude=altitude,
        attributes=_attributes(properties),
    )
