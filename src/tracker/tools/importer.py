"""`tracker import FILE.gpx|FILE.csv --device ID`: load a recorded track into the server.

The track goes through the running server's ingest API (POST /api/v1/positions, in
batches, with the device's token), not straight into the database. That is what makes it
the same pipeline a phone's pings take: the same filters with the server's own memory of
the device's last fix, the same group-commit writer, the same live publication and the
same after-commit hooks (route progress, ETAs, events). A separate process building its
own IngestService would share only the SQL: its jump filter would not know the device's
live position, its bus would reach no map, and route hooks registered by the server would
not run. The cost is that the server must be up and the device's token at hand.

Each batch is acknowledged only once committed, so an interrupted import can simply be
run again: what was stored comes back as duplicates. 503, 429 and network errors are
retried (honouring Retry-After); any other refusal stops the import with the server's
message. Rejected pings (the filters' verdicts) are counted and their reasons summarised.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from tqdm import tqdm

from tracker.core.model import Fix
from tracker.tools import tracks

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_BATCH = 500
RETRYABLE = frozenset({429, 502, 503, 504})
MAX_WAIT_S = 30.0


class ImportFailed(Exception):
    """The server refused the import (or stayed unreachable); the message says why."""


@dataclass(slots=True)
class ImportSummary:
    """What the server did with the track's pings."""

    sent: int = 0
    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    reasons: Counter[str] = field(default_factory=Counter)

    def line(self) -> str:
        """A one-line report."""
        return (
            f"{self.sent} pings sent: {self.stored} stored, {self.duplicates} duplicates, "
            f"{self.rejected} rejected"
        )


def ping_json(fix: Fix) -> dict[str, Any]:
    """A fix as a native-protocol ping (unknown values left out)."""
    ping: dict[str, Any] = {"time": fix.time.isoformat(), "lat": fix.lat, "lon": fix.lon}
    for name in ("speed", "course", "accuracy", "altitude"):
        value = getattr(fix, name)
        if value is not None:
            ping[name] = value
    if fix.attributes:
        ping["attributes"] = fix.attributes
    return ping


def _retry_after(response: httpx.Response, fallback: float) -> float:
    try:
        return min(MAX_WAIT_S, max(0.0, float(response.headers.get("retry-after", ""))))
    except ValueError:
        return fallback


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200] or response.reason_phrase
    if isinstance(body, dict):
        return str(body.get("message") or body.get("error") or body)
    return str(body)


Sleep = Callable[[float], Awaitable[None]]


async def _post_batch(
    client: httpx.AsyncClient,
    body: dict[str, Any],
    headers: dict[str, str],
    retries: int,
    backoff_s: float,
    sleep: Sleep,
) -> dict[str, Any]:
    """POST one batch until the server answers for it; returns the per-ping outcome."""
    delay = backoff_s
    for attempt in range(retries + 1):
        last = attempt == retries
        try:
            response = await client.post("/api/v1/positions", json=body, headers=headers)
        except httpx.TransportError as exc:
            if last:
                raise ImportFailed(f"server unreachable: {exc!r}") from exc
            await sleep(delay)
        else:
            # 422 = every ping of the batch rejected: an answer, not a failure.
            if response.status_code in (202, 422):
                result: dict[str, Any] = response.json()
                return result
            if response.status_code not in RETRYABLE:
                raise ImportFailed(f"HTTP {response.status_code}: {_message(response)}")
            if last:
                raise ImportFailed(
                    f"HTTP {response.status_code} after {retries + 1} attempts: "
                    f"{_message(response)}"
                )
            await sleep(_retry_after(response, delay))
        delay = min(MAX_WAIT_S, delay * 2)
    raise AssertionError("unreachable")


async def import_fixes(
    fixes: Sequence[Fix],
    *,
    url: str,
    token: str,
    device: str,
    batch_size: int = DEFAULT_BATCH,
    retries: int = 5,
    backoff_s: float = 0.5,
    progress: bool = False,
    client: httpx.AsyncClient | None = None,
    sleep: Sleep = asyncio.sleep,
) -> ImportSummary:
    """Post `fixes` (time order) as `device` in batches; returns once every batch committed.

    Raises ImportFailed when the server refuses (bad token, wrong device, ...) or stays
    unavailable through `retries` attempts of a batch.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    own = client is None
    http = client or httpx.AsyncClient(base_url=url, timeout=60.0)
    headers = {"Authorization": f"Bearer {token}"}
    summary = ImportSummary()
    bar = tqdm(total=len(fixes), unit="ping", disable=not progress, file=sys.stderr)
    try:
        for start in range(0, len(fixes), batch_size):
            chunk = fixes[start : start + batch_size]
            body = {"device_id": device, "positions": [ping_json(f) for f in chunk]}
            result = await _post_batch(http, body, headers, retries, backoff_s, sleep)
            summary.sent += len(chunk)
            summary.stored += int(result.get("stored", 0))
            summary.duplicates += int(result.get("duplicates", 0))
            rejects = result.get("rejects") or []
            summary.rejected += int(result.get("rejected", len(rejects)))
            summary.reasons.update(str(r.get("reason", "?")) for r in rejects)
            bar.update(len(chunk))
    finally:
        bar.close()
        if own:
            await http.aclose()
    return summary


async def import_track(path: str | Path, **kwargs: Any) -> ImportSummary:
    """Read a GPX or CSV track and `import_fixes` it (same keyword arguments)."""
    return await import_fixes(tracks.read_track(path), **kwargs)


# --- command line ------------------------------------------------------------------------


def _run(args: argparse.Namespace) -> int:
    # One INFO line per batch from httpx would drown the progress bar.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    token = args.token or os.environ.get("TRACKER_DEVICE_TOKEN")
    if not token:
        print("a device token is required: --token or TRACKER_DEVICE_TOKEN", file=sys.stderr)
        return 2
    try:
        fixes = tracks.read_track(args.file)
    except (OSError, tracks.TrackError) as exc:
        print(f"cannot read {args.file}: {exc}", file=sys.stderr)
        return 1
    if not fixes:
        print(f"{args.file}: no timed points to import", file=sys.stderr)
        return 1
    try:
        summary = asyncio.run(
            import_fixes(
                fixes,
                url=args.url,
                token=token,
                device=args.device,
                batch_size=args.batch,
                progress=not args.quiet,
            )
        )
    except ImportFailed as exc:
        print(f"import stopped: {exc}", file=sys.stderr)
        return 1
    print(f"{args.file}: {summary.line()}")
    for reason, count in summary.reasons.most_common(5):
        print(f"  {count} rejected: {reason}")
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `tracker import` to the command line."""
    p = sub.add_parser(
        "import",
        help="load a recorded GPX/CSV track through the server's ingest API",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("file", type=Path, help="a .gpx or .csv track")
    p.add_argument("--device", required=True, help="the device's unique id")
    p.add_argument("--token", help="the device's token (default: $TRACKER_DEVICE_TOKEN)")
    p.add_argument(
        "--url",
        default=os.environ.get("TRACKER_URL") or DEFAULT_URL,
        help=f"server base URL (default: $TRACKER_URL or {DEFAULT_URL})",
    )
    p.add_argument("--batch", type=_positive, default=DEFAULT_BATCH, help="pings per request (500)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_run)
