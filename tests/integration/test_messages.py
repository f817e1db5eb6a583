"""Customer messages for real: a real SMTP server (aiosmtpd) receives every e-mail and the
test reads it; a local HTTP server plays the SMS provider (Twilio's Messages API shape),
with error answers and retries. Out for delivery (with the tracking link), arriving soon,
delivered (with the proof attached), failed (with the next step) and rescheduled go out once
each, in the stop's language, from the company's template when it wrote one; opted-out
addresses get nothing, and the dispatcher's listing shows every message's status.

A database of its own: only the servers started here work its message outbox.
"""

from __future__ import annotations

import asyncio
import base64
import email
import email.policy
import io
import threading
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any
from urllib.parse import parse_qs

import asyncpg
import pytest
import uvicorn
from aiosmtpd.controller import Controller
from PIL import Image

from tests.conftest import DeviceCreds, Server, ServerFactory, add_device, free_port, own_database

Json = dict[str, Any]
LAT, LON = 48.137, 11.575
DELIVERED_BODY = "Hi $recipient, done at $time$received_by."


@dataclass
class Mailbox:
    """An aiosmtpd handler: keeps every message; answers 451 to the first attempt for
    `busy@...` (a temporary refusal, so the sender must retry)."""

    messages: list[EmailMessage] = field(default_factory=list)
    refused: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if address.startswith("busy@") and self.refused == 0:
            self.refused += 1
            return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        with self.lock:
            self.messages.append(parsed)
        return "250 Message accepted"

    def to(self, address: str) -> list[EmailMessage]:
        with self.lock:
            return [m for m in self.messages if m["To"] == address]


@dataclass
class SmsProvider:
    """A Twilio-like Messages endpoint: 201 {"sid"}; 400 for +4900000 (not a mobile number,
    permanent); 503 twice for +4922222 (then it works)."""

    received: list[dict[str, str]] = field(default_factory=list)
    answers: list[int] = field(default_factory=list)
    auth: list[str] = field(default_factory=list)
    port: int = 0
    server: uvicorn.Server | None = None
    task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/2010-04-01/Accounts/AC123/Messages.json"

    async def app(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        self.auth.append(headers.get("authorization", ""))
        to = form.get("To", "")
        tries = sum(1 for r in self.received if r.get("To") == to)
        self.received.append(form)
        if to == "+4900000":
            status, reply = 400, b'{"code": 21614, "message": "To number is not a mobile"}'
        elif to == "+4922222" and tries < 2:
            status, reply = 503, b'{"message": "busy"}'
        else:
            status, reply = 201, b'{"sid": "SM' + uuid.uuid4().hex.encode() + b'"}'
        self.answers.append(status)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": reply})

    async def start(self) -> None:
        self.port = free_port()
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, log_level="warning", interface="asgi3"
        )
        self.server = uvicorn.Server(config)
        self.task = asyncio.create_task(self.server.serve())
        while not self.server.started:
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        assert self.server is not None and self.task is not None
        self.server.should_exit = True
        await self.task

    def bodies(self, to: str) -> list[str]:
        return [
            r["Body"]
            for r, a in zip(self.received, self.answers, strict=True)
            if r["To"] == to and a == 201
        ]


@pytest.fixture(scope="module")
async def message_db() -> AsyncIterator[str]:
    async with own_database("messages") as url:
        yield url


@pytest.fixture
async def mailbox() -> AsyncIterator[tuple[Mailbox, int]]:
    box = Mailbox()
    port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    yield box, port
    controller.stop()


@pytest.fixture
async def sms() -> AsyncIterator[SmsProvider]:
    provider = SmsProvider()
    await provider.start()
    yield provider
    await provider.stop()


async def wait_for(check: Any, timeout: float = 20.0) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = check()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError("timed out waiting")
        await asyncio.sleep(0.05)


def text(mail: EmailMessage) -> str:
    body = mail.get_body(("plain",))
    assert body is not None
    content: str = body.get_content()
    return content


def photo_url() -> str:
    out = io.BytesIO()
    Image.new("RGB", (320, 240), (20, 120, 200)).save(out, "JPEG")
    return "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode()


