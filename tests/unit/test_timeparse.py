"""Time formats phones send."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tracker.core.timeparse import TimeFormatError, parse_time


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1377177267, datetime(2013, 8, 22, 13, 14, 27, tzinfo=UTC)),
        (1442068686579, datetime(2015, 9, 12, 14, 38, 6, 579000, tzinfo=UTC)),
        ("1377177267", datetime(2013, 8, 22, 13, 14, 27, tzinfo=UTC)),
        (1377177267.5, datetime(2013, 8, 22, 13, 14, 27, 500000, tzinfo=UTC)),
        ("2016-01-27T18:55:47Z", datetime(2016, 1, 27, 18, 55, 47, tzinfo=UTC)),
        ("2015-10-01T08:00:00-0700", datetime(2015, 10, 1, 15, 0, tzinfo=UTC)),
        ("2025-06-15T13:45:12.862Z", datetime(2025, 6, 15, 13, 45, 12, 862000, tzinfo=UTC)),
    ],
)
def test_formats(value: object, expected: datetime) -> None:
    assert parse_time(value) == expected


@pytest.mark.parametrize(
    "value", [True, None, [], "2016-01-27T18:55:47", "tomorrow", float("nan"), 10**20]
)
def test_refused(value: object) -> None:
    with pytest.raises(TimeFormatError):
        parse_time(value)
