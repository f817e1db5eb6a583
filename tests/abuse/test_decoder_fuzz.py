"""Every decoder of untrusted input, fed by hypothesis: arbitrary bytes, query pairs and
headers, and JSON shaped like each app's real payload but with wrong types, huge and
non-finite numbers, numeric-looking text and nested junk in every field.

A decoder may only return a `Decoded` whose fixes are storable (aware times, finite
numbers in range where the protocol promises it, attributes that encode as JSON) or raise
its `ProtocolError` with a status the endpoint can answer; any other exception would be a
500. Each example must finish within DEADLINE (hypothesis re-runs a slow one to rule out
a hiccup), and values far longer than hypothesis makes are decoded in a child process
that must finish: a pattern that backtracks on a long value would hang it.
"""

from __future__ import annotations

import base64
import json
import math
import subprocess
import sys
import textwrap
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tracker.core import timeparse
from tracker.core.model import Fix, RejectCode
from tracker.protocols import native, osmand, overland, owntracks
from tracker.protocols.base import Decoded, ProtocolError, Reply, Request

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
DEADLINE = timedelta(seconds=2)
EXAMPLES = 400
# What the HTTP layer may answer for a request the decoder refuses as a whole.
PROTOCOL_STATUSES = {400, 401, 403, 413}
REJECT_CODES = {v for k, v in vars(RejectCode).items() if k.isupper() and isinstance(v, str)}

