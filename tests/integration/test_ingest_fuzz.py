"""Property-based: whatever body a client sends, the answer is a deliberate status with a
JSON body, never a 500."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import DeviceCreds, Server

CONTENT_TYPES = ["application/json", "application/json; charset=utf-8", "text/plain"]

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
field_values = st.one_of(
    json_scalars,
    st.sampled_from(["2024-01-01T00:00:00Z", "2024-01-01T00:00:00", "1700000000", "T", ""]),
    st.floats(min_value=-200, max_value=200),
)
pings = st.fixed_dictionaries(
    {},
    optional={
        "time": field_values,
        "lat": field_values,
        "lon": field_values,
        "speed": field_values,
        "course": field_values,
        "accuracy": field_values,
        "altitude": field_values,
        "attributes": json_values,
        "device_id": json_values,
    },
)
valid_pings = st.fixed_dictionaries(
    {
        "time": st.integers(min_value=1_500_000_000, max_value=1_700_000_000),
        "lat": st.floats(min_value=-90, max_value=90),
        "lon": st.floats(min_value=-180, max_value=180),
    },
    optional={"speed": st.floats(min_value=0, max_value=60), "attributes": json_values},
)
bodies = st.one_of(
    valid_pings.map(lambda p: json.dumps(p).encode()),
    pings.map(lambda p: json.dumps(p).encode()),
    st.lists(st.one_of(pings, json_values), max_size=5).map(
        lambda ps: json.dumps({"positions": ps}).encode()
    ),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=200),
)

ALLOWED = {202, 400, 403, 413, 415, 422}


async def test_random_bodies_never_500(server: Server, device: DeviceCreds) -> None:
    seen: list[int] = []

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(body=bodies, ctype=st.sampled_from(CONTENT_TYPES))
    def check(body: bytes, ctype: str) -> None:
        r = httpx.post(
            f"{server.base_url}/api/v1/positions",
            content=body,
            headers={"Authorization": f"Bearer {device.token}", "Content-Type": ctype},
            timeout=10,
        )
        assert r.status_code in ALLOWED, (r.status_code, body, r.text)
        payload: dict[str, Any] = r.json()
        if r.status_code != 202:
            assert payload["error"] and payload["message"]
        seen.append(r.status_code)

    # The server lives on this test's event loop: run hypothesis in a thread so the loop
    # stays free to answer.
    await asyncio.to_thread(check)
    assert len(seen) >= 300
    assert {202, 400, 422} <= set(seen)
