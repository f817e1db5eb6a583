"""Customer messages: queued when things happen, sent by a loop on every instance.

`Notifications` queues what the API knows about (a new route's out-for-delivery messages,
which carry the tracking link only the creating request has; a confirmed reschedule); route
events queue the rest through `store.messages.event_sink`. `MessageSender` works the
outbox like the webhook sender does: claim due rows (any number of instances), render the
company's template (or the built-in one) in the stop's language, respect opt-outs and quiet
hours, send by SMTP (aiosmtplib) or an HTTP SMS API in Twilio's Messages shape (form fields
To, From, Body; HTTP basic auth; the answer's `sid` is kept), then settle: sent, retried
with exponential backoff on temporary errors (network, SMTP 4xx, HTTP 429 and 5xx) until
TRACKER_MESSAGE_MAX_ATTEMPTS, failed on permanent ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any
from zoneinfo import ZoneInfo

import aiosmtplib
import asyncpg
import httpx

from tracker import metrics
from tracker.config import Settings
from tracker.core import notices, webhooks
from tracker.core.model import JsonDict, StopStatus
from tracker.core.timeparse import TimeFormatError, parse_time
from tracker.store import messages as store
from tracker.store.db import DB_ERRORS

log = logging.getLogger(__name__)
_MAX_ERROR = 500


def channels(settings: Settings) -> list[str]:
    """The channels this server can send on (configured ones only)."""
    out = []
    if settings.smtp_host:
        out.append("email")
    if settings.sms_url:
        out.append("sms")
    return out


class Notifications:
    """Queues the messages the API learns about first."""

    def __init__(self, pool: asyncpg.Pool, settings: Settings) -> None:
        self._pool = pool
        self._settings = settings

    async def route_created(self, route: JsonDict) -> None:
        """Out-for-delivery messages for every stop of a new route (due at its planned
        start), with each stop's tracking link from the creating reply."""
        start = parse_time(route["planned_start"])
        items = [
            (int(s["id"]), notices.OUT_FOR_DELIVERY, s.get("tracking_url"), start)
            for s in route["stops"]
        ]
        await store.enqueue(
            self._pool, items, self._settings.message_language, channels(self._settings)
        )

    async def rescheduled(self, conn: asyncpg.Connection, stop_id: int) -> None:
        """The dispatcher confirmed a customer's request (in that transaction)."""
        await store.enqueue(
            conn,
            [(stop_id, notices.RESCHEDULED, None, None)],
            self._settings.message_language,
            channels(self._settings),
        )


