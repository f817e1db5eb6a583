"""The native JSON decoder."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from tracker.protocols import native
from tracker.protocols.base import Decoded, ProtocolError, Request

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def decode(body: object, max_batch: int = 10_000) -> Decoded:
    return native.decode(Request("POST", body=orjson.dumps(body)), NOW, max_batch)


def test_single_ping_with_all_fields() -> None:
    d = decode(
        {
            "time": "2025-06-15T13:45:12.862+02:00",
            "lat": 48.1,
            "lon": 11.5,
            "speed": 3,
            "course": 90.5,
            "accuracy": 4,
            "altitude": 500,
            "attributes": {"batt": 50},
            "ignition": True,
        }
    )
    [(index, fix)] = d.fixes
    assert index == 0 and not d.rejects and d.device_key is None
    assert fix.time == datetime(2025, 6, 15, 11, 45, 12, 862000, tzinfo=UTC)
    assert (fix.speed, fix.course, fix.accuracy, fix.altitude) == (3.0, 90.5, 4.0, 500.0)
    # Unknown top-level keys are kept as attributes rather than silently dropped.
    assert fix.attributes == {"batt": 50, "ignition": True}


def test_batch_reports_each_bad_ping_by_index() -> None:
    d = decode(
        {
            "positions": [
                {"time": 1700000000, "lat": 1, "lon": 2},
                {"time": 1700000000, "lat": True, "lon": 2},
                {"time": 1700000000, "lat": 1},
                {"time": 1700000000, "lat": 1, "lon": 2, "attributes": [1]},
                {"time": None, "lat": 1, "lon": 2},
                {"time": "2025-01-01T00:00:00", "lat": 1, "lon": 2},
            ]
        }
    )
    assert [i for i, _ in d.fixes] == [0]
    reasons = {r.index: r.reason for r in d.rejects}
    assert reasons[1] == "lat: must be a number, got bool"
    assert reasons[2] == "lon: missing"
    assert reasons[3] == "attributes: must be an object"
    assert reasons[4] == "time: missing"
    assert "no time zone" in reasons[5]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"", 400),
        (b"{", 400),
        (b"[]", 400),
        (b'"x"', 400),
        (b'{"positions": 3}', 400),
        (b'{"positions": []}', 400),
    ],
)
def test_unusable_bodies(body: bytes, status: int) -> None:
    with pytest.raises(ProtocolError) as err:
        native.decode(Request("POST", body=body), NOW)
    assert err.value.status == status


def test_batch_limit() -> None:
    with pytest.raises(ProtocolError) as err:
        decode({"positions": [{"time": 1, "lat": 1, "lon": 1}] * 3}, max_batch=2)
    assert err.value.status == 413


def test_device_named_in_the_body_is_reported_and_must_be_single() -> None:
    assert decode({"time": 1, "lat": 1, "lon": 1, "device_id": "van-7"}).device_key == "van-7"
    batch = {"device_id": "a", "positions": [{"time": 1, "lat": 1, "lon": 1}]}
    assert decode(batch).device_key == "a"
    with pytest.raises(ProtocolError) as err:
        decode({"device_id": "a", "positions": [{"time": 1, "lat": 1, "lon": 1, "device_id": "b"}]})
    assert err.value.status == 403