fuzz = settings(
    max_examples=EXAMPLES,
    deadline=DEADLINE,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# -- values ----------------------------------------------------------------------------------

NUMERIC_TEXT = ["", " ", "0", "-0", "1e999", "-1e999", "NaN", "nan", "Infinity", "-Infinity"]
NUMERIC_TEXT += ["inf", "0x10", "1_000", " 12 ", "+.5", "5.", ".", "-", "e5", "1e", "１２"]
NUMERIC_TEXT += ["1e-999", "1" * 400]
TIME_TEXT = ["2026-11-25T08:00:00Z", "2026-11-25T08:00:00", "2026-11-25 08:00:00", "T", "Z"]
TIME_TEXT += ["2026-13-45T99:99:99Z", "0000-00-00T00:00:00Z", "9999-12-31T23:59:59-23:59"]
TIME_TEXT += ["0001-01-01T00:00:00+01:00", "1764057600", "1764057600000", "-1", "1.5e12"]
TIME_TEXT += ["99999999999999999999"]

numeric_text = st.one_of(
    st.sampled_from(NUMERIC_TEXT),
    st.from_regex(r"\s?[+-]?\d{0,12}(\.\d{0,8})?([eE][+-]?\d{1,4})?\s?", fullmatch=True),
    st.floats().map(repr),
)
time_text = st.one_of(
    st.sampled_from(TIME_TEXT),
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    numeric_text,
)
junk = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
latitudes = st.one_of(st.floats(min_value=-91, max_value=91), junk)
longitudes = st.one_of(st.floats(min_value=-181, max_value=181), junk)
numbers = st.one_of(st.floats(min_value=-1e6, max_value=1e6), st.integers(-(2**65), 2**65), junk)
times = st.one_of(
    time_text, st.integers(-(2**64), 2**64), st.floats(allow_nan=True, allow_infinity=True), junk
)


def shaped(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """Objects with any subset of the real fields (each possibly wrong) plus junk keys."""
    return st.builds(
        lambda known, extra: {**extra, **known},
        st.fixed_dictionaries({}, optional=fields),
        st.dictionaries(st.text(max_size=10), junk, max_size=3),
    )


def encoded(value: Any) -> bytes:
    """JSON as a careless client writes it: NaN and Infinity literals included."""
    return json.dumps(value, allow_nan=True).encode()


def json_bodies(shape: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    return st.one_of(
        shape.map(encoded),
        junk.map(encoded),
        st.binary(max_size=300),
        shape.map(encoded).map(lambda b: b[: len(b) // 2]),  # cut off mid-way
    )


headers_junk = st.dictionaries(
    st.sampled_from(["content-type", "authorization", "x-limit-u", "x-limit-d"])
    | st.text(max_size=10),
    st.text(max_size=40),
    max_size=4,
)
query_pairs = st.lists(st.tuples(st.text(max_size=12), st.text(max_size=30)), max_size=6)

# -- invariants ------------------------------------------------------------------------------


def finite_or_none(value: float | None) -> bool:
    return value is None or (type(value) is float and math.isfinite(value))


def check_fix(fix: Fix, phone: bool) -> None:
    assert isinstance(fix, Fix)
    assert isinstance(fix.time, datetime) and fix.time.tzinfo is not None
    assert type(fix.lat) is float and type(fix.lon) is float
    for value in (fix.speed, fix.course, fix.accuracy, fix.altitude):
        assert value is None or type(value) is float
    assert isinstance(fix.attributes, dict)
    orjson.dumps(fix.attributes)  # storable as jsonb
    if phone:
        # The phone protocols check ranges themselves (the native one leaves it to filters).
        assert -90.0 <= fix.lat <= 90.0 and -180.0 <= fix.lon <= 180.0
        assert (fix.lat, fix.lon) != (0.0, 0.0)
        for value in (fix.speed, fix.course, fix.accuracy, fix.altitude):
            assert finite_or_none(value)
        assert fix.speed is None or fix.speed >= 0.0
        assert fix.accuracy is None or fix.accuracy >= 0.0
        assert fix.course is None or 0.0 <= fix.course < 360.0


def check(decode: Callable[[], Decoded], phone: bool) -> Decoded | ProtocolError:
    """Run a decoder: a well-formed Decoded, or its ProtocolError; nothing else."""
    try:
        decoded = decode()
    except ProtocolError as exc:
        assert exc.status in PROTOCOL_STATUSES
        assert isinstance(exc.message, str) and exc.message
        return exc
    assert isinstance(decoded, Decoded)
    assert isinstance(decoded.reply, Reply)
    assert decoded.device_key is None or isinstance(decoded.device_key, str)
    if phone and decoded.device_key is not None:
        assert decoded.device_key.strip()  # the apps' identity: never blank
    indices = [index for index, _ in decoded.fixes] + [r.index for r in decoded.rejects]
    assert len(indices) == len(set(indices)) and all(i >= 0 for i in indices)
    for _, fix in decoded.fixes:
        check_fix(fix, phone)
    for reject in decoded.rejects:
        assert isinstance(reject.reason, str) and reject.reason
        assert reject.code in REJECT_CODES
    return decoded


# -- native ----------------------------------------------------------------------------------

native_ping = shaped(
    {
        "time": times,
        "lat": latitudes,
        "lon": longitudes,
        "speed": numbers,
        "course": numbers,
        "accuracy": numbers,
        "altitude": numbers,
        "attributes": junk,
        "device_id": st.one_of(st.sampled_from(["van-7", "van-8"]), junk),
    }
)
native_body = st.one_of(
    native_ping,
    st.builds(
        lambda pings, top: {"positions": pings, **top},
        st.lists(st.one_of(native_ping, junk), max_size=6),
        st.fixed_dictionaries({}, optional={"device_id": junk}),
    ),
)


@fuzz
@given(body=json_bodies(native_body), max_batch=st.integers(1, 10))
def test_native(body: bytes, max_batch: int) -> None:
    result = check(lambda: native.decode(Request("POST", body=body), NOW, max_batch, 7), False)
    if isinstance(result, Decoded):
        assert all(fix.device_id == 7 for _, fix in result.fixes)


# -- OsmAnd ----------------------------------------------------------------------------------

OSMAND_KEYS = ["id", "deviceid", "timestamp", "lat", "lon", "location", "speed", "bearing"]
OSMAND_KEYS += ["heading", "altitude", "accuracy", "valid", "hdop", "batt", "charge", "cell"]
OSMAND_KEYS += ["wifi", "driverUniqueId", "notificationToken", "ignition"]
osmand_pairs = st.lists(
    st.tuples(
        st.one_of(st.sampled_from(OSMAND_KEYS), st.text(max_size=8)),
        st.one_of(numeric_text, time_text, st.text(max_size=30), st.just("van-7")),
    ),
    max_size=10,
)
coords = shaped(
    {
        "latitude": latitudes,
        "longitude": longitudes,
        "speed": numbers,
        "heading": numbers,
        "accuracy": numbers,
        "altitude": numbers,
    }
)
osmand_location = shaped(
    {
        "timestamp": times,
        "coords": st.one_of(coords, junk),
        "is_moving": junk,
        "odometer": numbers,
        "event": junk,
        "mock": junk,
        "activity": st.one_of(shaped({"type": junk}), junk),
        "battery": st.one_of(shaped({"level": numbers, "is_charging": junk}), junk),
        "extras": junk,
        "alarm": junk,
    }
)
osmand_json = shaped(
    {
        "device_id": st.one_of(st.just("van-7"), junk),
        "location": st.one_of(osmand_location, st.lists(osmand_location, max_size=3), junk),
    }
)


@fuzz
@given(pairs=osmand_pairs, in_body=st.booleans(), method=st.sampled_from(["GET", "POST"]))
def test_osmand_query_and_form(pairs: list[tuple[str, str]], in_body: bool, method: str) -> None:
    if in_body:
        request = Request(method, body=urlencode(pairs).encode())
    else:
        request = Request(method, query=tuple(pairs))
    check(lambda: osmand.decode(request, NOW), True)
    assert osmand.unknown_device_status(request) == 400


@fuzz
@given(body=json_bodies(osmand_json), query=query_pairs)
def test_osmand_json(body: bytes, query: list[tuple[str, str]]) -> None:
    request = Request("POST", tuple(query), {"content-type": "application/json"}, body)
    check(lambda: osmand.decode(request, NOW), True)
    assert osmand.unknown_device_status(request) == 404


@fuzz
@given(
    method=st.text(max_size=8),
    query=query_pairs,
    headers=headers_junk,
    body=st.binary(max_size=300),
)
def test_osmand_anything(
    method: str, query: list[tuple[str, str]], headers: dict[str, str], body: bytes
) -> None:
    request = Request(method, tuple(query), headers, body)
    check(lambda: osmand.decode(request, NOW), True)


# -- OwnTracks -------------------------------------------------------------------------------

owntracks_message = shaped(
    {
        "_type": st.one_of(st.sampled_from(["location", "transition", "encrypted", "lwt"]), junk),
        "lat": latitudes,
        "lon": longitudes,
        "tst": times,
        "vel": numbers,
        "cog": numbers,
        "acc": numbers,
        "alt": numbers,
        "batt": numbers,
        "bs": numbers,
        "t": junk,
        "ign": junk,
        "odometer": numbers,
        "uext": numbers,
        "ubatt": numbers,
        "tid": junk,
        "topic": junk,
        "created_at": times,
    }
)
basic_header = st.one_of(
    st.tuples(st.text(max_size=12), st.text(max_size=12)).map(
        lambda up: "Basic " + base64.b64encode(f"{up[0]}:{up[1]}".encode()).decode()
    ),
    st.binary(max_size=20).map(lambda raw: "Basic " + base64.b64encode(raw).decode()),
    st.text(max_size=30).map(lambda text: "Basic " + text),
    st.text(max_size=30),
)
owntracks_headers = st.fixed_dictionaries(
    {}, optional={"authorization": basic_header, "x-limit-u": st.text(max_size=12)}
)


@fuzz
@given(
    body=st.one_of(json_bodies(owntracks_message), st.just(b""), st.just(b" \n")),
    headers=owntracks_headers,
    query=st.lists(st.tuples(st.sampled_from(["u", "d"]), st.text(max_size=10)), max_size=3),
)
def test_owntracks(body: bytes, headers: dict[str, str], query: list[tuple[str, str]]) -> None:
    request = Request("POST", tuple(query), headers, body)
    # The endpoint reads the credentials and the device before decoding.
    for read in (owntracks.credentials, owntracks.device_key):
        try:
            read(request)
        except ProtocolError as exc:
            assert exc.status == 401
    check(lambda: owntracks.decode(request, NOW), True)


# -- Overland --------------------------------------------------------------------------------

overland_properties = shaped(
    {
        "timestamp": times,
        "speed": numbers,
        "course": numbers,
        "altitude": numbers,
        "horizontal_accuracy": numbers,
        "vertical_accuracy": numbers,
        "speed_accuracy": numbers,
        "course_accuracy": numbers,
        "motion": st.one_of(st.lists(st.text(max_size=10), max_size=3), junk),
        "battery_state": st.one_of(st.sampled_from(["charging", "full", "unplugged"]), junk),
        "battery_level": numbers,
        "wifi": junk,
        "device_id": junk,
        "trip_id": junk,
        "action": junk,
        "type": junk,
    }
)
overland_feature = shaped(
    {
        "type": st.one_of(st.just("Feature"), junk),
        "geometry": st.one_of(
            shaped(
                {
                    "type": st.one_of(st.just("Point"), junk),
                    "coordinates": st.one_of(
                        st.lists(st.one_of(longitudes, latitudes, numbers), max_size=4), junk
                    ),
                }
            ),
            junk,
        ),
        "properties": st.one_of(overland_properties, junk),
    }
)
overland_batch = shaped(
    {
        "locations": st.one_of(st.lists(st.one_of(overland_feature, junk), max_size=5), junk),
        "current": st.one_of(overland_feature, junk),
        "trip": junk,
    }
)


@fuzz
@given(body=json_bodies(overland_batch))
def test_overland(body: bytes) -> None:
    check(lambda: overland.decode(Request("POST", body=body), NOW), True)


def test_overland_error_reply_is_json_for_any_message() -> None:
    @fuzz
    @given(message=st.text(), status=st.integers(400, 599))
    def run(message: str, status: int) -> None:
        reply = overland.error_reply(message, status)
        assert orjson.loads(reply.body) == {"error": message} and reply.status == status

    run()


# -- times -----------------------------------------------------------------------------------


@fuzz
@given(value=st.one_of(times, junk))
def test_parse_time(value: object) -> None:
    try:
        parsed = timeparse.parse_time(value)
    except timeparse.TimeFormatError as exc:
        assert str(exc)
        return
    assert parsed.tzinfo is not None and parsed.utcoffset() == timedelta(0)


@fuzz
@given(text=st.one_of(time_text, st.text(max_size=40)))
def test_from_iso(text: str) -> None:
    try:
        parsed = timeparse.from_iso(text)
    except timeparse.TimeFormatError:
        return
    assert parsed.utcoffset() == timedelta(0)


# -- long values -----------------------------------------------------------------------------

# Run in a child: a regular expression that backtracks holds the GIL inside the regex
# engine, so only a process boundary can stop it. Linear decoders need milliseconds here.
LONG_VALUES = textwrap.dedent(
    """
    import base64, json, sys
    from datetime import UTC, datetime
    from urllib.parse import urlencode
    from tracker.core import timeparse
    from tracker.protocols import native, osmand, overland, owntracks
    from tracker.protocols.base import ProtocolError, Request

    def attempt(decode, *args):
        try:
            decode(*args)
        except (ProtocolError, timeparse.TimeFormatError):
            pass

    now = datetime.now(UTC)
    n = int(sys.argv[1])
    values = ["1" * n + "x", "1" * n + ".", "." + "1" * n + "x", "1e" + "1" * n + "x",
              " " * n + "1" + " " * n + "x", "-" * n, "1" * n, "9" * n + "e" + "9" * n,
              "2026-11-25T" + "0" * n, "T" * n, "%" * n]
    keys = ["id", "lat", "lon", "timestamp", "speed", "cell", "wifi", "location", "other"]
    for value in values:
        query = tuple((k, value) for k in keys)
        attempt(osmand.decode, Request("GET", query=query), now)
        attempt(osmand.decode, Request("POST", body=urlencode(query).encode()), now)
        location = {"timestamp": value, "coords": {"latitude": value, "longitude": value}}
        body = json.dumps({"device_id": value, "location": location}).encode()
        json_form = Request("POST", headers={"content-type": "application/json"}, body=body)
        attempt(osmand.decode, json_form, now)
        ping = {"time": value, "lat": value, "lon": value, "attributes": {"k": value}}
        attempt(native.decode, Request("POST", body=json.dumps(ping).encode()), now)
        message = {"_type": "location", "lat": value, "lon": value, "tst": value, "vel": value}
        basic = "Basic " + base64.b64encode(("u:" + value).encode()).decode()
        body = json.dumps(message).encode()
        attempt(owntracks.decode, Request("POST", headers={"authorization": basic}, body=body), now)
        feature = {"geometry": {"type": "Point", "coordinates": [value, value]},
                   "properties": {"timestamp": value, "speed": value}}
        body = json.dumps({"locations": [feature]}).encode()
        attempt(overland.decode, Request("POST", body=body), now)
        attempt(timeparse.parse_time, value)
        attempt(timeparse.from_iso, value)
    print("decoded", len(values))
    """
)


def test_long_values_do_not_hang_a_decoder() -> None:
    done = subprocess.run(
        [sys.executable, "-c", LONG_VALUES, "300000"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "decoded 11"
