"""Backtest: accuracy figures, stop detection, replay of the real Munich drive, the CLI."""

from __future__ import annotations

import json
import math
from datetime import timedelta
from pathlib import Path

import pytest

from tracker.core.model import Stop
from tracker.core.pathcodec import to_polyline
from tracker.core.route import progress as prog
from tracker.tools import backtest as bt
from tracker.tools.tracks import sample_drive

MUNICH = Path(__file__).parents[2] / "src/tracker/data/munich_drive.csv"


def p(made: float, predicted: float, actual: float, stop: int = 1) -> bt.Prediction:
    return bt.Prediction(made, stop, predicted, actual)


def test_accuracy_by_horizon_bucket() -> None:
    preds = [
        p(0, 130, 100),  # 100 s ahead, 30 s late
        p(0, 290, 200),  # 200 s ahead, 90 s late
        p(0, 560, 600),  # 10 min ahead, 40 s early
        p(0, 30, 30),  # 30 s ahead, exact (too close for MAPE)
        p(0, 3000 + 200, 3000),  # 50 min ahead, 200 s late
    ]
    rows = {r.label: r for r in bt.accuracy(preds)}
    assert list(rows) == ["0-5 min", "5-15 min", "15-30 min", "30+ min", "all"]
    first = rows["0-5 min"]
    assert first.n == 3
    assert first.mae_s == pytest.approx((30 + 90 + 0) / 3)
    assert first.mape == pytest.approx((30 / 100 + 90 / 200) / 2)
    assert first.within_1min == pytest.approx(2 / 3)
    assert first.within_2min == pytest.approx(1.0)
    assert rows["5-15 min"].mae_s == pytest.approx(40.0)
    assert rows["15-30 min"].n == 0 and math.isnan(rows["15-30 min"].mae_s)
    assert rows["30+ min"].within_2min == 0.0
    assert rows["all"].n == 5
    assert rows["all"].mae_s == pytest.approx((30 + 90 + 40 + 0 + 200) / 5)
    table = bt.format_table("t", list(rows.values()))
    assert "15-30 min" in table and "  -  " in table


def test_prediction_sign_and_horizon() -> None:
    pred = p(100.0, 450.0, 400.0)
    assert pred.horizon_s == 300.0
    assert pred.error_s == 50.0


def test_stops_detected_from_dwells_in_the_munich_drive() -> None:
    fixes = sample_drive()
    stops, actual = bt.detect_stops(fixes)
    t0 = fixes[0].time.timestamp()
    assert [s.name for s in stops] == ["dwell 1", "dwell 2", "destination"]
    assert [s.seq for s in stops] == [1, 2, 3]
    assert actual[1] - t0 == pytest.approx(407.0, abs=15.0)
    assert actual[2] - t0 == pytest.approx(1030.0, abs=15.0)
    # The destination is reached when the vehicle gets within the radius of where it ended.
    end = fixes[-1].time.timestamp()
    assert end - 60.0 < actual[3] <= end
    assert all(s.service_s == 60.0 for s in stops[:2]) and stops[2].service_s == 0.0


def test_actual_arrivals_visit_given_stops_in_order() -> None:
    fixes = sample_drive()
    stops, detected = bt.detect_stops(fixes)
    entered = bt.actual_arrivals(fixes, stops)
    for sid, when in detected.items():
        # Entering a 30 m geofence comes at or shortly before the dwell began.
        assert when - 40.0 <= entered[sid] <= when + 1.0
    nowhere = [Stop(9, 1, 0.0, 0.0)]
    assert bt.actual_arrivals(fixes, nowhere) == {}


def test_replaying_munich_beats_the_baseline_at_short_horizons() -> None:
    sc = bt.scenario(sample_drive())
    assert sc.path_source == "the track itself" and sc.stops_source == "detected from dwells"
    result = bt.replay(sc, prog.EtaConfig())
    assert len(result.ours) == len(result.baseline) > 2000
    assert all(o.horizon_s > 0 for o in result.ours)
    ours = {r.label: r for r in result.table("ours")}
    base = {r.label: r for r in result.table("baseline")}
    assert ours["0-5 min"].mae_s < base["0-5 min"].mae_s
    assert ours["0-5 min"].within_2min > base["0-5 min"].within_2min
    # Both stops were visited: arrivals and departures were detected during the replay.
    assert result.events["stop.arrived"] == 3
    assert result.events["stop.departed"] == 2
    assert "route.off_route" not in result.events


