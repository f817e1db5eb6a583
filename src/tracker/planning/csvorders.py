"""Orders from a CSV file: every row checked, every problem reported by line and field.

The header names the columns (case-insensitive; common spellings of shop exports are
accepted, see COLUMNS). A column the importer does not know is an error for the whole file,
so a misspelt "priorty" never silently drops data. Each data row becomes the same JSON
object the API takes and goes through the same checks (`orders.new_order`), so a CSV row
and a POSTed order are refused for the same reasons with the same words.

Times: a window bound is ISO-8601 with a zone, a local date-time, or just a time of day
(HH:MM) on the row's date; local times are read in the import's time zone.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

from tracker.planning.fields import FieldError, Invalid
from tracker.planning.orders import new_order

MAX_ROWS = 10_000
MAX_COLUMNS = 60

# canonical column → the header spellings accepted for it (after lower-casing and turning
# spaces and hyphens into underscores).
COLUMNS: dict[str, tuple[str, ...]] = {
    "external_id": ("external_id", "order_id", "order", "order_number", "reference", "ref"),
    "kind": ("kind", "type"),
    "lat": ("lat", "latitude"),
    "lon": ("lon", "lng", "long", "longitude"),
    "address": ("address", "full_address"),
    "street": ("street", "street_address", "address_line_1"),
    "house_number": ("house_number", "housenumber", "number"),
    "postcode": ("postcode", "zip", "zip_code", "postal_code"),
    "city": ("city", "town"),
    "country": ("country",),
    "recipient": ("recipient", "name", "customer", "customer_name"),
    "phone": ("phone", "telephone", "tel", "mobile"),
    "email": ("email", "e_mail", "mail"),
    "date": ("date", "delivery_date"),
    "window_start": ("window_start", "from", "time_from", "earliest"),
    "window_end": ("window_end", "to", "time_to", "latest"),
    "window2_start": ("window2_start",),
    "window2_end": ("window2_end",),
    "windows": ("windows",),
    "service_s": ("service_s", "service_time_s"),
    "service_min": ("service_min", "service_minutes"),
    "skills": ("skills",),
    "priority": ("priority",),
    "notes": ("notes", "note", "comment", "comments", "instructions"),
}
_ALIASES = {alias: name for name, aliases in COLUMNS.items() for alias in aliases}
# Size units as their own columns: `parcels`, `kg`, or `size_<unit>` for any other unit.
_SIZE_SHORT = ("parcels", "kg")
_SIZE_PREFIX = "size_"
_SPLIT = re.compile(r"[;,|]")


class CsvInvalid(ValueError):
    """The file as a whole cannot be read (no header, unknown columns, too many rows...)."""


@dataclass(slots=True)
class CsvRow:
    """One data row: where it starts, its checked column values or its errors."""

    line: int
    external_id: str | None
    values: dict[str, Any] | None
    errors: list[FieldError] = field(default_factory=list)


@dataclass(slots=True)
class ParsedCsv:
    """Every data row of a file, in file order."""

    headers: dict[str, str]  # canonical column → the header as the file writes it
    rows: list[CsvRow]

    @property
    def good(self) -> list[CsvRow]:
        return [r for r in self.rows if not r.errors]

    @property
    def bad(self) -> list[CsvRow]:
        return [r for r in self.rows if r.errors]


def _column(header: str) -> str:
    return re.sub(r"[\s-]+", "_", header.strip().lower())


def _map_header(headers: list[str]) -> list[str]:
    """Canonical names for the header cells; unknown or repeated columns are refused."""
    if len(headers) > MAX_COLUMNS:
        raise CsvInvalid(f"line 1: {len(headers)} columns, at most {MAX_COLUMNS}")
    names: list[str] = []
    problems: list[str] = []
    for i, raw in enumerate(headers, start=1):
        key = _column(raw)
        if key in _ALIASES:
            name = _ALIASES[key]
        elif key in _SIZE_SHORT:
            name = _SIZE_PREFIX + key
        elif key.startswith(_SIZE_PREFIX) and re.fullmatch(r"[a-z0-9][a-z0-9_.-]{0,63}", key[5:]):
            name = key
        elif not key:
            problems.append(f"column {i} has no name")
            continue
        else:
            problems.append(f"unknown column {raw.strip()!r}")
            continue
        if name in names:
            problems.append(f"column {raw.strip()!r} repeats {headers[names.index(name)]!r}")
            continue
        names.append(name)
    if problems:
        known = ", ".join(sorted({a for a in COLUMNS} | {"parcels", "kg", "size_<unit>"}))
        raise CsvInvalid("line 1: " + "; ".join(problems) + f" (known columns: {known})")
    return names


def _delimiter(first_line: str) -> str:
    # European exports use ';' (',' is their decimal mark); some tools write tabs.
    counts = {d: first_line.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


class _Row:
    """Turns one row's cells into an order object, recording conversion errors."""

    def __init__(self, cells: dict[str, str], headers: dict[str, str], zone: ZoneInfo) -> None:
        self.cells = cells
        self.headers = headers  # canonical → the header as written
        self.zone = zone
        self.errors: list[FieldError] = []
        self.data: dict[str, Any] = {}

    def fail(self, column: str, message: str) -> None:
        self.errors.append(FieldError(self.headers.get(column, column), message))

    def convert(self, column: str, target: str, parse: Callable[[str], Any], what: str) -> None:
        raw = self.cells.get(column, "")
        if raw == "":
            return
        try:
            self.data[target] = parse(raw)
        except ValueError:
            self.fail(column, f"{raw[:40]!r} is not {what}")

    def day(self) -> date | None:
        raw = self.cells.get("date", "")
        try:
            return date.fromisoformat(raw) if raw else None
        except ValueError:
            return None  # reported by the order checks ("date: must be a date YYYY-MM-DD")

    def instant(self, column: str, raw: str) -> str | None:
        """A window bound as ISO-8601 with a zone, from any of the accepted spellings."""
        text = raw.strip()
        try:
            if re.fullmatch(r"\d{1,2}:\d{2}(:\d{2})?", text):
                day = self.day()
                if day is None:
                    self.fail(column, f"{text!r} is a time of day: the row needs a date")
                    return None
                return datetime.combine(
                    day, time.fromisoformat(text.zfill(5)), self.zone
                ).isoformat()
            parsed = datetime.fromisoformat(text.replace("z", "Z"))
        except ValueError:
            self.fail(column, f"{text[:40]!r} is not a time (HH:MM or ISO-8601)")
            return None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=self.zone)
        return parsed.isoformat()

    def windows(self) -> None:
        pairs: list[list[str]] = []
        for start_col, end_col in (
            ("window_start", "window_end"),
            ("window2_start", "window2_end"),
        ):
            start, end = self.cells.get(start_col, ""), self.cells.get(end_col, "")
            if not start and not end:
                continue
            if not start or not end:
                self.fail(start_col if not start else end_col, "a window needs a start and an end")
                continue
            a, b = self.instant(start_col, start), self.instant(end_col, end)
            if a and b:
                pairs.append([a, b])
        raw = self.cells.get("windows", "")
        for part in (p.strip() for p in raw.split(";")):
            if not part:
                continue
            # ISO 8601 intervals are start/end; times of day may be written 09:00-12:00.
            bounds: list[str] = []
            if "/" in part:
                bounds = part.split("/")
            elif re.fullmatch(r"[\d:]+\s*-\s*[\d:]+", part):
                bounds = part.split("-")
            if len(bounds) != 2:
                self.fail("windows", f"{part[:40]!r} is not start/end or HH:MM-HH:MM")
                continue
            a, b = self.instant("windows", bounds[0]), self.instant("windows", bounds[1])
            if a and b:
                pairs.append([a, b])
        if pairs:
            self.data["windows"] = pairs

    def build(self) -> dict[str, Any]:
        for name in ("external_id", "kind", "recipient", "phone", "email", "notes", "date"):
            if self.cells.get(name, "") != "":
                self.data[name] = self.cells[name]
        if "kind" in self.data:
            self.data["kind"] = self.data["kind"].lower()
        self.convert("lat", "lat", _decimal, "a number")
        self.convert("lon", "lon", _decimal, "a number")
        self.convert("service_s", "service_s", _decimal, "a number of seconds")
        self.convert(
            "service_min", "service_s", lambda s: _decimal(s) * 60.0, "a number of minutes"
        )
        self.convert("priority", "priority", _decimal, "a number")
        size: dict[str, float] = {}
        for column, raw in self.cells.items():
            if column.startswith(_SIZE_PREFIX) and raw != "":
                try:
                    size[column.removeprefix(_SIZE_PREFIX)] = _decimal(raw)
                except ValueError:
                    self.fail(column, f"{raw[:40]!r} is not a number")
        if size:
            self.data["size"] = size
        if self.cells.get("skills", ""):
            self.data["skills"] = [
                s.strip() for s in _SPLIT.split(self.cells["skills"]) if s.strip()
            ]
        address = self.cells.get("address", "")
        if not address:
            street = " ".join(
                x for x in (self.cells.get("street", ""), self.cells.get("house_number", "")) if x
            )
            town = " ".join(
                x for x in (self.cells.get("postcode", ""), self.cells.get("city", "")) if x
            )
            address = ", ".join(x for x in (street, town, self.cells.get("country", "")) if x)
        if address:
            self.data["address"] = address
        self.windows()
        return self.data


