"""Slow request bodies (issue 15, finding 7): a deadline for every body, and a bound on the
bodies being read at once from callers not yet authenticated.

uvicorn times out idle keep-alive connections, never a request whose body trickles in: 300
connections sending a byte a second were all held open. Here every `receive()` of a request
with a body runs against one deadline, TRACKER_BODY_TIMEOUT_S after the headers arrived
(408 beyond), and a request whose caller has not proved who it is (no valid token checked
yet: sign-in, OsmAnd, OwnTracks) takes one of TRACKER_MAX_ANONYMOUS_BODIES slots while its
body arrives, or is answered 503 with Retry-After when none is free. Authenticated callers
(the endpoint checked their token before reading: native ingest, Overland, every staff
endpoint) take no slot. Both refusals close the connection.
"""

from __future__ import annotations

import asyncio
import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tracker.api.responses import ApiError

log = logging.getLogger(__name__)

CLOSE = {"Connection": "close"}
# Request state set once the caller proved who it is: its body takes no anonymous slot.
AUTHENTICATED = "tracker.authenticated"


def has_body(scope: Scope) -> bool:
    """Whether the request declares a body (a length above 0, or chunked)."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            return value.strip() not in (b"0", b"")
        if name == b"transfer-encoding":
            return True
    return False


class BodyGuard:
    """One per process: the body deadline and the anonymous bodies being read.

    One sweeper task (`run`) ends the waits that passed their deadline, a few times per
    timeout: a timer per request would cost more than the rest of a ping's receive.
    """

    def __init__(self, timeout_s: float, max_anonymous: int, retry_after_s: int) -> None:
        self.timeout_s = timeout_s
        self.max_anonymous = max_anonymous
        self.retry_after_s = retry_after_s
        self.anonymous = 0
        self.timed_out = 0
        self.turned_away = 0
        self.waiting: dict[GuardedBody, None] = {}

    def wrap(self, scope: Scope, receive: Receive) -> GuardedBody:
        """`receive` of one request, under the deadline and the anonymous bound."""
        # time.monotonic is the event loop's clock, read without looking the loop up.
        return GuardedBody(self, scope, receive, time.monotonic() + self.timeout_s)

    async def run(self) -> None:
        """End overdue body waits (408) until cancelled."""
        tick = min(1.0, self.timeout_s / 4)
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            for body in [b for b in self.waiting if b.deadline <= now]:
                body.expire()


class GuardedBody:
    """A request's `receive` that enforces its `BodyGuard`; `release()` when it ends."""

    __slots__ = ("_done", "_expired", "_guard", "_holding", "_inner", "_scope", "_task", "deadline")

    def __init__(self, guard: BodyGuard, scope: Scope, inner: Receive, deadline: float) -> None:
        self._guard = guard
        self._scope = scope
        self._inner = inner
        self.deadline = deadline
        self._holding = False
        self._done = False
        self._expired = False
        self._task: asyncio.Task[object] | None = None

    async def __call__(self) -> Message:
        if self._done:
            return await self._inner()
        guard = self._guard
        if not self._holding and not self._scope.get(AUTHENTICATED):
            if guard.anonymous >= guard.max_anonymous:
                self._done = True
                guard.turned_away += 1
                raise ApiError(
                    503,
                    "busy",
                    "too many request bodies are arriving at once; retry later",
                    {"Retry-After": str(guard.retry_after_s), **CLOSE},
                )
            guard.anonymous += 1
            self._holding = True
        self._task = asyncio.current_task()
        guard.waiting[self] = None
        try:
            message = await self._inner()
        except asyncio.CancelledError:
            if not self._expired:
                raise
            if self._task is not None:
                self._task.uncancel()
            raise self._timed_out() from None
        finally:
            guard.waiting.pop(self, None)
        if message["type"] != "http.request" or not message.get("more_body", False):
            self._done = True
            self.release()
        return message

    def expire(self) -> None:
        """The deadline passed while waiting: interrupt the wait (it answers 408)."""
        if not self._expired and self._task is not None:
            self._expired = True
            self._task.cancel()

    def _timed_out(self) -> ApiError:
        self._done = True
        self.release()
        self._guard.timed_out += 1
        return ApiError(
            408,
            "body_timeout",
            f"the request body did not arrive within {self._guard.timeout_s:g} s",
            CLOSE,
        )

    def release(self) -> None:
        """Give the anonymous slot back (once)."""
        if self._holding:
            self._holding = False
            self._guard.anonymous -= 1


class BodyLimit:
    """The guard as ASGI middleware (for the OsmAnd listener; the main app does it inline)."""

    def __init__(self, app: ASGIApp, guard: BodyGuard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not has_body(scope):
            await self.app(scope, receive, send)
            return
        guarded = self.guard.wrap(scope, receive)
        try:
            await self.app(scope, guarded, send)
        finally:
            guarded.release()