async def report(srv: Server, dev: DeviceCreds, route: Json, k: int, **body: Any) -> Json:
    stop = route["stops"][k]
    payload = {
        "client_id": str(uuid.uuid4()),
        "time": datetime.now(UTC).isoformat(),
        "location": {"lat": stop["lat"], "lon": stop["lon"]},
        **body,
    }
    async with srv.client() as client:
        r = await client.post(
            f"/api/v1/routes/{route['id']}/stops/{stop['id']}/report",
            json=payload,
            headers=dev.headers,
        )
    assert r.status_code == 200, r.text
    result: Json = r.json()
    return result


async def test_every_message_once_by_email_and_sms(
    server_factory: ServerFactory,
    message_db: str,
    mailbox: tuple[Mailbox, int],
    sms: SmsProvider,
) -> None:
    box, smtp_port = mailbox
    srv = await server_factory(
        database_url=message_db,
        smtp_host="127.0.0.1",
        smtp_port=smtp_port,
        smtp_tls="off",
        smtp_from="deliveries@shop.example",
        sms_url=sms.url,
        sms_account="AC123",
        sms_token="secret-token",
        sms_from="+4912345",
        company_name="Shop",
        message_poll_s=0.05,
        message_retry_base_s=0.2,
        message_retry_max_s=0.5,
        message_max_attempts=4,
        arriving_s=10_000_000.0,  # the first ping makes every stop "arriving"
        public_url="https://track.shop.example",
    )
    dev = await add_device(srv)
    async with srv.admin() as client:
        # The company's own English e-mail for deliveries, with a placeholder checked.
        r = await client.put(
            "/api/v1/message-templates/delivered/email/en",
            json={
                "subject": "Shop: delivered!",
                "body": "Hi $recipient, done at $time$received_by.",
            },
        )
        assert r.status_code == 200, r.text
        r = await client.put(
            "/api/v1/message-templates/delivered/sms/en", json={"body": "Hi $nobody"}
        )
        assert r.status_code == 400 and "$nobody" in r.json()["message"]
        windows = [{"window_start": "2026-12-06T09:00:00Z", "window_end": "2026-12-06T11:00:00Z"}]
        stops = [
            {
                "lat": LAT,
                "lon": LON,
                "name": "Huber",
                "recipient": "Anna Huber",
                "email": "anna@example.org",
                "phone": "+4922222",
                "language": "de",
                "address": "Residenzstr. 1",
            },
            {
                "lat": LAT,
                "lon": LON + 0.003,
                "name": "Schmid",
                "recipient": "Bo Schmid",
                "email": "busy@example.org",
                "phone": "+4900000",
                "address": "Hofgraben 4",
                "reschedule_windows": windows,
            },
            {"lat": LAT, "lon": LON + 0.006, "name": "Quiet", "email": "quiet@example.org"},
            {"lat": LAT, "lon": LON + 0.009, "name": "No contact"},
        ]
        # quiet@ opted out on an earlier delivery.
        pool = await asyncpg.connect(message_db)
        try:
            await pool.execute(
                "INSERT INTO message_opt_outs (address) VALUES ('quiet@example.org')"
            )
        finally:
            await pool.close()
        r = await client.post(
            "/api/v1/routes",
            json={
                "device": dev.unique_id,
                "planned_start": datetime.now(UTC).isoformat(),
                "stops": stops,
                "path": None,
            },
        )
        assert r.status_code == 201, r.text
        route = r.json()
    links = [s["tracking_url"] for s in route["stops"]]

    # Out for delivery: German for Anna with her link, English for Bo after one 451.
    anna = (await wait_for(lambda: box.to("anna@example.org")))[0]
    assert anna["Subject"] == "Shop: Ihre Lieferung ist unterwegs"
    assert anna["From"] == "deliveries@shop.example"
    assert links[0] in anna.get_content() and "Residenzstr. 1" in anna.get_content()
    bo = (await wait_for(lambda: box.to("busy@example.org")))[0]
    assert bo["Subject"] == "Shop: your delivery is on its way" and links[1] in bo.get_content()
    assert box.refused == 1  # the first try was refused for now, the retry got through
    sms_anna = await wait_for(lambda: sms.bodies("+4922222"))
    assert links[0] in sms_anna[0] and "unterwegs" in sms_anna[0]
    assert sms.auth[0] == "Basic " + base64.b64encode(b"AC123:secret-token").decode()

    # A ping: every stop is "arriving" (the threshold is huge): one message each.
    async with srv.client() as client:
        r = await client.post(
            "/api/v1/positions",
            json={
                "positions": [
                    {
                        "time": datetime.now(UTC).isoformat(),
                        "lat": LAT,
                        "lon": LON - 0.002,
                        "speed": 8.0,
                    }
                ]
            },
            headers=dev.headers,
        )
    assert r.status_code == 202
    arriving = await wait_for(
        lambda: [m for m in box.to("anna@example.org") if m["Subject"] == "Shop: gleich da"]
    )
    assert "unser Fahrer ist gegen" in arriving[0].get_content()

    # Delivered with a photo: the company's template, the photo attached.
    await report(
        srv, dev, route, 0, status="completed", proof={"photo": photo_url(), "name": "A. Huber"}
    )
    delivered = await wait_for(
        lambda: [m for m in box.to("anna@example.org") if m["Subject"] == "Shop: zugestellt"]
    )
    # Anna's language is German: the company wrote only English, so the built-in German one.
    assert "(A. Huber)" in text(delivered[0])
    attachments = list(delivered[0].iter_attachments())
    assert [a.get_content_type() for a in attachments] == ["image/jpeg"]
    assert attachments[0].get_content()[:3] == b"\xff\xd8\xff"

    # Failed, with the next step; then a reschedule the dispatcher confirms.
    await report(
        srv, dev, route, 1, status="failed", reason_code="not_home", next_step="retry_today"
    )
    failed = await wait_for(
        lambda: [m for m in box.to("busy@example.org") if "could not deliver" in m["Subject"]]
    )
    body = failed[0].get_content()
    assert "nobody was home" in body and "we will try again later today" in body
    token = links[1].rsplit("/", 1)[1]
    async with srv.client() as client:
        r = await client.post(f"/t/{token}/reschedule", json={"window": 0})
    assert r.status_code == 201, r.text
    async with srv.admin() as client:
        pending = (await client.get("/api/v1/reschedules?status=pending")).json()["requests"]
        r = await client.post(
            f"/api/v1/reschedules/{pending[0]['id']}", json={"decision": "confirm"}
        )
        assert r.status_code == 200
    moved = await wait_for(
        lambda: [m for m in box.to("busy@example.org") if "was moved" in m["Subject"]]
    )
    assert "06.12. 09:00–11:00" in moved[0].get_content()

    # The dispatcher's listing tells every message's fate.
    await asyncio.sleep(1.0)  # let retries settle
    async with srv.admin() as client:
        r = await client.get(f"/api/v1/messages?route_id={route['id']}&limit=1000")
    assert r.status_code == 200
    listed = r.json()["messages"]
    assert all("link" not in m and "tracking_url" not in m for m in listed)
    by = {(m["stop_id"], m["kind"], m["channel"]): m for m in listed}
    s1, s2, s3, s4 = (s["id"] for s in route["stops"])
    assert by[(s1, "out_for_delivery", "sms")]["status"] == "sent"
    assert by[(s1, "out_for_delivery", "sms")]["attempts"] == 3  # 503, 503, 201
    assert by[(s1, "out_for_delivery", "sms")]["provider_id"].startswith("SM")
    assert by[(s2, "out_for_delivery", "sms")]["status"] == "failed"
    assert "HTTP 400" in by[(s2, "out_for_delivery", "sms")]["last_error"]
    assert by[(s2, "out_for_delivery", "sms")]["attempts"] == 1  # permanent: no retry
    assert by[(s2, "out_for_delivery", "email")]["attempts"] == 2
    assert by[(s3, "out_for_delivery", "email")]["status"] == "suppressed"
    assert not any(k[0] == s4 for k in by)
    for kind in ("out_for_delivery", "arriving", "delivered"):
        assert by[(s1, kind, "email")]["status"] == "sent", kind
    assert by[(s2, "failed", "email")]["status"] == "sent"
    assert by[(s2, "rescheduled", "email")]["status"] == "sent"
    # Every e-mail once: no (recipient, subject) twice.
    subjects = [(m["To"], m["Subject"]) for m in box.messages]
    assert len(subjects) == len(set(subjects))
    assert not box.to("quiet@example.org")
    # The link is forgotten once sent: it lives nowhere in plain text any more.
    conn = await asyncpg.connect(message_db)
    try:
        kept = await conn.fetchval(
            "SELECT count(*) FROM messages WHERE link IS NOT NULL AND status <> 'pending'"
        )
    finally:
        await conn.close()
    assert kept == 0
    async with srv.admin() as client:
        scrape = (await client.get("/metrics")).text
    assert 'tracker_messages_total{channel="sms",outcome="retry"}' in scrape
    assert 'tracker_messages_total{channel="email",outcome="sent"}' in scrape


