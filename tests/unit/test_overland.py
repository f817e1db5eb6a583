"""Overland decoder: the real batch from Overland's README, then edge cases.

Field meanings from the Overland-iOS README ("API") and CoreLocation, whose values the
app forwards: `speed` m/s, accuracies in metres, a negative vertical accuracy means the
altitude is invalid, a negative horizontal accuracy means the position is.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from tracker.protocols import overland
from tracker.protocols.base import ProtocolError, Request

CLIENTS = Path(__file__).parents[1] / "data" / "clients"
NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
BATCH: dict[str, Any] = json.loads((CLIENTS / "overland_batch.json").read_text())
HEADERS = {"content-type": "application/json", "authorization": "Bearer t0k3n"}


def _post(body: object) -> Request:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Request("POST", query=(("token", "t0k3n"),), headers=HEADERS, body=raw)


def _feature(**properties: Any) -> dict[str, Any]:
    feature: dict[str, Any] = copy.deepcopy(BATCH["locations"][0])
    feature["properties"].update(properties)
    return feature


def test_the_real_batch_decodes_to_its_documented_meaning() -> None:
    decoded = overland.decode(_post(BATCH), NOW)
    assert decoded.device_key is None  # the token names the device
    assert decoded.reply.status == 200
    assert decoded.reply.body == b'{"result":"ok"}'  # exactly what the app checks for
    assert decoded.reply.content_type == "application/json"
    assert decoded.rejects == []
    [(index, fix)] = decoded.fixes
    feature = BATCH["locations"][0]
    properties = feature["properties"]
    lon, lat = feature["geometry"]["coordinates"]
    assert index == 0 and fix.device_id == 0
    assert (fix.lat, fix.lon) == (lat, lon)
    # "2015-10-01T08:00:00-0700" is 15:00 UTC.
    assert fix.time == datetime(2015, 10, 1, 8, tzinfo=timezone(timedelta(hours=-7)))
    assert fix.time.utcoffset() == timedelta(0)
    assert fix.speed == properties["speed"]  # already m/s
    assert fix.accuracy == properties["horizontal_accuracy"]
    assert properties["vertical_accuracy"] < 0 and fix.altitude is None
    assert fix.course is None
    assert fix.attributes == {
        "batteryLevel": round(properties["battery_level"] * 100),
        "charge": True,  # battery_state "charging"
        "motionStates": properties["motion"],
    }


def test_tracking_stats_and_empty_labels_are_not_stored() -> None:
    [(_, fix)] = overland.decode(_post(BATCH), NOW).fixes
    for key in ("pauses", "activity", "desired_accuracy", "deferred", "locations_in_payload"):
        assert key not in fix.attributes
    assert "wifi" not in fix.attributes and "device_id" not in fix.attributes


def test_labels_accuracies_course_and_altitude_when_valid() -> None:
    feature = _feature(
        wifi="Depot",
        device_id="van-3",
        course=181.5,
        speed_accuracy=0.4,
        vertical_accuracy=3,
        battery_level=0.29,
        battery_state="unplugged",
    )
    feature["properties"]["altitude"] = 12
    [(_, fix)] = overland.decode(_post({"locations": [feature]}), NOW).fixes
    assert fix.course == 181.5 and fix.altitude == 12
    assert fix.attributes["wifi"] == "Depot" and fix.attributes["device_id"] == "van-3"
    assert fix.attributes["speed_accuracy"] == 0.4
    assert fix.attributes["vertical_accuracy"] == 3
    # 0.29 * 100 is 28.999...: the percent is 29, not a truncated 28.
    assert fix.attributes["batteryLevel"] == 29
    assert fix.attributes["charge"] is False


def test_altitude_may_come_from_the_third_coordinate() -> None:
    feature = _feature(vertical_accuracy=5)
    del feature["properties"]["altitude"]
    feature["geometry"]["coordinates"] = [4.0, 52.0, 7.5]
    [(_, fix)] = overland.decode(_post({"locations": [feature]}), NOW).fixes
    assert fix.altitude == 7.5


def test_features_without_geometry_and_bookkeeping_features_are_skipped() -> None:
    no_geometry = {
        "type": "Feature",
        "properties": {"timestamp": "2015-10-01T08:01:00Z", "action": "x"},
    }
    null_geometry: dict[str, Any] = {"type": "Feature", "geometry": None, "properties": {}}
    paused = _feature(action="paused_location_updates")
    trip = _feature(type="trip", mode="car")
    body = {"locations": [no_geometry, null_geometry, BATCH["locations"][0], paused, trip]}
    decoded = overland.decode(_post(body), NOW)
    assert [index for index, _ in decoded.fixes] == [2]
    assert decoded.rejects == []
    assert decoded.reply.body == b'{"result":"ok"}'


def test_bad_points_are_rejected_by_index_and_the_rest_kept() -> None:
    good = BATCH["locations"][0]
    line = _feature()
    line["geometry"] = {"type": "LineString", "coordinates": [[0, 0], [1, 1]]}
    no_time = _feature()
    del no_time["properties"]["timestamp"]
    body = {
        "locations": [
            good,
            _feature(horizontal_accuracy=-1),
            line,
            _feature(timestamp="2015-10-01 08:00:00"),  # no zone
            no_time,
            "not a feature",
            _feature(speed="NaN"),
            good,
        ]
    }
    decoded = overland.decode(_post(body), NOW)
    assert [index for index, _ in decoded.fixes] == [0, 7]
    reasons = {reject.index: reject.reason for reject in decoded.rejects}
    assert set(reasons) == {1, 2, 3, 4, 5, 6}
    assert "horizontal_accuracy" in reasons[1]
    assert "Point" in reasons[2]
    assert "timestamp" in reasons[3] and "timestamp" in reasons[4]
    assert "Feature" in reasons[5]
    assert "speed" in reasons[6]


def test_negative_speed_and_course_are_unknown() -> None:
    body = {"locations": [_feature(speed=-1, course=-1)]}
    [(_, fix)] = overland.decode(_post(body), NOW).fixes
    assert fix.speed is None and fix.course is None


def test_current_is_one_more_fix_after_the_batch() -> None:
    current = _feature(timestamp="2015-10-01T09:30:00-0700")
    current["geometry"]["coordinates"] = [-122.1, 37.4]
    body = {"locations": [BATCH["locations"][0]], "current": current, "trip": {"distance": 1}}
    decoded = overland.decode(_post(body), NOW)
    assert [index for index, _ in decoded.fixes] == [0, 1]
    newest = decoded.fixes[1][1]
    assert (newest.lat, newest.lon) == (37.4, -122.1)
    assert newest.time == datetime(2015, 10, 1, 16, 30, tzinfo=UTC)


def test_empty_batch_is_ok() -> None:
    decoded = overland.decode(_post({"locations": []}), NOW)
    assert decoded.fixes == [] and decoded.reply.body == b'{"result":"ok"}'


@pytest.mark.parametrize(
    "body", [b"", b"{", b"[]", b'{"locations": {}}', b'{"foo": 1}', b'{"locations":[NaN]}']
)
def test_unusable_bodies_are_400(body: bytes) -> None:
    with pytest.raises(ProtocolError) as refused:
        overland.decode(_post(body), NOW)
    assert refused.value.status == 400


def test_error_reply_makes_the_app_keep_its_queue() -> None:
    reply = overland.error_reply("database unavailable")
    assert reply.status == 503
    parsed = json.loads(reply.body)
    assert parsed == {"error": "database unavailable"}
    assert parsed.get("result") != "ok"
