"""The doorstep, measured against a real `tracker serve`: proof uploads by size, a phone's
backlog of reports synced after an offline period, and customer messages sent through a
real SMTP server (aiosmtpd) and a local SMS API.

  .venv/bin/python bench/doorstep_bench.py [--backlog 200] [--messages 200]

Prints JSON: per photo size the request latency (median, max) and the stored size; the
backlog's sync time, reports per second and rows stored after sending it all twice (must be
one per report); and how long the outbox took to deliver every message, with the counts
each receiver got (each message once).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import statistics
import threading
import time
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import asyncpg
import httpx
from aiosmtpd.controller import Controller
from common import free_port, print_results, running_server
from PIL import Image

BENCH_DB = os.environ.get(
    "BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/bench_doorstep"
)
ADMIN = "bench-admin-token"
LAT, LON = 48.137, 11.575


class Inbox:
    """aiosmtpd handler counting messages per (recipient, subject)."""

    def __init__(self) -> None:
        self.seen: dict[tuple[str, str], int] = {}
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        subject = next(
            (
                line.split(":", 1)[1].strip()
                for line in envelope.content.decode(errors="replace").splitlines()
                if line.lower().startswith("subject:")
            ),
            "",
        )
        with self.lock:
            for rcpt in envelope.rcpt_tos:
                key = (rcpt, subject)
                self.seen[key] = self.seen.get(key, 0) + 1
        return "250 OK"


class SmsHandler(BaseHTTPRequestHandler):
    received: ClassVar[list[bytes]] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", "0"))
        SmsHandler.received.append(self.rfile.read(length))
        body = json.dumps({"sid": f"SM{uuid.uuid4().hex}"}).encode()
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        return


def noise_jpeg(width: int, height: int) -> bytes:
    image = Image.frombytes("RGB", (width, height), os.urandom(width * height * 3))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=92)
    return out.getvalue()


def data_url(data: bytes, media: str = "image/jpeg") -> str:
    return f"data:{media};base64,{base64.b64encode(data).decode()}"


async def make_route(client: httpx.AsyncClient, device: str, stops: int, contact: bool) -> Any:
    body = {
        "device": device,
        "planned_start": datetime.now(UTC).isoformat(),
        "stops": [
            {
                "lat": LAT,
                "lon": LON + 0.0005 * k,
                "name": f"Stop {k}",
                **({"email": f"c{k}@example.org", "phone": f"+4915{k:07d}"} if contact else {}),
            }
            for k in range(stops)
        ],
        "path": None,
    }
    r = await client.post("/api/v1/routes", json=body)
    r.raise_for_status()
    return r.json()


def report(stop: Any, photo: str | None, signature: str | None = None) -> dict[str, Any]:
    proof = {}
    if photo:
        proof["photo"] = photo
    if signature:
        proof["signature"] = signature
    return {
        "client_id": str(uuid.uuid4()),
        "status": "completed",
        "time": datetime.now(UTC).isoformat(),
        "location": {"lat": stop["lat"], "lon": stop["lon"]},
        "proof": proof,
    }


async def run(base: str, args: argparse.Namespace, inbox: Inbox) -> dict[str, Any]:
    results: dict[str, Any] = {}
    admin = {"Authorization": f"Bearer {ADMIN}"}
    async with httpx.AsyncClient(base_url=base, headers=admin, timeout=120) as client:
        r = await client.post("/api/v1/devices", json={"name": "Bench van", "unique_id": "bench-0"})
        r.raise_for_status()
        device = {"Authorization": f"Bearer {r.json()['token']}"}

        # 1. Uploads by size: one stop each, 5 per size.
        sizes: dict[str, Any] = {}
        for label, (w, h) in {
            "small": (400, 300),
            "medium": (1000, 800),
            "large": (1500, 1200),
        }.items():
            photo = noise_jpeg(w, h)
            route = await make_route(client, "bench-0", 6, contact=False)
            times = []
            for stop in route["stops"][:5]:
                t0 = time.perf_counter()
                r = await client.post(
                    f"/api/v1/routes/{route['id']}/stops/{stop['id']}/report",
                    json=report(stop, data_url(photo)),
                    headers=device,
                )
                times.append(time.perf_counter() - t0)
                r.raise_for_status()
            sizes[label] = {
                "upload_bytes": len(photo),
                "pixels": f"{w}x{h}",
                "median_ms": round(statistics.median(times) * 1000, 1),
                "max_ms": round(max(times) * 1000, 1),
            }
        results["uploads"] = sizes

        # 2. A backlog synced after an offline period: one report per stop, photo + signature.
        photo = data_url(noise_jpeg(600, 450))
        sig = Image.new("RGBA", (600, 200), (0, 0, 0, 0))
        for x in range(20, 580):
            sig.putpixel((x, 100 + (x % 40) - 20), (0, 0, 0, 255))
        out = io.BytesIO()
        sig.save(out, "PNG")
        signature = data_url(out.getvalue(), "image/png")
        route = await make_route(client, "bench-0", args.backlog, contact=False)
        backlog = [(s["id"], report(s, photo, signature)) for s in route["stops"]]
        t0 = time.perf_counter()
        for stop_id, body in backlog:
            r = await client.post(
                f"/api/v1/routes/{route['id']}/stops/{stop_id}/report", json=body, headers=device
            )
            r.raise_for_status()
        first = time.perf_counter() - t0
        # The phone never heard the answers: it sends the whole backlog again.
        t0 = time.perf_counter()
        for stop_id, body in backlog:
            r = await client.post(
                f"/api/v1/routes/{route['id']}/stops/{stop_id}/report", json=body, headers=device
            )
            r.raise_for_status()
        again = time.perf_counter() - t0
        conn = await asyncpg.connect(BENCH_DB)
        try:
            rows = await conn.fetchval(
                "SELECT count(*) FROM stop_reports r JOIN stops s ON s.id = r.stop_id "
                "WHERE s.route_id = $1",
                route["id"],
            )
            proofs = await conn.fetchval(
                "SELECT count(*) FROM proofs p JOIN stops s "
                "ON s.id = p.stop_id WHERE s.route_id = $1",
                route["id"],
            )
        finally:
            await conn.close()
        results["offline_sync"] = {
            "reports": len(backlog),
            "request_bytes_each": len(json.dumps(backlog[0][1])),
            "sync_s": round(first, 2),
            "reports_per_s": round(len(backlog) / first, 1),
            "resent_s": round(again, 2),
            "rows_stored": rows,
            "proof_rows": proofs,
        }

        # 3. Messages: out for delivery to every stop, by e-mail and SMS.
        SmsHandler.received.clear()
        t0 = time.perf_counter()
        route = await make_route(client, "bench-0", args.messages, contact=True)
        expected = args.messages
        deadline = time.time() + 300
        while time.time() < deadline:
            with inbox.lock:
                mails = sum(inbox.seen.values())
            if mails >= expected and len(SmsHandler.received) >= expected:
                break
            await asyncio.sleep(0.1)
        elapsed = time.perf_counter() - t0
        with inbox.lock:
            dupes = sum(1 for n in inbox.seen.values() if n > 1)
            mails = sum(inbox.seen.values())
        results["messages"] = {
            "stops": args.messages,
            "emails_received": mails,
            "sms_received": len(SmsHandler.received),
            "duplicates": dupes,
            "all_delivered_s": round(elapsed, 2),
            "messages_per_s": round((mails + len(SmsHandler.received)) / elapsed, 1),
        }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backlog", type=int, default=200, help="reports queued offline")
    parser.add_argument("--messages", type=int, default=200, help="stops with e-mail and phone")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    inbox = Inbox()
    smtp_port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=smtp_port)
    controller.start()
    sms = ThreadingHTTPServer(("127.0.0.1", 0), SmsHandler)
    threading.Thread(target=sms.serve_forever, daemon=True).start()
    env = {
        "TRACKER_SMTP_HOST": "127.0.0.1",
        "TRACKER_SMTP_PORT": str(smtp_port),
        "TRACKER_SMTP_TLS": "off",
        "TRACKER_SMS_URL": f"http://127.0.0.1:{sms.server_address[1]}/Messages.json",
        "TRACKER_MESSAGE_POLL_S": "0.05",
    }
    try:
        with running_server(BENCH_DB, ADMIN, env) as server:
            results = asyncio.run(run(server.base, args, inbox))
    finally:
        controller.stop()
        sms.shutdown()
    results["cpus"] = os.cpu_count()
    print_results(results, args.json)


if __name__ == "__main__":
    main()
