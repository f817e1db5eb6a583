"""CSV import of orders: `POST /api/v1/orders/import` with `Content-Type: text/csv`.

Query parameters:
- `dry_run=true`: check everything, store nothing, report what would happen;
- `on_error=reject` (default): a file with any bad row imports nothing (422 with the
  report: fix the rows, send the file again); `on_error=skip`: import the good rows;
- `on_duplicate=error` (default): a row whose external id is already stored is a bad row;
  `on_duplicate=skip`: it is left out and listed (re-sending a file is then harmless);
- `time_zone=Europe/Andorra`: how local times in the file are read (default UTC).

The report names every bad row by line (the header is line 1) and field (the file's own
column name): `{"line": 7, "field": "Priority", "message": "must be between 0 and 100"}`.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from tracker.api.body import read_body
from tracker.api.checks import bool_param, choice_param, known_params
from tracker.api.guards import require_dispatcher, runtime, unavailable
from tracker.api.orders import store_new
from tracker.api.responses import ApiError, ORJSONResponse
from tracker.planning.csvorders import CsvInvalid, CsvRow, parse_orders
from tracker.planning.fields import FieldError, valid_zone
from tracker.planning.model import PENDING
from tracker.store import orders as store
from tracker.store.db import DB_ERRORS

PARAMS = ("dry_run", "on_error", "on_duplicate", "time_zone")
CSV_TYPES = ("text/csv", "application/csv", "text/plain")


def _require_csv(request: Request) -> None:
    ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if ctype not in CSV_TYPES:
        raise ApiError(415, "unsupported_media_type", "Content-Type must be text/csv")


def _decode(body: bytes) -> str:
    try:
        return body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = body[: exc.start].count(b"\n") + 1
        raise ApiError(
            400, "invalid_csv", f"line {line}: not UTF-8 text (save the file as CSV UTF-8)"
        ) from exc


def _error_json(row: CsvRow, error: FieldError) -> dict[str, Any]:
    return {"line": row.line, "field": error.field, "message": error.message}


async def import_orders(request: Request) -> Response:
    """Check a CSV file of orders and store its good rows (see the module's docstring)."""
    await require_dispatcher(request)
    rt = runtime(request)
    known_params(request, PARAMS)
    dry_run = bool_param(request, "dry_run")
    on_error = choice_param(request, "on_error", ("reject", "skip"), "reject")
    on_duplicate = choice_param(request, "on_duplicate", ("error", "skip"), "error")
    zone = request.query_params.get("time_zone", "UTC")
    if not valid_zone(zone):
        raise ApiError(400, "invalid_request", "time_zone: must be an IANA time zone")
    _require_csv(request)
    text = _decode(await read_body(request, rt.settings.max_body_bytes))
    try:
        parsed = parse_orders(text, zone, geocoder=rt.geocoding is not None)
    except CsvInvalid as exc:
        raise ApiError(400, "invalid_csv", str(exc)) from exc
    if not parsed.rows:
        raise ApiError(400, "invalid_csv", "the file has a header but no rows")
    try:
        taken = await store.existing_external_ids(
            rt.pool, [r.external_id for r in parsed.rows if r.external_id]
        )
    except DB_ERRORS as exc:
        raise unavailable(rt) from exc
    duplicates: list[dict[str, Any]] = []
    for row in parsed.rows:
        if row.external_id in taken and not row.errors:
            if on_duplicate == "skip":
                duplicates.append({"line": row.line, "external_id": row.external_id})
                row.values = None
            else:
                column = parsed.headers.get("external_id", "external_id")
                row.errors.append(FieldError(column, f"{row.external_id!r} exists already"))
                row.values = None
    good = [r for r in parsed.rows if r.values is not None]
    bad = parsed.bad
    errors = [_error_json(r, e) for r in bad for e in r.errors]
    report: dict[str, Any] = {
        "dry_run": dry_run,
        "rows": len(parsed.rows),
        "imported": 0,
        "rejected": len(bad),
        "skipped": len(duplicates),
        "errors": errors,
        "duplicates": duplicates,
        "orders": [],
    }
    if bad and on_error == "reject" and not dry_run:
        return ORJSONResponse(
            {
                "error": "invalid_rows",
                "message": f"{len(bad)} of {len(parsed.rows)} rows have errors; "
                "nothing was imported (fix them, or send on_error=skip)",
                **report,
            },
            status_code=422,
        )
    if dry_run:
        # What this very request would store without dry_run: nothing, if it would be refused.
        would = [] if bad and on_error == "reject" else good
        report["orders"] = [_planned(r, None) for r in would]
        report["imported"] = len(would)
        return ORJSONResponse(report)
    created = await store_new(rt, [r.values for r in good if r.values is not None]) if good else []
    report["orders"] = [
        {**_planned(r, o.id), "geocode_status": o.geocode_status}
        for r, o in zip(good, created, strict=True)
    ]
    report["imported"] = len(created)
    return ORJSONResponse(report)


def _planned(row: CsvRow, order_id: int | None) -> dict[str, Any]:
    values = row.values or {}
    return {
        "line": row.line,
        "id": order_id,
        "external_id": row.external_id,
        "geocode_status": values.get("geocode_status", PENDING),
    }