def test_a_calibrated_plan_gives_the_baseline_the_true_average_speed() -> None:
    fixes = sample_drive()
    sc = bt.scenario(fixes, calibrate=True)
    last = sc.route.stops[-1]
    assert last.planned_arrival is not None
    duration = (last.planned_arrival - fixes[0].time).total_seconds()
    result = bt.replay(sc, prog.EtaConfig())
    plan = prog.plan(sc.route)
    assert result.baseline_speed_mps == pytest.approx(plan.along_m[-1] / duration)
    assert plan.prior_speed(prog.EtaConfig()) > result.baseline_speed_mps


def test_the_baseline_sees_the_same_plan_as_ours_service_included() -> None:
    sc = bt.scenario(sample_drive())  # a fixed planned speed, 60 s service per dwell
    result = bt.replay(sc, prog.EtaConfig(planned_speed_mps=10.0))
    plan = prog.plan(sc.route)
    length = plan.along_m[-1]
    service = sum(s.service_s for s in sorted(sc.route.stops, key=lambda s: s.seq)[:-1])
    assert service == 120.0
    assert result.baseline_speed_mps == pytest.approx(length / (length / 10.0 + service))
    text = bt.format_result(result)
    assert "fixed planned speed 36.0 km/h plus planned service" in text
    assert f"service included) {result.baseline_speed_mps * 3.6:.1f} km/h" in text


@pytest.mark.parametrize("calibrate", [True, False], ids=["calibrated", "30 km/h"])
def test_ours_beats_the_baseline_at_every_horizon_on_the_munich_drive(calibrate: bool) -> None:
    result = bt.replay(bt.scenario(sample_drive(), calibrate=calibrate), prog.EtaConfig())
    assert bt.beats_baseline(result)
    ours = {r.label: r for r in result.table("ours")}
    assert ours["15-30 min"].n > 300  # the hard bucket: the slow start predicting the end


def test_cli_report_on_the_packaged_drive(capsys: pytest.CaptureFixture[str]) -> None:
    assert bt.run_cli([str(MUNICH)]) == 0
    out = capsys.readouterr().out
    assert "backtest: munich_drive.csv: 1194 fixes" in out
    assert "plan: calibrated" in out
    assert "ours" in out and "naive baseline" in out
    for label in ("0-5 min", "5-15 min", "15-30 min", "30+ min"):
        assert label in out
    assert "0-5 min: ours" in out


def test_cli_with_given_stops_and_path(tmp_path: Path) -> None:
    fixes = sample_drive()
    stops, _ = bt.detect_stops(fixes)
    stops_file = tmp_path / "stops.json"
    stops_file.write_text(
        json.dumps(
            {
                "stops": [
                    {"id": s.id, "lat": s.lat, "lon": s.lon, "service_s": 60, "radius_m": 40}
                    for s in stops
                ]
            }
        ),
        encoding="utf-8",
    )
    path_file = tmp_path / "path.txt"
    path_file.write_text(to_polyline(bt.path_from_track(fixes)), encoding="utf-8")
    text = bt.main([str(MUNICH), "--stops", str(stops_file), "--path", str(path_file)])
    assert "route: 3 stops (given), path: given" in text
    fixed = bt.main([str(MUNICH), "--speed-kmh", "36"])
    assert "plan: fixed planned speed" in fixed and "speed 36.0 km/h" in fixed
    straight = bt.main([str(MUNICH), "--stops", str(stops_file), "--straight-line"])
    assert "stops joined (straight line)" in straight


def test_cli_refuses_unusable_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert bt.run_cli([str(tmp_path / "missing.csv")]) == 2
    bad = tmp_path / "stops.json"
    bad.write_text("[]", encoding="utf-8")
    assert bt.run_cli([str(MUNICH), "--stops", str(bad)]) == 2
    assert bt.run_cli([str(MUNICH), "--speed-kmh", "0"]) == 2
    assert "tracker backtest:" in capsys.readouterr().err


def test_read_stops_accepts_times_and_windows(tmp_path: Path) -> None:
    f = tmp_path / "stops.json"
    f.write_text(
        json.dumps(
            [
                {"lat": 48.1, "lon": 11.5, "window_start": "2024-05-06T10:00:00+02:00"},
                {"lat": 48.2, "lon": 11.6, "planned_arrival": 1714982400, "name": "B"},
            ]
        ),
        encoding="utf-8",
    )
    a, b = bt.read_stops(f)
    assert (a.id, a.seq, b.id, b.seq) == (1, 1, 2, 2)
    assert a.window_start is not None and a.window_start.utcoffset() == timedelta(0)
    assert b.planned_arrival is not None and b.name == "B"
