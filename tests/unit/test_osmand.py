"""OsmAnd / Traccar Client decoder: every real request from Traccar's test, then edge cases.

The real requests and the values Traccar's rules give for them are in tests/data/clients/
(see ATTRIBUTION.md there). Speeds in the expected file are knots; the decoder stores m/s.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from tests.osmand_vectors import osmand_vectors
from tracker.core.model import Fix
from tracker.protocols import osmand
from tracker.protocols.base import Decoded, ProtocolError, Reply, Request

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
KNOT = 0.514444  # m/s
JSON_HEADERS = {"content-type": "application/json"}


def _load() -> list[tuple[int, Request, dict[str, Any]]]:
    cases = []
    for v in osmand_vectors():
        if v.is_json:
            request = Request(
                v.method, headers={"content-type": v.content_type}, body=v.line.encode()
            )
        else:
            query = tuple(parse_qsl(urlsplit(v.line).query, keep_blank_values=True))
            request = Request(v.method, query=query)
        cases.append((v.number, request, v.expected))
    return cases


CASES = _load()


def _query(text: str, method: str = "GET") -> Request:
    return Request(method, query=tuple(parse_qsl(text, keep_blank_values=True)))


def _only_fix(decoded: Decoded) -> Fix:
    assert decoded.rejects == []
    [(index, fix)] = decoded.fixes
    assert index == 0
    return fix


def _expected_time(exp: dict[str, Any]) -> datetime:
    if "fix_time_local_server_tz" in exp:
        # Traccar reads "yyyy-MM-dd HH:mm:ss" in the server's zone; this server reads UTC.
        naive = datetime.strptime(exp["fix_time_local_server_tz"], "%Y-%m-%d %H:%M:%S")
        return naive.replace(tzinfo=UTC)
    if exp["fix_time_utc"].startswith("server receive time"):
        return NOW
    return datetime.fromisoformat(exp["fix_time_utc"])


@pytest.mark.parametrize(("number", "request_", "exp"), CASES, ids=[f"line{c[0]}" for c in CASES])
def test_every_real_request_matches_traccars_rules(
    number: int, request_: Request, exp: dict[str, Any]
) -> None:
    if "HTTP 400" in exp.get("result", ""):
        with pytest.raises(ProtocolError) as refused:
            osmand.decode(request_, NOW)
        assert refused.value.status == 400
        return
    decoded = osmand.decode(request_, NOW)
    assert decoded.device_key == exp["device_unique_id"]
    assert decoded.reply == Reply(200, "text/plain", b"")
    if "position_note" in exp:
        # Traccar would copy the last known location; a stateless decoder stores nothing.
        assert decoded.fixes == []
        [reject] = decoded.rejects
        assert reject.index == 0 and "no coordinates" in reject.reason
        return
    fix = _only_fix(decoded)
    assert fix.device_id == 0
    assert fix.time == _expected_time(exp)
    assert fix.lat == pytest.approx(exp["lat"], abs=1e-9)
    assert fix.lon == pytest.approx(exp["lon"], abs=1e-9)
    knots = exp.get("speed_knots")
    if knots is None:
        assert fix.speed is None
    else:
        assert fix.speed == pytest.approx(knots * KNOT, rel=1e-5, abs=1e-9)
    assert fix.course == exp.get("course_deg")
    assert fix.altitude == exp.get("altitude_m")
    assert fix.attributes == exp["attributes"]
    assert "valid" not in fix.attributes  # every line is valid; only invalid is recorded
    if request_.headers:
        # Deliberate difference: Traccar drops JSON accuracy below osmand.minAccuracy (10 m,
        # so the expected file says null); a delivery server keeps it for geofence decisions.
        assert exp["accuracy_m"] is None
        sent = json.loads(request_.body)["location"]["coords"]["accuracy"]
        assert fix.accuracy == sent
    else:
        assert fix.accuracy is None


def test_json_speed_is_metres_per_second_and_minus_one_is_unknown() -> None:
    by_line = {number: (request, exp) for number, request, exp in CASES}
    moving = _only_fix(osmand.decode(by_line[4][0], NOW))
    assert moving.speed == 18.67  # coords.speed, already m/s: no conversion
    assert moving.course == 63
    unknown = _only_fix(osmand.decode(by_line[3][0], NOW))
    assert unknown.speed is None and unknown.course is None  # speed -1, heading -1


def test_extras_keep_their_json_types() -> None:
    by_line = {number: request for number, request, _ in CASES}
    attributes = _only_fix(osmand.decode(by_line[2], NOW)).attributes
    assert attributes["device_integer_twelve_test"] == 12
    assert type(attributes["device_integer_twelve_test"]) is int  # Traccar: a long
    assert attributes["device_bool_false_test"] is False
    assert type(attributes["device_double_test"]) is float


def test_cell_towers_and_wifi_follow_traccars_network_model() -> None:
    line5 = next(request for number, request, _ in CASES if number == 5)
    request = Request("GET", query=(*line5.query, ("lat", "52.1"), ("lon", "4.3")))
    fix = _only_fix(osmand.decode(request, NOW))
    assert fix.attributes["network"] == {
        "cellTowers": [
            {
                "mobileCountryCode": 257,
                "mobileNetworkCode": 2,
                "locationAreaCode": 16,
                "cellId": 2224,
            },
            {
                "mobileCountryCode": 257,
                "mobileNetworkCode": 2,
                "locationAreaCode": 16,
                "cellId": 2223,
                "signalStrength": -90,
            },
        ],
        # Only the MAC's '-' become ':'; the signal is the integer -80 (the expected file's
        # ":80" comes from replacing every '-', which Traccar's code does not do).
        "wifiAccessPoints": [
            {"macAddress": "00:14:22:01:23:45", "signalStrength": -80},
            {"macAddress": "00:1C:B3:09:85:15", "signalStrength": -70},
        ],
    }
    assert "cell" not in fix.attributes and "wifi" not in fix.attributes


def test_malformed_cell_or_wifi_is_dropped_not_the_fix() -> None:
    fix = _only_fix(osmand.decode(_query("id=1&lat=1.5&lon=2.5&cell=1,2&wifi=aa-bb,strong"), NOW))
    assert (fix.lat, fix.lon) == (1.5, 2.5)
    assert "network" not in fix.attributes


def test_form_encoded_body_is_read_when_the_url_has_no_parameters() -> None:
    request = Request(
        "POST",
        headers={"content-type": "application/x-www-form-urlencoded"},
        body=b"id=353861053849681&lat=49.60688&lon=6.15788&timestamp=2014-06-04+09%3A10%3A11&speed=10",
    )
    decoded = osmand.decode(request, NOW)
    assert decoded.device_key == "353861053849681"
    fix = _only_fix(decoded)
    assert fix.time == datetime(2014, 6, 4, 9, 10, 11, tzinfo=UTC)
    assert fix.speed == pytest.approx(10 * KNOT)


def test_url_parameters_win_over_the_body() -> None:
    request = Request(
        "POST", query=(("id", "7"), ("lat", "1"), ("lon", "2")), body=b"id=8&lat=3&lon=4"
    )
    decoded = osmand.decode(request, NOW)
    assert decoded.device_key == "7"
    assert (_only_fix(decoded).lat, _only_fix(decoded).lon) == (1.0, 2.0)


@pytest.mark.parametrize("query", ["lat=1&lon=2", "id=&lat=1&lon=2", "id=%20&deviceid="])
def test_missing_id_is_refused_with_400(query: str) -> None:
    with pytest.raises(ProtocolError) as refused:
        osmand.decode(_query(query), NOW)
    assert refused.value.status == 400
    assert "id" in refused.value.message


def test_two_different_ids_are_refused_but_id_and_deviceid_may_agree() -> None:
    with pytest.raises(ProtocolError):
        osmand.decode(_query("id=1&deviceid=2&lat=1&lon=2"), NOW)
    assert osmand.decode(_query("id=1&deviceid=1&lat=1&lon=2"), NOW).device_key == "1"


def test_unknown_device_status_is_400_for_query_and_404_for_json() -> None:
    assert osmand.unknown_device_status(_query("id=1")) == 400
    assert osmand.unknown_device_status(Request("POST", headers=JSON_HEADERS)) == 404
    charset = Request("POST", headers={"content-type": "Application/JSON; charset=utf-8"})
    assert osmand.unknown_device_status(charset) == 404


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("lat=abc&lon=2", "lat"),
        ("lat=NaN&lon=2", "lat"),
        ("lat=1&lon=Infinity", "lon"),
        ("lat=1&lon=1_0", "lon"),
        ("lat=91&lon=2", "lat"),
        ("lat=1&lon=-180.5", "lon"),
        ("lat=1&lon=2&speed=fast", "speed"),
        ("lat=1&lon=2&speed=NaN", "speed"),
        ("lat=1&lon=2&bearing=north", "bearing"),
        ("lat=1&lon=2&altitude=1e999", "altitude"),
        ("lat=1&lon=2&accuracy=", None),
        ("lat=1&lon=2&timestamp=yesterday", "timestamp"),
        ("lat=1&lon=2&timestamp=2016-01-27T18%3A55%3A47", "timestamp"),  # ISO without zone
        ("location=60.0&timestamp=1", "no coordinates"),
        ("lat=0&lon=0", "0,0"),
        ("lat=0.0&lon=0.0&timestamp=1377177267", "0,0"),
    ],
)
def test_bad_values_reject_the_point_and_name_the_field(query: str, field: str | None) -> None:
    decoded = osmand.decode(_query("id=5&" + query), NOW)
    assert decoded.device_key == "5"
    if field is None:  # an empty optional value is simply unknown
        assert _only_fix(decoded).accuracy is None
        return
    assert decoded.fixes == []
    [reject] = decoded.rejects
    assert reject.index == 0 and field in reject.reason


def test_nan_in_an_extra_key_stays_text() -> None:
    fix = _only_fix(osmand.decode(_query("id=1&lat=1&lon=2&temp=NaN&fuel=12.5&door=false"), NOW))
    assert fix.attributes == {"temp": "NaN", "fuel": 12.5, "door": False}


def test_negative_speed_course_accuracy_mean_unknown_and_course_wraps() -> None:
    fix = _only_fix(osmand.decode(_query("id=1&lat=1&lon=2&speed=-1&bearing=-1&accuracy=-1"), NOW))
    assert (fix.speed, fix.course, fix.accuracy) == (None, None, None)
    wrapped = _only_fix(osmand.decode(_query("id=1&lat=1&lon=2&heading=370&accuracy=12.5"), NOW))
    assert wrapped.course == pytest.approx(10.0)
    assert wrapped.accuracy == 12.5


@pytest.mark.parametrize(
    ("timestamp", "expected"),
    [
        ("1377177267", datetime(2013, 8, 22, 13, 14, 27, tzinfo=UTC)),
        ("2147483646", datetime(2038, 1, 19, 3, 14, 6, tzinfo=UTC)),  # still seconds
        ("2147483647", datetime(1970, 1, 25, 20, 31, 23, 647000, tzinfo=UTC)),  # milliseconds
        ("1442068686579", datetime(2015, 9, 12, 14, 38, 6, 579000, tzinfo=UTC)),
        ("2016-01-27T18:55:47Z", datetime(2016, 1, 27, 18, 55, 47, tzinfo=UTC)),
        ("2016-01-27T20:55:47+02:00", datetime(2016, 1, 27, 18, 55, 47, tzinfo=UTC)),
        ("2014-06-04 09:10:11", datetime(2014, 6, 4, 9, 10, 11, tzinfo=UTC)),  # read as UTC
        ("", NOW),
    ],
)
def test_timestamp_formats(timestamp: str, expected: datetime) -> None:
    request = Request(
        "GET", query=(("id", "1"), ("lat", "1"), ("lon", "2"), ("timestamp", timestamp))
    )
    assert _only_fix(osmand.decode(request, NOW)).time == expected


def test_missing_timestamp_is_the_now_passed_in() -> None:
    other_now = datetime(2030, 5, 6, 7, 8, 9, tzinfo=UTC)
    assert _only_fix(osmand.decode(_query("id=1&lat=1&lon=2"), other_now)).time == other_now


def test_named_parameters_and_validity() -> None:
    query = (
        "id=1&lat=1&lon=2&valid=false&charge=TRUE&batt=55&hdop=1.2"
        "&driverUniqueId=0042&notificationToken=secret-push-token&mock=true"
    )
    fix = _only_fix(osmand.decode(_query(query), NOW))
    assert fix.attributes == {
        "valid": False,
        "charge": True,
        "batteryLevel": 55.0,
        "hdop": 1.2,
        "driverUniqueId": "0042",  # an id stays text even when it looks like a number
        "mock": True,
    }
    valid = _only_fix(osmand.decode(_query("id=1&lat=1&lon=2&valid=1"), NOW))
    assert "valid" not in valid.attributes


def test_last_value_of_a_repeated_key_wins_like_traccar() -> None:
    fix = _only_fix(osmand.decode(_query("id=1&lat=1&lon=2&location=3,4&speed=1&speed=2"), NOW))
    assert (fix.lat, fix.lon) == (3.0, 4.0)
    assert fix.speed == pytest.approx(2 * KNOT)


# --- JSON form ---------------------------------------------------------------------------


def _json(body: object) -> Request:
    return Request("POST", headers=JSON_HEADERS, body=json.dumps(body).encode())


def _location(**overrides: Any) -> dict[str, Any]:
    location: dict[str, Any] = {
        "timestamp": "2025-06-15T13:45:12.862Z",
        "coords": {"latitude": 52.0, "longitude": 4.0, "speed": 3.5, "heading": 90, "accuracy": 4},
    }
    location.update(overrides)
    return location


@pytest.mark.parametrize("body", [b"", b"{", b"not json", b'{"device_id": "1", "location": NaN}'])
def test_malformed_json_is_refused_with_400(body: bytes) -> None:
    with pytest.raises(ProtocolError) as refused:
        osmand.decode(Request("POST", headers=JSON_HEADERS, body=body), NOW)
    assert refused.value.status == 400


@pytest.mark.parametrize(
    "body",
    [
        [1, 2],
        {"location": {}},
        {"device_id": "", "location": {}},
        {"device_id": True, "location": {}},
        {"device_id": {"id": 1}, "location": {}},
        {"device_id": "1"},
    ],
)
def test_json_without_device_or_location_is_refused_with_400(body: object) -> None:
    with pytest.raises(ProtocolError) as refused:
        osmand.decode(_json(body), NOW)
    assert refused.value.status == 400


def test_json_without_coords_is_rejected_with_the_reason() -> None:
    location = _location()
    del location["coords"]
    decoded = osmand.decode(_json({"device_id": "9", "location": location}), NOW)
    assert decoded.device_key == "9" and decoded.fixes == []
    [reject] = decoded.rejects
    assert "no coords" in reject.reason and "last known" in reject.reason


def test_json_numeric_device_id_and_missing_timestamp() -> None:
    location = _location()
    del location["timestamp"]
    decoded = osmand.decode(_json({"device_id": 48241179, "location": location}), NOW)
    assert decoded.device_key == "48241179"
    fix = _only_fix(decoded)
    assert fix.time == NOW
    assert (fix.speed, fix.course, fix.accuracy) == (3.5, 90.0, 4.0)


def test_json_list_of_locations_keeps_indices_and_rejects_one() -> None:
    bad = _location(coords={"latitude": "north", "longitude": 4.0})
    body = {
        "device_id": "9",
        "location": [_location(), bad, _location(timestamp="2025-06-15T13:46:00Z")],
    }
    decoded = osmand.decode(_json(body), NOW)
    assert [index for index, _ in decoded.fixes] == [0, 2]
    [reject] = decoded.rejects
    assert reject.index == 1 and "latitude" in reject.reason


def test_json_numbers_written_as_text_are_read_but_nan_text_is_not() -> None:
    text = _location(coords={"latitude": "52.5", "longitude": "4.25", "speed": "2"})
    assert _only_fix(osmand.decode(_json({"device_id": "9", "location": text}), NOW)).lat == 52.5
    nan = _location(coords={"latitude": 52.5, "longitude": 4.25, "speed": "NaN"})
    decoded = osmand.decode(_json({"device_id": "9", "location": nan}), NOW)
    assert decoded.fixes == [] and "speed" in decoded.rejects[0].reason


def test_json_attributes_battery_extras_and_alarm() -> None:
    location = _location(
        battery={"level": 0.29, "is_charging": True},
        alarm="sos",
        event="",
        extras={"nested": {"a": 1}, "listed": [1], "nothing": None, "code": "X1", "temp": 21.5},
    )
    fix = _only_fix(osmand.decode(_json({"device_id": "9", "location": location}), NOW))
    # 0.29 * 100 is 28.999...; Traccar's (int) cast truncates to 28, the percent is 29.
    assert fix.attributes == {
        "batteryLevel": 29,
        "charge": True,
        "alarm": "sos",
        "code": "X1",
        "temp": 21.5,
    }


def test_json_form_ignores_the_query_string() -> None:
    request = Request(
        "POST",
        query=(("id", "other"),),
        headers=JSON_HEADERS,
        body=json.dumps({"device_id": "9", "location": _location()}).encode(),
    )
    assert osmand.decode(request, NOW).device_key == "9"
