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
    """One per process: the body deadline and the anonymous bodies being read."""

    def __init__(self, timeout_s: float, max_anonymous: int, retry_after_s: int) -> None:
        self.timeout_s = timeout_s
        self.max_anonymous = max_anonymous
        self.retry_after_s = retry_after_s
        self.anonymous = 0
        self.timed_out = 0
        self.turned_away = 0

    def wrap(self, scope: Scope, receive: Receive) -> GuardedBody:
        """`receive` of one request, under the deadline and the anonymous bound."""
        deadline = asyncio.get_running_loop().time() + self.timeout_s
        return GuardedBody(self, scope, receive, deadline)


class GuardedBody:
    """A request's `receive` that enforces its `BodyGuard`; `release()` when it ends."""

    __slots__ = ("_deadline", "_done", "_guard", "_holding", "_inner", "_scope")

    def __init__(self, guard: BodyGuard, scope: Scope, inner: Receive, deadline: float) -> None:
        self._guard = guard
        self._scope = scope
        self._inner = inner
        self._deadline = deadline
        self._holding = False
        self._done = False

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
        try:
            async with asyncio.timeout_at(self._deadline):
                message = await self._inner()
        except TimeoutError:
            self._done = True
            self.release()
            guard.timed_out += 1
            raise ApiError(
                408,
                "body_timeout",
                f"the request body did not arrive within {guard.timeout_s:g} s",
                CLOSE,
            ) from None
        if message["type"] != "http.request" or not message.get("more_body", False):
            self._done = True
            self.release()
        return message

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