def _decimal(text: str) -> float:
    # "7,5" is how half of Europe writes 7.5 (the file then uses ';' between cells).
    cleaned = text.strip().replace(",", ".") if text.count(",") == 1 and "." not in text else text
    return float(cleaned)


def _field_name(error: FieldError, headers: dict[str, str]) -> str:
    """The order checks name canonical fields; the report names the file's own columns."""
    base = re.split(r"[.\[]", error.field, maxsplit=1)[0]
    if base in headers:
        return headers[base]  # a cell holds the whole value: no [index] into it
    if base == "windows":
        for column in ("windows", "window_start", "window2_start"):
            if column in headers:
                return headers[column]
    if base == "service_s" and "service_min" in headers:
        return headers["service_min"]
    if base == "size":
        unit = error.field[len("size.") :]
        if _SIZE_PREFIX + unit in headers:
            return headers[_SIZE_PREFIX + unit]
    if base == "address" and "street" in headers:
        return headers["street"]
    return error.field


def parse_orders(
    text: str, time_zone: str = "UTC", geocoder: bool = True, max_rows: int = MAX_ROWS
) -> ParsedCsv:
    """Every data row of `text` checked into order column values, or its errors. Raises
    `CsvInvalid` when the file as a whole is unusable."""
    text = text.removeprefix("\ufeff")
    if "\x00" in text:
        raise CsvInvalid("the file contains NUL characters (is it a spreadsheet, not CSV?)")
    first = text.split("\n", 1)[0]
    if not first.strip():
        raise CsvInvalid("line 1: the file must start with a header row naming the columns")
    zone = ZoneInfo(time_zone)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_delimiter(first), strict=True)
    try:
        header = next(reader)
        names = _map_header(header)
        headers = {n: h.strip() for n, h in zip(names, header, strict=True)}
        rows: list[CsvRow] = []
        seen: dict[str, int] = {}
        line = reader.line_num + 1
        for cells in reader:
            start, line = line, reader.line_num + 1
            if not any(c.strip() for c in cells):
                continue
            if len(rows) >= max_rows:
                raise CsvInvalid(f"line {start}: more than {max_rows} rows; split the file")
            rows.append(_check_row(start, cells, names, headers, zone, geocoder, seen))
    except csv.Error as exc:
        raise CsvInvalid(f"line {reader.line_num}: {exc}") from exc
    return ParsedCsv(headers, rows)


