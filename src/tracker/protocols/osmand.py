"""The OsmAnd protocol as Traccar Client and OsmAnd speak it: query-string and JSON forms.

Served at ``/ingest/osmand`` and at ``/`` of the optional listener on port 5055 (Traccar's
port), so a phone configured for a Traccar server works unchanged. The rules follow
Traccar's ``OsmAndProtocolDecoder``; where this decoder differs it says so below.

Query-string form (any method, Content-Type not JSON). Parameters come from the URL; when
the URL has none, the body is read as a query string (form-encoded POST).

- ``id`` or ``deviceid``: the device's unique id, returned as `Decoded.device_key`. Without
  one the request is refused with 400. The protocol has no token: like Traccar, the device
  is authenticated only by being registered; an unknown id gets `unknown_device_status`.
- ``timestamp``: integer epoch seconds, or milliseconds from 2^31-1 up (Traccar's rule);
  text containing ``T`` is ISO-8601 and must carry a zone; anything else is
  ``yyyy-MM-dd HH:mm:ss``, which Traccar reads in the *server's* time zone and this
  decoder reads as UTC, so the result does not depend on where the server runs.
  Missing: the ``now`` the caller passes.
- ``lat``/``lon`` or ``location=lat,lon``: degrees. ``speed``: knots. ``bearing`` or
  ``heading``: degrees. ``altitude``, ``accuracy``: metres. A negative speed, course or
  accuracy means unknown (the JSON form's -1 rule, applied to both forms).
- ``valid``: true/1 by default; a fix the phone marks invalid keeps ``valid: false`` in
  its attributes for the filters to judge.
- ``hdop`` -> ``hdop``, ``batt`` -> ``batteryLevel`` (percent), ``charge`` -> ``charge``,
  ``driverUniqueId`` as is; ``cell=mcc,mnc,lac,cid[,rssi]`` and ``wifi=mac,rssi`` (MAC
  written with ``-``) -> ``network`` ``{"cellTowers": [...], "wifiAccessPoints": [...]}``
  with Traccar's field names; a malformed cell or wifi entry is dropped, not the fix.
  ``notificationToken`` is not stored (it is a push credential, not a measurement).
- Any other key becomes an attribute: a number if it reads as one, then true/false,
  else text (``ignition=true``, ``rpm=933`` -> 933.0). NaN and Infinity stay text.

JSON form (Content-Type ``application/json``), the newer Traccar Client:
``{"device_id": "...", "location": {...}}`` where ``location`` is the
flutter_background_geolocation location object (a list of them is accepted too).
``coords.speed`` is m/s here; ``timestamp`` is ISO-8601 (missing: ``now``).
``event``, ``is_moving`` -> ``motion``, ``odometer`` (m), ``mock``, ``activity.type`` ->
``activity``, ``battery.level`` (0..1) -> ``batteryLevel`` (percent, rounded where Traccar
truncates), ``battery.is_charging`` -> ``charge`` (only when true, as Traccar), ``alarm``
and every scalar in ``extras`` become attributes. Malformed JSON or a missing
``device_id`` is refused with 400.

Differences from Traccar, on purpose:

- No coordinates (or exactly 0,0): Traccar substitutes the device's last known position.
  A pure decoder has no state, so the point is rejected with a reason saying so; nothing
  is stored for it.
- JSON ``coords.accuracy`` is always stored; Traccar drops it below ``osmand.minAccuracy``
  (default 10 m). A delivery server wants the accuracy for geofence decisions.
- A value that is not a number where a number is required (time, coordinates, speed,
  course, accuracy, altitude) rejects that point with the field named; Traccar drops the
  whole request with an exception.

The reply on success is 200 with an empty body, which both client generations accept.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from tracker.core.model import Fix, JsonDict, Reject, RejectCode
from tracker.core.timeparse import TimeFormatError, from_epoch, from_iso, parse_time
from tracker.protocols import fields
from tracker.protocols.base import Decoded, ProtocolError, Reply, Request
from tracker.protocols.fields import FieldError

OK = Reply(status=200, content_type="text/plain", body=b"")

# Traccar answers an unknown device with 400 in the query form and 404 in the JSON form.
UNKNOWN_DEVICE_QUERY = 400
UNKNOWN_DEVICE_JSON = 404

_ID_KEYS = ("id", "deviceid")
_EPOCH = re.compile(r"[+-]?\d+(?:\.\d*)?")
_LOCAL_FORMAT = "%Y-%m-%d %H:%M:%S"
_NOT_ATTRIBUTES = frozenset(
    {
        *_ID_KEYS,
        "timestamp",
        "lat",
        "lon",
        "location",
        "speed",
        "bearing",
        "heading",
        "altitude",
        "accuracy",
        "valid",
        "cell",
        "wifi",
        "notificationToken",
    }
)
_RENAMED = {"batt": "batteryLevel"}


def is_json(request: Request) -> bool:
    """Whether the request uses the JSON form (Traccar checks the Content-Type only)."""
    content_type = fields.header(request.headers, "content-type").lower()
    return content_type.startswith("application/json")


def unknown_device_status(request: Request) -> int:
    """The status Traccar answers when the named device is not registered (400 or 404)."""
    return UNKNOWN_DEVICE_JSON if is_json(request) else UNKNOWN_DEVICE_QUERY


def decode(request: Request, now: datetime) -> Decoded:
    """Decode one OsmAnd request (either form); raises ProtocolError when it is unusable."""
    if is_json(request):
        return _decode_json(request, now)
    return _decode_query(request, now)


# --- query-string form -------------------------------------------------------------------


def _parameters(request: Request) -> list[tuple[str, str]]:
    if request.query:
        return list(request.query)
    text = request.body.decode("utf-8", errors="replace")
    return parse_qsl(text, keep_blank_values=True)


def _query_device(params: list[tuple[str, str]]) -> str:
    ids = {value.strip() for key, value in params if key in _ID_KEYS and value.strip()}
    if not ids:
        raise ProtocolError(400, "no device id: send id=<the device's unique id>")
    if len(ids) > 1:
        raise ProtocolError(400, "more than one device id in one request")
    return ids.pop()


def _decode_query(request: Request, now: datetime) -> Decoded:
    params = _parameters(request)
    decoded = Decoded(device_key=_query_device(params), reply=OK)
    try:
        decoded.fixes.append((0, _query_fix(params, now)))
    except FieldError as exc:
        decoded.rejects.append(Reject(0, str(exc), exc.code))
    return decoded


def _query_time(text: str, now: datetime) -> datetime:
    value = text.strip()
    if not value:
        return now
    try:
        if _EPOCH.fullmatch(value):
            return from_epoch(float(value))
        if "T" in value:
            return from_iso(value)
        # Traccar reads this in the server's zone; UTC keeps the answer machine-independent.
        return datetime.strptime(value, _LOCAL_FORMAT).replace(tzinfo=UTC)
    except (TimeFormatError, ValueError) as exc:
        raise FieldError(f"timestamp: {value[:40]!r} is not a time this server reads") from exc


def _cell(text: str) -> JsonDict | None:
    parts = text.split(",")
    if len(parts) not in (4, 5):
        return None
    try:
        numbers = [int(part) for part in parts]
    except ValueError:
        return None
    tower: JsonDict = {
        "mobileCountryCode": numbers[0],
        "mobileNetworkCode": numbers[1],
        "locationAreaCode": numbers[2],
        "cellId": numbers[3],
    }
    if len(numbers) == 5:
        tower["signalStrength"] = numbers[4]
    return tower


def _wifi(text: str) -> JsonDict | None:
    mac, _, rssi = text.partition(",")
    try:
        strength = int(rssi)
    except ValueError:
        return None
    if not mac:
        return None
    # The MAC travels with '-' because ':' would need escaping in a URL.
    return {"macAddress": mac.replace("-", ":"), "signalStrength": strength}


def _query_fix(params: list[tuple[str, str]], now: datetime) -> Fix:
    last: dict[str, str] = {}
    attributes: JsonDict = {}
    towers: list[JsonDict] = []
    access_points: list[JsonDict] = []
    for key, value in params:
        if key == "location":
            last["lat"], _, last["lon"] = value.partition(",")
        elif key in ("bearing", "heading"):
            last["course"] = value
        elif key == "cell":
            tower = _cell(value)
            if tower is not None:
                towers.append(tower)
        elif key == "wifi":
            access_point = _wifi(value)
            if access_point is not None:
                access_points.append(access_point)
        elif key == "charge":
            attributes["charge"] = value.strip().lower() == "true"
        elif key == "driverUniqueId":
            attributes["driverUniqueId"] = value
        elif key in _NOT_ATTRIBUTES:
            last[key] = value
        else:
            attributes[_RENAMED.get(key, key)] = fields.text_value(value)
    if "valid" in last and last["valid"].strip().lower() not in ("true", "1"):
        attributes["valid"] = False
    network: JsonDict = {}
    if towers:
        network["cellTowers"] = towers
    if access_points:
        network["wifiAccessPoints"] = access_points
    if network:
        attributes["network"] = network
    lat, lon = fields.position(last.get("lat"), last.get("lon"))
    speed_kn = fields.unknown_if_negative(last.get("speed"), "speed")
    return Fix(
        device_id=0,
        time=_query_time(last.get("timestamp", ""), now),
        lat=lat,
        lon=lon,
        speed=None if speed_kn is None else speed_kn * fields.KNOTS_TO_MPS,
        course=fields.course(last.get("course"), "bearing"),
        accuracy=fields.unknown_if_negative(last.get("accuracy"), "accuracy"),
        altitude=fields.optional_number(last.get("altitude"), "altitude"),
        attributes=attributes,
    )


# --- JSON form ---------------------------------------------------------------------------


def _decode_json(request: Request, now: datetime) -> Decoded:
    body = fields.json_object(request.body)
    device = body.get("device_id")
    if isinstance(device, bool) or not isinstance(device, str | int) or not str(device).strip():
        raise ProtocolError(400, "device_id: missing; send the device's unique id")
    location = body.get("location")
    if location is None:
        raise ProtocolError(400, "location: missing")
    items = location if isinstance(location, list) else [location]
    decoded = Decoded(device_key=str(device).strip(), reply=OK)
    for index, item in enumerate(items):
        try:
            decoded.fixes.append((index, _json_fix(item, now)))
        except FieldError as exc:
            decoded.rejects.append(Reject(index, str(exc), exc.code))
    return decoded


def _json_time(value: object, now: datetime) -> datetime:
    if value is None or value == "":
        return now
    try:
        return parse_time(value)
    except TimeFormatError as exc:
        raise FieldError(f"timestamp: {exc}") from exc


def _json_attributes(location: dict[str, Any]) -> JsonDict:
    attributes: JsonDict = {}
    event = location.get("event")
    if isinstance(event, str) and event:
        attributes["event"] = event
    if isinstance(location.get("is_moving"), bool):
        attributes["motion"] = location["is_moving"]
    odometer = location.get("odometer")
    if isinstance(odometer, int | float) and not isinstance(odometer, bool):
        kept = fields.json_value(odometer)
        if kept is not None:
            attributes["odometer"] = kept
    if isinstance(location.get("mock"), bool):
        attributes["mock"] = location["mock"]
    activity = location.get("activity")
    if isinstance(activity, dict) and isinstance(activity.get("type"), str) and activity["type"]:
        attributes["activity"] = activity["type"]
    battery = location.get("battery")
    if isinstance(battery, dict):
        level = battery.get("level")
        if isinstance(level, int | float) and not isinstance(level, bool) and 0 <= level <= 1:
            attributes["batteryLevel"] = round(level * 100)
        if battery.get("is_charging") is True:
            attributes["charge"] = True
    alarm = location.get("alarm")
    if isinstance(alarm, str) and alarm:
        attributes["alarm"] = alarm
    extras = location.get("extras")
    if isinstance(extras, dict):
        for key, value in extras.items():
            # Traccar keeps scalars only: objects, arrays and null are skipped.
            kept = None if isinstance(value, list) else fields.json_value(value)
            if kept is not None:
                attributes[key] = kept
    return attributes


def _json_fix(location: object, now: datetime) -> Fix:
    if not isinstance(location, dict):
        raise FieldError("location: must be an object")
    coords = location.get("coords")
    if coords is None:
        raise FieldError(
            "no coords: Traccar would reuse the last known position; not stored", RejectCode.NO_FIX
        )
    if not isinstance(coords, dict):
        raise FieldError("coords: must be an object")
    lat, lon = fields.position(
        coords.get("latitude"), coords.get("longitude"), ("latitude", "longitude")
    )
    return Fix(
        device_id=0,
        time=_json_time(location.get("timestamp"), now),
        lat=lat,
        lon=lon,
        speed=fields.unknown_if_negative(coords.get("speed"), "speed"),
        course=fields.course(coords.get("heading"), "heading"),
        accuracy=fields.unknown_if_negative(coords.get("accuracy"), "accuracy"),
        altitude=fields.optional_number(coords.get("altitude"), "altitude"),
        attributes=_json_attributes(location),
    )