async def test_english_company_template_is_used(
    server_factory: ServerFactory, message_db: str, mailbox: tuple[Mailbox, int]
) -> None:
    box, smtp_port = mailbox
    srv = await server_factory(
        database_url=message_db,
        smtp_host="127.0.0.1",
        smtp_port=smtp_port,
        smtp_tls="off",
        message_poll_s=0.05,
        company_name="Shop",
    )
    dev = await add_device(srv)
    address = f"eve-{uuid.uuid4().hex[:6]}@example.org"
    async with srv.admin() as client:
        r = await client.put(
            "/api/v1/message-templates/delivered/email/en",
            json={
                "subject": "Shop: delivered!",
                "body": "Hi $recipient, done at $time$received_by.",
            },
        )
        assert r.status_code == 200
        r = await client.post(
            "/api/v1/routes",
            json={
                "device": dev.unique_id,
                "planned_start": (datetime.now(UTC) + timedelta(hours=3)).isoformat(),
                "stops": [
                    {"lat": LAT, "lon": LON, "recipient": "Eve", "email": address},
                    {"lat": LAT, "lon": LON + 0.01},
                ],
                "path": None,
            },
        )
        route = r.json()
    await report(srv, dev, route, 0, status="completed", proof={"name": "Eve"})
    mail = await wait_for(lambda: box.to(address))
    assert mail[0]["Subject"] == "Shop: delivered!"
    assert text(mail[0]).strip().startswith("Hi Eve, done at ")
    assert text(mail[0]).strip().endswith("(Eve).")
    # The out-for-delivery message waits for the planned start, 3 h away (and, the stop
    # being done by then, will be cancelled instead of sent).
    await asyncio.sleep(0.5)
    assert len(box.to(address)) == 1


