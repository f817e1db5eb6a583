"""OwnTracks HTTP-mode decoder: every real payload from Traccar's test, then edge cases.

Expected values come from the OwnTracks booklet's meaning of each field (JSON page):
`tst` epoch seconds, `vel` km/h, `cog` degrees, `acc`/`alt` metres, `batt` percent.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tracker.core.model import Fix
from tracker.protocols import owntracks
from tracker.protocols.base import Decoded, ProtocolError, Reply, Request

CLIENTS = Path(__file__).parents[1] / "data" / "clients"
NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
PAYLOADS = [
    json.loads(line) for line in (CLIENTS / "owntracks_payloads.jsonl").read_text().splitlines()
]


def _basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"authorization": f"Basic {token}", "content-type": "application/json"}


def _post(message: object, headers: dict[str, str] | None = None) -> Request:
    body = message if isinstance(message, bytes) else json.dumps(message).encode()
    return Request("POST", headers=headers or _basic("phone-7", "s3cret"), body=body)


def _only_fix(decoded: Decoded) -> Fix:
    assert decoded.rejects == []
    [(index, fix)] = decoded.fixes
    assert index == 0
    return fix


def test_the_real_payloads_are_six_locations() -> None:
    assert len(PAYLOADS) == 6
    assert all(payload["_type"] == "location" for payload in PAYLOADS)


@pytest.mark.parametrize("payload", PAYLOADS, ids=[f"payload{i + 1}" for i in range(6)])
def test_every_real_payload_decodes_to_its_documented_meaning(payload: dict[str, Any]) -> None:
    decoded = owntracks.decode(_post(payload), NOW)
    assert decoded.device_key == "phone-7"  # the Basic-auth user, never tid or topic
    assert decoded.reply == Reply(200, "application/json", b"[]")
    fix = _only_fix(decoded)
    assert fix.device_id == 0
    assert fix.time == datetime.fromtimestamp(payload["tst"], UTC)
    assert (fix.lat, fix.lon) == (payload["lat"], payload["lon"])
    if "vel" in payload:
        assert fix.speed == pytest.approx(payload["vel"] / 3.6)
    else:
        assert fix.speed is None
    assert fix.course == payload.get("cog")
    assert fix.accuracy == payload.get("acc")
    assert fix.altitude == payload.get("alt")
    attributes = fix.attributes
    assert attributes.get("batteryLevel") == payload.get("batt")
    assert attributes.get("event") == payload.get("t")
    assert attributes["tid"] == payload["tid"]
    for consumed in ("_type", "lat", "lon", "tst", "vel", "cog", "acc", "alt", "batt", "t"):
        assert consumed not in attributes
    assert "topic" not in attributes and "created_at" not in attributes


def test_real_values_spot_checked() -> None:
    moving = _only_fix(owntracks.decode(_post(PAYLOADS[2]), NOW))
    assert moving.speed == pytest.approx(16.9444, abs=1e-4)  # 61 km/h
    assert moving.course == 271 and moving.accuracy == 5 and moving.altitude == 167
    assert moving.time == datetime(2017, 6, 13, 10, 21, 56, tzinfo=UTC)
    assert moving.attributes == {"vac": 21, "tid": "JJ", "batteryLevel": 67, "event": "u"}
    minimal = _only_fix(owntracks.decode(_post(PAYLOADS[1]), NOW))
    assert (minimal.speed, minimal.course, minimal.accuracy, minimal.altitude) == (
        None,
        None,
        None,
        None,
    )
    assert minimal.attributes == {"tid": "JJ"}


def test_qtripp_tracker_payload_keeps_cell_fields_and_ignition_trigger() -> None:
    fix = _only_fix(owntracks.decode(_post(PAYLOADS[5]), NOW))
    assert fix.speed == 0.0 and fix.course == 113 and fix.altitude == 1113
    # Trigger "I" is "ignition off" for Queclink devices; Traccar sets ignition=false.
    assert fix.attributes["ignition"] is False
    assert fix.attributes["event"] == "I"
    for key, value in {"mcc": 232, "mnc": 1, "lac": "4F4D", "cid": "673A", "don": 105}.items():
        assert fix.attributes[key] == value


def test_identity_falls_back_to_x_limit_u_then_query_u() -> None:
    message = PAYLOADS[1]
    headers = {"x-limit-u": "phone-8", "x-limit-d": "device"}
    assert owntracks.decode(_post(message, headers), NOW).device_key == "phone-8"
    query = Request("POST", query=(("u", "phone-9"), ("d", "x")), body=json.dumps(message).encode())
    assert owntracks.decode(query, NOW).device_key == "phone-9"
    both = {**_basic("phone-7", "pw"), "x-limit-u": "someone-else"}
    assert owntracks.decode(_post(message, both), NOW).device_key == "phone-7"


def test_no_identity_is_401_and_tid_or_topic_do_not_count() -> None:
    with pytest.raises(ProtocolError) as refused:
        owntracks.decode(_post(PAYLOADS[4], {"x-limit-d": "iphone"}), NOW)
    assert refused.value.status == 401


def test_credentials_give_user_and_password_and_refuse_garbage() -> None:
    request = _post(PAYLOADS[0], _basic("phone-7", "pa:ss"))
    assert owntracks.credentials(request) == ("phone-7", "pa:ss")
    assert owntracks.credentials(_post(PAYLOADS[0], {"authorization": "Bearer abc"})) is None
    with pytest.raises(ProtocolError) as refused:
        owntracks.credentials(_post(PAYLOADS[0], {"authorization": "Basic !!!not-base64"}))
    assert refused.value.status == 401


@pytest.mark.parametrize(
    "message",
    [
        {"_type": "transition", "event": "enter", "tst": 1, "lat": 1, "lon": 2, "tid": "JJ"},
        {"_type": "lwt", "tst": 1380738247},
        {"_type": "waypoint", "desc": "Home", "lat": 1, "lon": 2, "tst": 1},
        {"tid": "JJ"},
    ],
)
def test_other_message_types_are_accepted_and_ignored(message: dict[str, Any]) -> None:
    decoded = owntracks.decode(_post(message), NOW)
    assert decoded.fixes == [] and decoded.rejects == []
    assert decoded.device_key == "phone-7"
    assert decoded.reply.body == b"[]"


def test_zero_length_body_is_ignored() -> None:
    decoded = owntracks.decode(_post(b""), NOW)
    assert (decoded.fixes, decoded.rejects, decoded.reply.body) == ([], [], b"[]")


def test_encrypted_payload_is_reported_not_silently_dropped() -> None:
    decoded = owntracks.decode(_post({"_type": "encrypted", "data": "abc"}), NOW)
    assert decoded.fixes == []
    assert "encrypted" in decoded.rejects[0].reason


@pytest.mark.parametrize("body", [b"{", b"[1]", b'{"_type":"location","lat":NaN}'])
def test_malformed_json_is_400(body: bytes) -> None:
    with pytest.raises(ProtocolError) as refused:
        owntracks.decode(_post(body), NOW)
    assert refused.value.status == 400


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"tst": None}, "tst"),
        ({"lat": None}, "no coordinates"),
        ({"lat": "x"}, "lat"),
        ({"lon": 200}, "lon"),
        ({"vel": True}, "vel"),
        ({"tst": 1e20}, "tst"),
        ({"lat": 0, "lon": 0}, "0,0"),
    ],
)
def test_bad_location_is_rejected_with_the_field(change: dict[str, Any], field: str) -> None:
    message = {**PAYLOADS[0], **change}
    decoded = owntracks.decode(_post(message), NOW)
    assert decoded.fixes == []
    [reject] = decoded.rejects
    assert reject.index == 0 and field in reject.reason


def test_negative_vel_cog_acc_are_unknown() -> None:
    message = {**PAYLOADS[2], "vel": -1, "cog": -1, "acc": -1}
    fix = _only_fix(owntracks.decode(_post(message), NOW))
    assert (fix.speed, fix.course, fix.accuracy) == (None, None, None)


def test_numbers_sent_as_text_are_read() -> None:
    message = {
        "_type": "location",
        "lat": "48.85",
        "lon": "2.295",
        "tst": "1497476456",
        "vel": "36",
    }
    fix = _only_fix(owntracks.decode(_post(message), NOW))
    assert (fix.lat, fix.lon) == (48.85, 2.295)
    assert fix.time == datetime(2017, 6, 14, 21, 40, 56, tzinfo=UTC)
    assert fix.speed == pytest.approx(10.0)


@pytest.mark.parametrize(("status", "charge"), [(0, None), (1, False), (2, True), (3, True)])
def test_battery_status_maps_to_charge(status: int, charge: bool | None) -> None:
    fix = _only_fix(owntracks.decode(_post({**PAYLOADS[0], "bs": status}), NOW))
    assert fix.attributes.get("charge") == charge


def test_tracker_fields_use_traccar_names_and_units() -> None:
    message = {**PAYLOADS[0], "ign": True, "odometer": 12.5, "uext": 12.8, "ubatt": 4.1}
    attributes = _only_fix(owntracks.decode(_post(message), NOW)).attributes
    assert attributes["ignition"] is True
    assert attributes["odometer"] == 12500.0  # km -> m
    assert (attributes["power"], attributes["battery"]) == (12.8, 4.1)
    assert "ign" not in attributes and "uext" not in attributes
