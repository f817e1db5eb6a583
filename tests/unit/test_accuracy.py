"""Live ETA accuracy: scoring what was shown against each arrival (pure)."""

from __future__ import annotations

import math

import pytest

from tracker.core import accuracy as acc

A = 10_000.0  # the arrival (epoch s)


def test_the_eta_shown_at_each_horizon_is_the_last_published_before_it() -> None:
    shown = [
        acc.Shown(A - 1000, A + 300, A - 100, A + 600),  # shown from 16.7 min before
        acc.Shown(A - 250, A - 30, A - 90, A - 10),  # from 4.2 min before, interval missed
    ]
    samples = {s.horizon_s: s for s in acc.score(shown, A)}
    # Nothing shown 17 min or more before: no samples there.
    assert max(samples) == 960
    assert samples[960].error_s == 300.0 and samples[960].inside is True
    assert samples[300].error_s == 300.0  # 5 min before: still the first ETA
    assert samples[240].error_s == -30.0 and samples[240].inside is False
    assert samples[60].error_s == -30.0
    assert sorted(samples) == list(range(60, 961, 60))


def test_order_of_the_events_given_does_not_matter_and_later_ones_do_not_count() -> None:
    shown = [acc.Shown(A - 100, A + 5), acc.Shown(A - 400, A + 50), acc.Shown(A + 10, A + 99)]
    samples = {s.horizon_s: s for s in acc.score(shown, A)}
    assert samples[60].error_s == 5.0
    assert samples[120].error_s == 50.0
    assert samples[60].inside is None  # no interval shown


def test_an_eta_published_exactly_at_a_horizon_is_the_one_shown_then() -> None:
    samples = acc.score([acc.Shown(A - 600, A + 1), acc.Shown(A - 120, A + 2)], A, [120])
    assert [s.error_s for s in samples] == [2.0]


@pytest.mark.parametrize(
    ("horizon", "error", "verdict"),
    [
        (60, 30.0, True),  # 30 s early (the vehicle came 30 s before the ETA)
        (60, 31.0, False),
        (60, -90.0, True),  # 90 s late
        (60, -91.0, False),
        (200, 60.0, True),
        (200, -150.0, True),
        (200, -151.0, False),
        (400, -210.0, True),
        (700, 90.0, True),
        (700, -270.0, True),
        (700, -271.0, False),
        (900, 0.0, None),  # beyond 15 min: not rated
    ],
)
def test_transitapp_bands(horizon: int, error: float, verdict: bool | None) -> None:
    assert acc.is_accurate(horizon, error) is verdict


def test_report_by_bucket_and_the_score() -> None:
    samples = [
        acc.Sample(60, 20.0, True, True),
        acc.Sample(120, -100.0, False, False),
        acc.Sample(240, 40.0, True, False),
        acc.Sample(600, -200.0, True, True),
        acc.Sample(2400, 300.0, None, None),
    ]
    by_h: dict[int, acc.Totals] = {}
    for s in samples:
        by_h.setdefault(s.horizon_s, acc.Totals()).add(acc.Totals.of([s]))
    rep = acc.report(by_h)
    first, second, third, last = rep.buckets
    assert first.label == "0-5 min" and first.count == 3
    assert first.mae_s == pytest.approx((20 + 100 + 40) / 3)
    assert first.bias_s == pytest.approx((20 - 100 + 40) / 3)
    assert first.coverage == pytest.approx(2 / 3)
    assert first.accurate == pytest.approx(1 / 3)
    assert second.count == 1 and second.accurate == 1.0
    assert third.count == 0 and third.mae_s is None and third.coverage is None
    assert last.label == "30+ min" and last.count == 1 and last.coverage is None
    assert last.accurate is None
    assert rep.overall.count == 5 and rep.overall.label == "all"
    # Bands: 0-3 min 1/2, 3-6 min 0/1, 6-10 none, 10-15 1/1: mean of those present.
    assert rep.bands == (0.5, 0.0, None, 1.0)
    assert rep.score == pytest.approx(0.5)
    js = rep.to_json()
    assert js["score"] == pytest.approx(0.5)
    assert [b["horizon"] for b in js["buckets"]] == ["0-5 min", "5-15 min", "15-30 min", "30+ min"]  # type: ignore[attr-defined]


def test_nothing_measured_reports_nothing() -> None:
    rep = acc.report({})
    assert rep.score is None and rep.overall.count == 0
    assert all(b.mae_s is None for b in rep.buckets)


def test_totals_of_scored_samples() -> None:
    samples = acc.score([acc.Shown(A - 3600, A + 120, A - 600, A + 600)], A)
    t = acc.Totals.of(samples)
    assert t.n == 60 and t.inside == 60 and t.with_interval == 60
    assert t.rated == 14  # horizons 1..14 min
    assert t.accurate == 0  # the vehicle came 120 s before the ETA: outside every band
    assert math.isclose(t.abs_error_s, 120.0 * 60)
