"""Recorded drives as lists of Fix: GPX (via gpxpy) or CSV files.

CSV needs a header with `time` (or `time_utc`), `lat` and `lon`; `speed` (m/s), `course`
(degrees), `accuracy` (metres) and `altitude` (metres) are used when present. Times are
ISO-8601 with a zone or epoch seconds/milliseconds. GPX trackpoints give time, position,
elevation, and (GPX 1.0) speed and course; HDOP and satellite count go to attributes. A GPX
time without a zone is UTC: GPX 1.0 and 1.1 define every `<time>` as UTC, and loggers that
leave out the `Z` write UTC all the same.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable
from datetime import UTC
from importlib import resources
from pathlib import Path

import gpxpy
import gpxpy.gpx

from tracker.core.model import Fix
from tracker.core.timeparse import TimeFormatError, parse_time

SAMPLE_DRIVE = "munich_drive.csv"


class TrackError(ValueError):
    """A track file that cannot be read as a drive; the message says where and why."""


def _number(text: str | None, row: int, column: str) -> float | None:
    if text is None or not text.strip():
        return None
    try:
        value = float(text)
    except ValueError as exc:
        raise TrackError(f"row {row}: {column} {text!r} is not a number") from exc
    if not math.isfinite(value):
        raise TrackError(f"row {row}: {column} is not finite")
    return value


def read_csv(text: str, device_id: int = 0) -> list[Fix]:
    """Fixes from CSV text, in time order."""
    reader = csv.DictReader(io.StringIO(text))
    columns = {c.strip().lower(): c for c in reader.fieldnames or []}
    time_col = columns.get("time") or columns.get("time_utc")
    if time_col is None or "lat" not in columns or "lon" not in columns:
        raise TrackError("CSV track needs columns time (or time_utc), lat and lon")
    fixes: list[Fix] = []
    for row_no, row in enumerate(reader, start=2):
        lat = _number(row.get(columns["lat"]), row_no, "lat")
        lon = _number(row.get(columns["lon"]), row_no, "lon")
        if lat is None or lon is None:
            raise TrackError(f"row {row_no}: lat and lon are required")
        if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
            raise TrackError(f"row {row_no}: ({lat}, {lon}) is not a WGS84 position")
        try:
            time = parse_time((row.get(time_col) or "").strip())
        except TimeFormatError as exc:
            raise TrackError(f"row {row_no}: {exc}") from exc

        def opt(name: str, row: dict[str, str] = row, row_no: int = row_no) -> float | None:
            col = columns.get(name)
            return None if col is None else _number(row.get(col), row_no, name)

        fixes.append(
            Fix(
                device_id=device_id,
                time=time,
                lat=lat,
                lon=lon,
                speed=opt("speed"),
                course=opt("course"),
                accuracy=opt("accuracy"),
                altitude=opt("altitude"),
            )
        )
    return _ordered(fixes)


def read_gpx(text: str, device_id: int = 0) -> list[Fix]:
    """Fixes from the track points of a GPX document (all tracks and segments), in time order.

    Points without a time cannot be replayed and are left out.
    """
    try:
        doc = gpxpy.parse(text)
    except gpxpy.gpx.GPXException as exc:
        raise TrackError(f"not a readable GPX document: {exc}") from exc
    fixes: list[Fix] = []
    for track in doc.tracks:
        for segment in track.segments:
            for pt in segment.points:
                if pt.time is None:
                    continue
                attrs: dict[str, float | int] = {}
                if pt.horizontal_dilution is not None:
                    attrs["hdop"] = float(pt.horizontal_dilution)
                if pt.satellites is not None:
                    attrs["sat"] = int(pt.satellites)
                time = pt.time
                if time.tzinfo is None:
                    # GPX defines <time> as UTC; a missing `Z` does not make it local time.
                    time = time.replace(tzinfo=UTC)
                fixes.append(
                    Fix(
                        device_id=device_id,
                        time=parse_time(time.isoformat()),
                        lat=float(pt.latitude),
                        lon=float(pt.longitude),
                        speed=None if pt.speed is None else float(pt.speed),
                        course=None if pt.course is None else float(pt.course),
                        altitude=None if pt.elevation is None else float(pt.elevation),
                        attributes=attrs,
                    )
                )
    return _ordered(fixes)


def _ordered(fixes: Iterable[Fix]) -> list[Fix]:
    """Time order; of several fixes with the same time only the first is kept."""
    out: list[Fix] = []
    for f in sorted(fixes, key=lambda f: f.time):
        if out and f.time == out[-1].time:
            continue
        out.append(f)
    return out


def read_track(path: str | Path, device_id: int = 0) -> list[Fix]:
    """A GPX or CSV drive, told apart by the file's extension."""
    p = Path(path)
    text = p.read_text(encoding="utf-8")
    suffix = p.suffix.lower()
    if suffix == ".gpx":
        return read_gpx(text, device_id)
    if suffix == ".csv":
        return read_csv(text, device_id)
    raise TrackError(f"{p.name}: expected a .gpx or .csv track")


def sample_drive(device_id: int = 0) -> list[Fix]:
    """The packaged real drive (Munich, 1 Hz, 20 min; see data/ATTRIBUTION.md)."""
    text = resources.files("tracker").joinpath("data", SAMPLE_DRIVE).read_text(encoding="utf-8")
    return read_csv(text, device_id)
