"""Customer message templates and quiet hours, without I/O."""

from __future__ import annotations

from datetime import datetime, time
from zoneinfo import ZoneInfo

import pytest

from tracker.core import notices

BERLIN = ZoneInfo("Europe/Berlin")


def at(hour: int, minute: int = 0, day: int = 4) -> datetime:
    return datetime(2026, 12, day, hour, minute, tzinfo=BERLIN)


def test_quiet_hours_across_midnight() -> None:
    quiet = notices.parse_quiet_hours("21:00-08:00")
    assert quiet == (time(21), time(8))
    assert notices.quiet_until(at(22, 30), quiet) == at(8, day=5)
    assert notices.quiet_until(at(3), quiet) == at(8)
    assert notices.quiet_until(at(8), quiet) is None
    assert notices.quiet_until(at(20, 59), quiet) is None
    assert notices.quiet_until(at(21), quiet) == at(8, day=5)


def test_quiet_hours_within_a_day_and_none() -> None:
    quiet = notices.parse_quiet_hours("12:00-13:30")
    assert notices.quiet_until(at(12, 15), quiet) == at(13, 30)
    assert notices.quiet_until(at(13, 30), quiet) is None
    assert notices.parse_quiet_hours("") is None
    assert notices.quiet_until(at(3), None) is None


@pytest.mark.parametrize("text", ["21-08", "25:00-08:00", "08:00-08:00", "9:00 - 10:00"])
def test_malformed_quiet_hours(text: str) -> None:
    with pytest.raises(ValueError):
        notices.parse_quiet_hours(text)


def test_render_fills_placeholders_and_drops_empty_lines() -> None:
    template = notices.default_template(notices.OUT_FOR_DELIVERY, "email", "en")
    out = notices.render(
        template,
        {
            "company": "Shop",
            "recipient": "Ann",
            "address": "Main St 1",
            "window": "09:00–10:00",
            "link": "https://t.example/t/abc",
            "pin": "",
        },
    )
    assert out.subject == "Shop: your delivery is on its way"
    assert "https://t.example/t/abc" in out.body and "\n\n\n" not in out.body
    assert "$" not in out.body


def test_languages_fall_back_to_english() -> None:
    de = notices.default_template(notices.FAILED, "sms", "de-AT")
    assert "nicht zugestellt" in de.body
    assert notices.default_template(notices.FAILED, "sms", "fr") == notices.default_template(
        notices.FAILED, "sms", "en"
    )
    assert notices.label(notices.NEXT_STEPS, "retry_today", "de").startswith("wir versuchen")
    assert notices.label(notices.REASONS, "unknown", "en") == ""


def test_template_check_names_the_bad_placeholder() -> None:
    notices.check_template("Hi $recipient, ${eta} it is")
    with pytest.raises(ValueError, match=r"\$coupon"):
        notices.check_template("Use $coupon")
    with pytest.raises(ValueError, match="malformed"):
        notices.check_template("costs $5")