def _check_row(
    line: int,
    cells: list[str],
    names: list[str],
    headers: dict[str, str],
    zone: ZoneInfo,
    geocoder: bool,
    seen: dict[str, int],
) -> CsvRow:
    if len(cells) > len(names):
        return CsvRow(
            line,
            None,
            None,
            [FieldError("*", f"{len(cells)} cells but the header names {len(names)} columns")],
        )
    row = _Row({n: c.strip() for n, c in zip(names, cells, strict=False)}, headers, zone)
    data = row.build()
    external_id = data.get("external_id")
    errors = list(row.errors)
    values: dict[str, Any] | None = None
    try:
        values = new_order(data, geocoder=geocoder)
    except Invalid as exc:
        converted = {e.field for e in errors}
        errors.extend(
            FieldError(_field_name(e, headers), e.message)
            for e in exc.errors
            if _field_name(e, headers) not in converted
        )
    # Report in the file's column order, as a person reads the row.
    position = {h: i for i, h in enumerate(headers.values())}
    errors.sort(key=lambda e: position.get(e.field, -1))
    if isinstance(external_id, str) and external_id:
        if external_id in seen:
            errors.append(
                FieldError(
                    headers["external_id"], f"{external_id!r} repeats line {seen[external_id]}"
                )
            )
        else:
            seen[external_id] = line
    return CsvRow(
        line,
        external_id if isinstance(external_id, str) else None,
        None if errors else values,
        errors,
    )
