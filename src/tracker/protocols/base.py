"""What every protocol decoder takes and gives."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from tracker.core.model import Fix, Reject


@dataclass(frozen=True, slots=True)
class Request:
    """A transport-neutral HTTP request: what a decoder may look at.

    `headers` keys are lower-case. `query` keeps repeated keys in order.
    """

    method: str
    query: tuple[tuple[str, str], ...] = ()
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class Reply:
    """The answer a client expects when its pings were stored."""

    status: int = 200
    content_type: str = "text/plain"
    body: bytes = b""


@dataclass(slots=True)
class Decoded:
    """Fixes (with `device_id` 0 until the caller resolves the device) and rejects.

    `device_key` is the device's unique id when the protocol names it in the payload
    (OsmAnd `id`, OwnTracks user/device); None when the device is known from its token.
    `fixes` pairs each fix with its index in the request, so rejects can point back.
    """

    device_key: str | None = None
    fixes: list[tuple[int, Fix]] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    reply: Reply = field(default_factory=Reply)


class ProtocolError(Exception):
    """The request as a whole is unusable; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
