"""The webhook sender: a loop on every instance that works the outbox in PostgreSQL.

It claims due deliveries (any number of instances may run it: claiming skips rows another
worker holds), POSTs each signed body, logs the attempt, and settles the delivery:
delivered on any 2xx, else retried with exponential backoff until
TRACKER_WEBHOOK_MAX_ATTEMPTS, then failed. Delivery is at least once: a receiver that
answers 2xx after this process died mid-attempt gets the delivery again later, with the
same `Tracker-Delivery` id to recognise it by.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime

import asyncpg
import httpx

from tracker import metrics
from tracker.config import Settings
from tracker.core import destinations, webhooks
from tracker.services.destinations import Resolver, resolve, system_resolver
from tracker.store import webhooks as store
from tracker.store.db import DB_ERRORS

log = logging.getLogger(__name__)

USER_AGENT = "tracker-webhooks/1"
# An attempt's outcome in the metrics, by the status it leaves the delivery in.
_OUTCOMES = {store.DELIVERED: "delivered", store.PENDING: "retry", store.FAILED: "failed"}
# What an attempt's log says when no HTTP status came back: a short reason from this fixed
# set, never the library's error text (which told ports, addresses and TLS details apart).
TIMED_OUT = "timed out"
CONNECT_FAILED = "connect failed"
PROTOCOL_ERROR = "protocol error"
REQUEST_FAILED = "request failed"


class WebhookSender:
    """Sends due webhook deliveries with at most `webhook_concurrency` requests in flight."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        settings: Settings,
        jitter: Callable[[], float] = random.random,
        resolver: Resolver = system_resolver,
    ) -> None:
        self._pool = pool
        self._settings = settings
        self._jitter = jitter
        # Replaceable (tests count lookups); every connection is made to what it answered.
        self.resolver = resolver
        self.allowed = destinations.parse_networks(settings.webhook_allow_cidrs)
        self._concurrency = max(1, settings.webhook_concurrency)
        # An attempt that outlives this is presumed dead and the delivery is retried.
        self._lease_s = 2.0 * settings.webhook_timeout_s + 30.0
        self.sent = 0

    async def run(self) -> None:
        """Work the outbox until cancelled."""
        timeout = httpx.Timeout(self._settings.webhook_timeout_s)
        limits = httpx.Limits(max_connections=self._concurrency)
        inflight: set[asyncio.Task[None]] = set()
        async with httpx.AsyncClient(
            timeout=timeout, limits=limits, follow_redirects=False, trust_env=False
        ) as client:
            try:
                while True:
                    free = self._concurrency - len(inflight)
                    if free > 0:
                        for delivery in await self._claim(free):
                            task = asyncio.create_task(self._attempt(client, delivery))
                            inflight.add(task)
                            task.add_done_callback(inflight.discard)
                    poll = self._settings.webhook_poll_s
                    if inflight:
                        await asyncio.wait(
                            set(inflight), timeout=poll, return_when=asyncio.FIRST_COMPLETED
                        )
                    else:
                        await asyncio.sleep(poll)
            finally:
                for task in inflight:
                    task.cancel()
                with contextlib.suppress(Exception):
                    await asyncio.gather(*inflight, return_exceptions=True)

    async def check(self, url: str, timeout_s: float = 2.0) -> None:
        """Registration: refuse a URL whose host resolves to an address not permitted
        (`destinations.Refused`). A name that does not resolve (yet) is accepted: every
        attempt checks again before it connects."""
        try:
            await resolve(url, self.allowed, self.resolver, timeout_s)
        except destinations.Refused as exc:
            if exc.reason != destinations.UNRESOLVED:
                raise

    async def _claim(self, limit: int) -> list[store.Claimed]:
        try:
            return await store.claim(self._pool, limit, self._lease_s)
        except (*DB_ERRORS, asyncpg.PostgresError) as exc:
            log.warning("webhook outbox unavailable: %r", exc)
            return []

    async def _attempt(self, client: httpx.AsyncClient, delivery: store.Claimed) -> None:
        try:
            if not delivery.active:
                await store.finish(self._pool, delivery, None, store.CANCELLED)
                metrics.WEBHOOK_DELIVERIES.labels("cancelled").inc()
                return
            attempt = await self._post(client, delivery)
            code = attempt.status_code
            if code is not None and 200 <= code < 300:
                status, retry_in = store.DELIVERED, None
                self.sent += 1
            elif delivery.attempt >= self._settings.webhook_max_attempts:
                status, retry_in = store.FAILED, None
            else:
                status = store.PENDING
                retry_in = webhooks.retry_delay(
                    delivery.attempt,
                    self._settings.webhook_retry_base_s,
                    self._settings.webhook_retry_max_s,
                    self._jitter(),
                )
            await store.finish(self._pool, delivery, attempt, status, retry_in)
            metrics.WEBHOOK_DELIVERIES.labels(_OUTCOMES[status]).inc()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # The lease runs out and another attempt follows; nothing is lost.
            log.warning("webhook delivery %s: could not settle: %r", delivery.public_id, exc)

    async def _post(self, client: httpx.AsyncClient, delivery: store.Claimed) -> store.Attempt:
        """One signed POST; the response body is never read (only the status counts)."""
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            webhooks.DELIVERY_HEADER: delivery.public_id,
            webhooks.EVENT_HEADER: delivery.event_type,
            webhooks.SIGNATURE_HEADER: webhooks.signature_header(
                delivery.secret, timestamp, delivery.body
            ),
        }
        started = datetime.now(UTC)
        t0 = time.perf_counter()
        code, error = await post_pinned(
            client,
            delivery.url,
            delivery.body,
            headers,
            self.allowed,
            self.resolver,
            self._settings.webhook_timeout_s,
        )
        duration_ms = (time.perf_counter() - t0) * 1000.0
        return store.Attempt(started, round(duration_ms, 1), code, error)


async def post_pinned(
    client: httpx.AsyncClient,
    url: str,
    body: bytes,
    headers: dict[str, str],
    allowed: tuple[destinations.IPNetwork, ...],
    resolver: Resolver,
    timeout_s: float,
) -> tuple[int | None, str | None]:
    """POST `body` to `url` at the address its host resolves to now, if that address is
    permitted: (status code, None), or (None, a short reason).

    Resolved and judged once, connected to exactly that address: a name that changes its
    answer between the check and the connection cannot lead inside. The receiver still sees
    its own name: as `Host`, and as the TLS server name its certificate is checked against.
    """
    try:
        t, addresses = await resolve(url, allowed, resolver, timeout_s)
        extensions = {"sni_hostname": t.host} if t.url.scheme == "https" else {}
        async with client.stream(
            "POST",
            destinations.pinned_url(t, addresses[0]),
            content=body,
            headers={**headers, "Host": t.host_header},
            extensions=extensions,
        ) as response:
            return response.status_code, None
    except destinations.Refused as exc:
        return None, exc.reason
    except httpx.TimeoutException:
        return None, TIMED_OUT
    except httpx.ConnectError:
        return None, CONNECT_FAILED
    except httpx.ProtocolError:
        return None, PROTOCOL_ERROR
    except (httpx.HTTPError, httpx.InvalidURL, ValueError):
        return None, REQUEST_FAILED
