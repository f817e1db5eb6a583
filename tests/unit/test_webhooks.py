"""Webhook signing, verification, the retry schedule, the ETA threshold and the body."""

from __future__ import annotations

import hashlib
import hmac
import itertools
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tracker.core import webhooks
from tracker.core.model import Event

SECRET = "whsec_test_5f3a"
BODY = b'{"id":"d-1","type":"stop.arrived"}'
T = 1_717_400_000


def test_signature_is_hmac_sha256_over_timestamp_and_body() -> None:
    expected = hmac.new(SECRET.encode(), f"{T}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert webhooks.sign(SECRET, T, BODY) == expected
    assert webhooks.signature_header(SECRET, T, BODY) == f"t={T},v1={expected}"


def test_verify_accepts_the_real_signature_only() -> None:
    header = webhooks.signature_header(SECRET, T, BODY)
    assert webhooks.verify(SECRET, header, BODY, now_s=T + 10)
    assert not webhooks.verify("other-secret", header, BODY, now_s=T + 10)
    assert not webhooks.verify(SECRET, header, BODY + b" ", now_s=T + 10)
    # Replayed long after it was made.
    assert not webhooks.verify(SECRET, header, BODY, now_s=T + 301)
    # The timestamp is covered: moving it breaks the signature.
    moved = header.replace(f"t={T}", f"t={T + 5}")
    assert not webhooks.verify(SECRET, moved, BODY, now_s=T + 10)
    for broken in ("", "v1=abc", f"t=x,v1={webhooks.sign(SECRET, T, BODY)}", f"t={T}"):
        assert not webhooks.verify(SECRET, broken, BODY, now_s=T)
    # Several v1 values (secret rotation on the receiver's side): one match is enough.
    both = f"t={T},v1={'0' * 64},v1={webhooks.sign(SECRET, T, BODY)}"
    assert webhooks.verify(SECRET, both, BODY, now_s=T)


def test_retry_delay_doubles_up_to_the_cap_with_bounded_jitter() -> None:
    lows = [webhooks.retry_delay(n, 10.0, 3600.0, 0.0) for n in range(1, 12)]
    highs = [webhooks.retry_delay(n, 10.0, 3600.0, 0.999999) for n in range(1, 12)]
    assert lows[:4] == [5.0, 10.0, 20.0, 40.0]
    assert highs[0] == pytest.approx(10.0, rel=1e-5)
    assert all(b >= a for a, b in itertools.pairwise(lows))
    assert lows[-1] == 1800.0 and highs[-1] == pytest.approx(3600.0, rel=1e-5)
    assert webhooks.retry_delay(10_000, 10.0, 3600.0, 0.5) == 2700.0
    with pytest.raises(ValueError):
        webhooks.retry_delay(0, 10.0, 3600.0, 0.5)


@given(
    failures=st.integers(1, 200),
    base=st.floats(0.01, 600),
    cap=st.floats(1, 86_400),
    jitter=st.floats(0, 1, exclude_max=True),
)
def test_retry_delay_stays_within_half_and_whole_step(
    failures: int, base: float, cap: float, jitter: float
) -> None:
    step = min(cap, base * 2.0 ** (failures - 1))
    delay = webhooks.retry_delay(failures, base, cap, jitter)
    assert step / 2 <= delay <= step


def test_eta_threshold_measures_from_the_last_eta_told() -> None:
    t = datetime(2024, 6, 3, 9, tzinfo=UTC)
    assert webhooks.eta_worth_telling(None, t, 300.0)
    assert not webhooks.eta_worth_telling(t, t + timedelta(seconds=299), 300.0)
    assert webhooks.eta_worth_telling(t, t + timedelta(seconds=300), 300.0)
    assert webhooks.eta_worth_telling(t, t - timedelta(minutes=6), 300.0)
    assert webhooks.eta_worth_telling(t, t, 0.0)


def test_body_names_the_event_stop_and_device() -> None:
    when = datetime(2024, 6, 3, 9, 30, tzinfo=UTC)
    eta = when + timedelta(minutes=4)
    event = Event("stop.arriving", when, 17, 55, 901, {"eta": eta.isoformat()})
    stop = {
        "id": 901,
        "seq": 3,
        "name": "Main St 5",
        "recipient": "A. Customer",
        "status": "pending",
        "eta": eta,
        "lat": 1.0,  # not part of the stop summary
    }
    data = orjson.loads(webhooks.body("d-9", 4401, event, "van-3", stop))
    assert data == {
        "id": "d-9",
        "event_id": 4401,
        "type": "stop.arriving",
        "time": when.isoformat(),
        "device": "van-3",
        "route_id": 55,
        "stop": {
            "id": 901,
            "seq": 3,
            "name": "Main St 5",
            "recipient": "A. Customer",
            "status": "pending",
            "eta": eta.isoformat(),
        },
        "data": {"eta": eta.isoformat()},
    }
    off = Event("route.off_route", when, 17, 55, None, {"distance_m": 80.0})
    replaced = orjson.loads(webhooks.body("d-10", 4402, off, "van-3", None, {"x": 1}))
    assert (replaced["stop"], replaced["data"]) == (None, {"x": 1})
