"""Reading recorded drives from CSV and GPX."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tracker.tools.tracks import TrackError, read_csv, read_gpx, read_track, sample_drive

GPX10 = """<?xml version="1.0" encoding="UTF-8"?>
<gpx version="1.0" creator="test" xmlns="http://www.topografix.com/GPX/1/0">
  <trk><trkseg>
    <trkpt lat="51.9954543" lon="4.3705501">
      <ele>19.47</ele><time>2010-02-01T12:31:39.545Z</time>
      <course>338.58</course><speed>11.99</speed><sat>3</sat><hdop>3.2</hdop>
    </trkpt>
    <trkpt lat="51.9955846" lon="4.3705198">
      <ele>19.47</ele><time>2010-02-01T12:31:38.545Z</time>
      <course>338.78</course><speed>12.05</speed>
    </trkpt>
    <trkpt lat="51.9957024" lon="4.3704727"><ele>19.0</ele></trkpt>
  </trkseg></trk>
</gpx>
"""

GPX11 = """<?xml version="1.0" encoding="UTF-8"?>
<gpx version="1.1" creator="test" xmlns="http://www.topografix.com/GPX/1/1">
  <trk><trkseg>
    <trkpt lat="48.1" lon="11.5"><time>2024-05-06T10:00:00+02:00</time></trkpt>
    <trkpt lat="48.2" lon="11.6"><time>2024-05-06T08:00:05Z</time></trkpt>
  </trkseg></trk>
</gpx>
"""


def test_csv_with_iso_times_and_optional_columns() -> None:
    text = (
        "time,lat,lon,speed,accuracy\n"
        "2024-05-06T08:00:01Z,48.1,11.5,3.5,\n"
        "2024-05-06T10:00:00+02:00,48.2,11.6,,7\n"
    )
    fixes = read_csv(text, device_id=9)
    assert [f.time for f in fixes] == [
        datetime(2024, 5, 6, 8, 0, 0, tzinfo=UTC),
        datetime(2024, 5, 6, 8, 0, 1, tzinfo=UTC),
    ]
    assert fixes[1].speed == 3.5 and fixes[1].accuracy is None
    assert fixes[0].accuracy == 7.0 and fixes[0].speed is None
    assert all(f.device_id == 9 for f in fixes)


def test_csv_with_time_utc_and_epoch_times() -> None:
    fixes = read_csv("time_utc,lat,lon\n1714982400,48.1,11.5\n1714982401000,48.1,11.5\n")
    assert (fixes[1].time - fixes[0].time).total_seconds() == 1.0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("when,lat,lon\n2024-05-06T08:00:00Z,1,2\n", "columns"),
        ("time,lat,lon\n2024-05-06T08:00:00Z,north,2\n", "row 2: lat"),
        ("time,lat,lon\n2024-05-06T08:00:00Z,95,2\n", "row 2"),
        ("time,lat,lon\n2024-05-06 08:00:00,48,11\n", "row 2"),
        ("time,lat,lon\n2024-05-06T08:00:00Z,,11\n", "required"),
    ],
)
def test_bad_csv_says_where(text: str, message: str) -> None:
    with pytest.raises(TrackError, match=message):
        read_csv(text)


def test_gpx10_speed_course_and_attributes_in_time_order() -> None:
    fixes = read_gpx(GPX10, device_id=3)
    assert len(fixes) == 2  # the point without a time cannot be replayed
    first, second = fixes
    assert first.time < second.time
    assert first.speed == 12.05 and first.course == 338.78
    assert second.attributes == {"hdop": 3.2, "sat": 3}
    assert second.altitude == 19.47


def test_gpx11_times_are_made_utc() -> None:
    fixes = read_gpx(GPX11)
    assert fixes[0].time == datetime(2024, 5, 6, 8, 0, tzinfo=UTC)
    assert fixes[0].time.utcoffset() is not None


def test_gpx_times_without_a_zone_are_utc() -> None:
    # GPX 1.1: "Date and time ... are in Universal Coordinated Time (UTC)"; some loggers
    # leave out the Z. The test file is the packaged Munich drive written that way.
    path = Path(__file__).parents[1] / "data" / "tracks" / "munich_no_zone.gpx"
    fixes = read_track(path)
    drive = sample_drive()[:120]
    assert [f.time for f in fixes] == [f.time for f in drive]
    assert fixes[0].time == datetime(2014, 9, 10, 4, 54, 7, tzinfo=UTC)
    assert [(f.lat, f.lon) for f in fixes] == [(f.lat, f.lon) for f in drive]


def test_read_track_picks_the_reader_by_extension(tmp_path: Path) -> None:
    gpx = tmp_path / "drive.GPX"
    gpx.write_text(GPX11, encoding="utf-8")
    assert len(read_track(gpx)) == 2
    other = tmp_path / "drive.kml"
    other.write_text("<kml/>", encoding="utf-8")
    with pytest.raises(TrackError, match=r"\.gpx or \.csv"):
        read_track(other)
    with pytest.raises(TrackError):
        read_gpx("<gpx")


def test_the_packaged_munich_drive() -> None:
    fixes = sample_drive()
    assert len(fixes) == 1194
    assert all(a.time < b.time for a, b in itertools.pairwise(fixes))
    minutes = (fixes[-1].time - fixes[0].time).total_seconds() / 60.0
    assert 19.0 < minutes < 21.0
    assert all(48.0 < f.lat < 48.3 and 11.3 < f.lon < 11.7 for f in fixes)
    attribution = Path(__file__).parents[2] / "src/tracker/data/ATTRIBUTION.md"
    assert "Apache" in attribution.read_text(encoding="utf-8")
