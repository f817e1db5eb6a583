"""Every reject carries a code from the fixed set the metrics count by: the filters' names
and the decoders' own reasons (malformed field, no fix, encrypted payload)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson

from tracker import metrics
from tracker.core import filters
from tracker.core.model import Fix, RejectCode
from tracker.protocols import native, osmand, overland, owntracks
from tracker.protocols.base import Request

NOW = datetime(2026, 5, 4, 12, 0, tzinfo=UTC)


def fix(seconds: float, lat: float = 48.137, lon: float = 11.575, **kw: float) -> Fix:
    return Fix(1, NOW + timedelta(seconds=seconds), lat, lon, **kw)  # type: ignore[arg-type]


def test_filters_reject_with_their_own_names() -> None:
    cfg = filters.FilterConfig(max_accuracy_m=100.0)
    fixes = [
        fix(-60),
        fix(-50, float("nan")),
        fix(-40, 95.0),
        fix(3600),
        fix(-30, accuracy=500.0),
        fix(-20, 52.52, 13.405),
        Fix(1, NOW - timedelta(seconds=10), 48.1, 11.5, attributes={"a": "x\x00"}),
    ]
    accepted, rejects = filters.screen(enumerate(fixes), None, NOW, cfg)
    assert [i for i, _ in accepted] == [0]
    assert {r.index: r.code for r in rejects} == {
        1: RejectCode.INVALID,
        2: RejectCode.OUT_OF_RANGE,
        3: RejectCode.FUTURE,
        4: RejectCode.POOR_ACCURACY,
        5: RejectCode.IMPLAUSIBLE_JUMP,
        6: RejectCode.UNSTORABLE,
    }
    assert {name for name, _ in filters.FILTERS} <= set(RejectCode.ALL)


def test_decoders_say_why_in_one_word() -> None:
    body = orjson.dumps({"positions": [{"time": "2026-05-04T12:00:00Z", "lon": 11.5}]})
    assert native.decode(Request("POST", body=body), NOW).rejects[0].code == "malformed"

    no_fix = osmand.decode(Request("GET", query=(("id", "a"), ("lat", "0"), ("lon", "0"))), NOW)
    assert no_fix.rejects[0].code == "no_fix"
    far = osmand.decode(Request("GET", query=(("id", "a"), ("lat", "91"), ("lon", "1"))), NOW)
    assert far.rejects[0].code == "out_of_range"
    bad = osmand.decode(Request("GET", query=(("id", "a"), ("lat", "x"), ("lon", "1"))), NOW)
    assert bad.rejects[0].code == "malformed"

    secret = Request("POST", headers={"x-limit-u": "a"}, body=b'{"_type":"encrypted","data":"x"}')
    assert owntracks.decode(secret, NOW).rejects[0].code == "encrypted"

    feature = {
        "type": "Feature",
        "geometry": {"type": "Point", "coordinates": [11.5, 48.1]},
        "properties": {"timestamp": "2026-05-04T12:00:00Z", "horizontal_accuracy": -1},
    }
    invalid = overland.decode(Request("POST", body=orjson.dumps({"locations": [feature]})), NOW)
    assert invalid.rejects[0].code == "no_fix"


def test_every_code_has_a_metric_child() -> None:
    assert set(metrics.REJECTED) == set(RejectCode.ALL)
    assert len(set(RejectCode.ALL)) == len(RejectCode.ALL)