class SendError(Exception):
    """An attempt that did not go out; `permanent` ones are not retried."""

    def __init__(self, message: str, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


class MessageSender:
    """Sends due customer messages, a few at a time."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        settings: Settings,
        jitter: Callable[[], float] = random.random,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._pool = pool
        self._settings = settings
        self._jitter = jitter
        self._clock = clock
        self._zone = ZoneInfo(settings.message_timezone)
        self._quiet = notices.parse_quiet_hours(settings.message_quiet_hours)
        self._lease_s = 2.0 * settings.message_timeout_s + 30.0
        self.sent = 0

    async def run(self) -> None:
        """Work the outbox until cancelled."""
        async with httpx.AsyncClient(
            timeout=httpx.Timeout(self._settings.message_timeout_s),
            follow_redirects=False,
            trust_env=False,
        ) as client:
            while True:
                try:
                    due = await store.claim(self._pool, 8, self._lease_s)
                except (*DB_ERRORS, asyncpg.PostgresError) as exc:
                    log.warning("message outbox unavailable: %r", exc)
                    due = []
                if due:
                    await asyncio.gather(*(self._attempt(client, m) for m in due))
                else:
                    await asyncio.sleep(self._settings.message_poll_s)

    # -- one attempt ----------------------------------------------------------------------------

    async def _attempt(self, client: httpx.AsyncClient, message: store.Claimed) -> None:
        try:
            await self._settle(client, message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # The lease runs out and another attempt follows; nothing is lost.
            log.warning("message %s: could not settle: %r", message.id, exc)

    async def _settle(self, client: httpx.AsyncClient, message: store.Claimed) -> None:
        stale = self._stale(message)
        if stale is not None:
            await store.finish(self._pool, message, store.CANCELLED, error=stale)
            metrics.MESSAGES.labels(message.channel, "cancelled").inc()
            return
        if await store.opted_out(self._pool, message.stop_id):
            await store.finish(
                self._pool, message, store.SUPPRESSED, error="the customer opted out"
            )
            metrics.MESSAGES.labels(message.channel, "suppressed").inc()
            return
        now = self._clock()
        until = notices.quiet_until(now.astimezone(self._zone), self._quiet)
        if until is not None:
            if message.kind in notices.TIME_SENSITIVE:
                await store.finish(self._pool, message, store.SUPPRESSED, error="quiet hours")
                metrics.MESSAGES.labels(message.channel, "suppressed").inc()
            else:
                # Not an attempt: the count stays as it was before this claim.
                await store.finish(
                    self._pool, message, store.PENDING, error="quiet hours", due=until
                )
                await self._pool.execute(
                    "UPDATE messages SET attempts = attempts - 1 WHERE id = $1", message.id
                )
            return
        text = await self._render(message)
        try:
            if message.channel == "email":
                provider_id = await self._email(message, text)
            else:
                provider_id = await self._sms(client, message, text)
        except SendError as exc:
            error = str(exc)[:_MAX_ERROR]
            if exc.permanent or message.attempt >= self._settings.message_max_attempts:
                await store.finish(
                    self._pool,
                    message,
                    store.FAILED,
                    subject=text.subject,
                    body=text.body,
                    error=error,
                )
                metrics.MESSAGES.labels(message.channel, "failed").inc()
            else:
                delay = webhooks.retry_delay(
                    message.attempt,
                    self._settings.message_retry_base_s,
                    self._settings.message_retry_max_s,
                    self._jitter(),
                )
                await store.finish(
                    self._pool,
                    message,
                    store.PENDING,
                    subject=text.subject,
                    body=text.body,
                    error=error,
                    retry_in_s=delay,
                )
                metrics.MESSAGES.labels(message.channel, "retry").inc()
            return
        self.sent += 1
        metrics.MESSAGES.labels(message.channel, "sent").inc()
        await store.finish(
            self._pool,
            message,
            store.SENT,
            subject=text.subject,
            body=text.body,
            provider_id=provider_id,
        )

    def _stale(self, message: store.Claimed) -> str | None:
        """Why the message no longer makes sense (the stop moved on), or None."""
        status = message.stop["status"]
        if message.kind in (notices.OUT_FOR_DELIVERY, notices.ARRIVING) and (
            status in StopStatus.DONE
        ):
            return f"the stop is already {status}"
        if message.kind == notices.DELIVERED and status != StopStatus.COMPLETED:
            return f"the stop is {status}, not completed"
        if message.kind == notices.FAILED and status != StopStatus.FAILED:
            return f"the stop is {status}, not failed"
        return None

    # -- rendering ------------------------------------------------------------------------------

    def _clock_text(self, value: Any) -> str:
        if isinstance(value, str):
            try:
                value = parse_time(value)
            except TimeFormatError:
                return ""
        if not isinstance(value, datetime):
            return ""
        return value.astimezone(self._zone).strftime("%H:%M")

    def _window(self, stop: dict[str, Any]) -> str:
        start, end = stop["window_start"], stop["window_end"]
        if start is None or end is None:
            return ""
        day = start.astimezone(self._zone).strftime("%d.%m.")
        return f"{day} {self._clock_text(start)}–{self._clock_text(end)}"

    async def _render(self, message: store.Claimed) -> notices.Template:
        language = message.language
        stop = message.stop
        outcome: dict[str, Any] = stop["outcome"]
        template = await store.template(self._pool, message.kind, message.channel, language)
        if template is None:
            template = notices.default_template(message.kind, message.channel, language)
        reason = notices.label(notices.REASONS, outcome.get("reason_code"), language)
        if outcome.get("reason_text"):
            reason = f"{reason} ({outcome['reason_text']})" if reason else outcome["reason_text"]
        received = outcome.get("recipient_name") or ""
        pin = stop["pin"] if message.kind == notices.OUT_FOR_DELIVERY else None
        values = {
            "company": self._settings.company_name,
            "recipient": stop["recipient"] or stop["name"] or "",
            "name": stop["name"] or "",
            "address": stop["address"] or stop["name"] or "",
            "link": message.link or "",
            "window": self._window(stop),
            "eta": self._clock_text(stop["eta"]),
            "time": self._clock_text(stop["completed_at"] or self._clock()),
            "reason": reason,
            "next_step": notices.label(notices.NEXT_STEPS, outcome.get("next_step"), language),
            "received_by": f" ({received})" if received else "",
            "pin": f"PIN: {pin}" if pin else "",
        }
        return notices.render(template, values)

    # -- channels -------------------------------------------------------------------------------

    async def _email(self, message: store.Claimed, text: notices.Template) -> str | None:
        s = self._settings
        mail = EmailMessage()
        mail["From"] = s.smtp_from
        mail["To"] = message.recipient
        mail["Subject"] = text.subject
        mail["Message-ID"] = f"<tracker-message-{message.id}@{s.smtp_from.split('@')[-1]}>"
        mail.set_content(text.body)
        if message.kind == notices.DELIVERED:
            for proof in await store.proofs_of(self._pool, message.stop_id):
                maintype, subtype = proof["media_type"].split("/")
                mail.add_attachment(
                    bytes(proof["data"]),
                    maintype=maintype,
                    subtype=subtype,
                    filename=f"{proof['kind']}-{proof['id']}.{subtype.replace('jpeg', 'jpg')}",
                )
        try:
            await aiosmtplib.send(
                mail,
                hostname=s.smtp_host,
                port=s.smtp_port,
                username=s.smtp_username,
                password=s.smtp_password,
                use_tls=s.smtp_tls == "tls",
                start_tls=s.smtp_tls == "starttls",
                timeout=s.message_timeout_s,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients]
            detail = "; ".join(f"{r.code} {r.message}" for r in exc.recipients)
            raise SendError(f"SMTP refused: {detail}", all(c >= 500 for c in codes)) from exc
        except aiosmtplib.SMTPResponseException as exc:
            # 5xx: the server will never take it (a bad address); 4xx: try again later.
            raise SendError(f"SMTP {exc.code}: {exc.message}", exc.code >= 500) from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise SendError(f"SMTP: {type(exc).__name__}: {exc}", False) from exc
        return str(mail["Message-ID"])

    async def _sms(
        self, client: httpx.AsyncClient, message: store.Claimed, text: notices.Template
    ) -> str | None:
        s = self._settings
        assert s.sms_url is not None
        form = {"To": message.recipient, "From": s.sms_from, "Body": text.body}
        try:
            if s.sms_account:
                auth = (s.sms_account, s.sms_token or "")
                response = await client.post(s.sms_url, data=form, auth=auth)
            else:
                response = await client.post(s.sms_url, data=form)
        except httpx.HTTPError as exc:
            raise SendError(f"SMS API: {type(exc).__name__}: {exc}", False) from exc
        if 200 <= response.status_code < 300:
            with contextlib.suppress(ValueError, AttributeError):
                sid = response.json().get("sid")
                return None if sid is None else str(sid)
            return None
        detail = response.text[:200]
        with contextlib.suppress(ValueError, AttributeError):
            detail = str(response.json().get("message") or detail)
        temporary = response.status_code == 429 or response.status_code >= 500
        raise SendError(f"SMS API HTTP {response.status_code}: {detail}", not temporary)


def message_json(row: dict[str, Any]) -> JsonDict:
    """A message as the dispatcher's listing shows it."""
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()}


def known_kind(kind: str) -> bool:
    """Whether `kind` is a message kind."""
    return kind in notices.KINDS


__all__: Sequence[str] = ("MessageSender", "Notifications", "channels", "message_json")