async def test_quiet_hours_hold_messages_and_drop_arriving_ones(
    server_factory: ServerFactory, message_db: str, mailbox: tuple[Mailbox, int]
) -> None:
    box, smtp_port = mailbox
    now = datetime.now(UTC)
    start, end = now - timedelta(hours=1), now + timedelta(hours=1)
    quiet = f"{start:%H:%M}-{end:%H:%M}"
    srv = await server_factory(
        database_url=message_db,
        smtp_host="127.0.0.1",
        smtp_port=smtp_port,
        smtp_tls="off",
        message_poll_s=0.05,
        message_quiet_hours=quiet,
        arriving_s=10_000_000.0,
    )
    dev = await add_device(srv)
    address = f"night-{uuid.uuid4().hex[:6]}@example.org"
    async with srv.admin() as client:
        r = await client.post(
            "/api/v1/routes",
            json={
                "device": dev.unique_id,
                "planned_start": now.isoformat(),
                "stops": [
                    {"lat": LAT, "lon": LON, "email": address},
                    {"lat": LAT, "lon": LON + 0.01},
                ],
                "path": None,
            },
        )
        assert r.status_code == 201
        route = r.json()
    async with srv.client() as client:
        r = await client.post(
            "/api/v1/positions",
            json={"positions": [{"time": now.isoformat(), "lat": LAT, "lon": LON - 0.002}]},
            headers=dev.headers,
        )
    assert r.status_code == 202

    stop_id = route["stops"][0]["id"]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    rows: dict[str, Any] = {}
    while loop.time() < deadline:
        conn = await asyncpg.connect(message_db)
        try:
            rows = {
                r["kind"]: r
                for r in await conn.fetch(
                    "SELECT kind, status, attempts, last_error, next_attempt_at FROM messages "
                    "WHERE stop_id = $1",
                    stop_id,
                )
            }
        finally:
            await conn.close()
        out = rows.get("out_for_delivery")
        arriving = rows.get("arriving")
        if (
            out is not None
            and out["last_error"]
            and arriving is not None
            and (arriving["status"] != "pending")
        ):
            break
        await asyncio.sleep(0.1)
    out, arriving = rows["out_for_delivery"], rows["arriving"]
    # Held until the quiet hours end, not counted as an attempt; the stale one dropped.
    assert (out["status"], out["last_error"], out["attempts"]) == ("pending", "quiet hours", 0)
    wait = (out["next_attempt_at"] - now).total_seconds()
    assert 3000 < wait < 3700, wait
    assert (arriving["status"], arriving["last_error"]) == ("suppressed", "quiet hours")
    assert box.to(address) == []
