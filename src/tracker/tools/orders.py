"""`tracker orders import FILE.csv`: send a CSV file of orders to a server's import endpoint
and print its report (every bad row by line and field).

The dispatcher's key comes from `--token` or $TRACKER_API_KEY (else $TRACKER_ADMIN_TOKEN);
the server from `--url` or $TRACKER_URL. Exit status: 0 when the file was imported (or, with
`--dry-run`, would be without errors), 1 when rows were refused, 2 when nothing could be
sent or the server refused the file as a whole.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any, TextIO

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"


def print_report(report: dict[str, Any], out: TextIO) -> None:
    """The server's import report as lines a person reads."""
    verb = "would import" if report.get("dry_run") else "imported"
    print(
        f"{report['rows']} rows: {verb} {report['imported']}, "
        f"{report['rejected']} with errors, {report['skipped']} already stored (skipped)",
        file=out,
    )
    for error in report.get("errors", []):
        print(f"  line {error['line']}, {error['field']}: {error['message']}", file=out)
    for dup in report.get("duplicates", []):
        print(f"  line {dup['line']}: {dup['external_id']} is already stored, skipped", file=out)
    pending = sum(1 for o in report.get("orders", []) if o.get("geocode_status") == "pending")
    if pending:
        print(f"  {pending} orders wait for the geocoder (addresses without coordinates)", file=out)
    unresolved = sum(1 for o in report.get("orders", []) if o.get("geocode_status") == "unresolved")
    if unresolved:
        print(f"  {unresolved} orders have no coordinates and no geocoder to find them", file=out)


async def send(
    path: Path,
    url: str,
    token: str,
    params: dict[str, str],
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.Response:
    """POST the file to `url`/api/v1/orders/import."""
    async with httpx.AsyncClient(base_url=url, timeout=300.0, transport=transport) as client:
        return await client.post(
            "/api/v1/orders/import",
            content=path.read_bytes(),
            params=params,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "text/csv"},
        )


def run(args: argparse.Namespace) -> int:
    """Entry point of `tracker orders import`."""
    token = args.token or os.environ.get("TRACKER_API_KEY") or os.environ.get("TRACKER_ADMIN_TOKEN")
    if not token:
        print("tracker orders import: give --token or set TRACKER_API_KEY", file=sys.stderr)
        return 2
    if not args.file.is_file():
        print(f"tracker orders import: {args.file}: no such file", file=sys.stderr)
        return 2
    params = {
        "dry_run": "true" if args.dry_run else "false",
        "on_error": args.on_error,
        "on_duplicate": args.on_duplicate,
        "time_zone": args.time_zone,
    }
    try:
        r = asyncio.run(send(args.file, args.url, token, params))
    except httpx.HTTPError as exc:
        print(f"tracker orders import: cannot reach {args.url}: {exc}", file=sys.stderr)
        return 2
    try:
        body = r.json()
    except ValueError:
        body = {}
    if r.status_code in (200, 422) and "rows" in body:
        print_report(body, sys.stdout)
        if r.status_code == 422:
            print(body.get("message", "nothing was imported"), file=sys.stderr)
            return 1
        return 1 if body["rejected"] else 0
    print(
        f"tracker orders import: HTTP {r.status_code}: {body.get('message', r.text[:300])}",
        file=sys.stderr,
    )
    return 2


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `tracker orders import`."""
    orders = sub.add_parser("orders", help="orders: import a CSV file")
    osub = orders.add_subparsers(dest="orders_command", required=True)
    p = osub.add_parser(
        "import",
        help="import orders from a CSV file through the server (reports every bad row)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("file", type=Path, help="the CSV file (header row first, UTF-8)")
    p.add_argument(
        "--url",
        default=os.environ.get("TRACKER_URL") or DEFAULT_URL,
        help=f"server base URL (default: $TRACKER_URL or {DEFAULT_URL})",
    )
    p.add_argument("--token", help="dispatcher key (default: $TRACKER_API_KEY)")
    p.add_argument("--dry-run", action="store_true", help="check only, store nothing")
    p.add_argument(
        "--on-error",
        choices=["reject", "skip"],
        default="reject",
        help="reject: any bad row imports nothing (default); skip: import the good rows",
    )
    p.add_argument(
        "--on-duplicate",
        choices=["error", "skip"],
        default="error",
        help="an external id already stored: an error (default), or skip the row",
    )
    p.add_argument(
        "--time-zone", default="UTC", help="zone of local times in the file (e.g. Europe/Andorra)"
    )
    p.set_defaults(func=run)
