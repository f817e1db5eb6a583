"""Customer links a dispatcher can see again (with TRACKER_LINK_SECRET).

Without the setting a link's token is random and shown only in the reply that makes it, as
before. With it, each token is derived from the setting and a random salt kept with the
stop (`tracker.core.links`), so the dispatcher's reads of a route (`GET /api/v1/routes/{id}`
and the route list) carry each stop's `tracking_url` again. A link is listed only when the
token made again matches the stored digest: after the secret changed, or for a link
re-issued or made without it, `tracking_url` stays null.
"""

from __future__ import annotations

from collections.abc import Sequence

from tracker.api.runtime import Runtime
from tracker.api.tracking import new_tokens, tracking_url
from tracker.config import Settings
from tracker.core import links, tokens
from tracker.core.model import JsonDict
from tracker.store import dispatch_board as board


def issue(settings: Settings, count: int) -> tuple[list[str], list[bytes], list[bytes] | None]:
    """Link tokens for `count` stops, their digests, and the salts to keep (None: random
    tokens, no secret configured)."""
    if not settings.link_secret:
        fresh, digests = new_tokens(count)
        return fresh, digests, None
    salts = [links.new_salt() for _ in range(count)]
    fresh = [links.derive(settings.link_secret, s) for s in salts]
    return fresh, [tokens.digest(t) for t in fresh], salts


async def keep(rt: Runtime, route_id: int, salts: Sequence[bytes] | None) -> None:
    """Store a new route's salts (nothing without a secret)."""
    if salts:
        await board.keep_link_salts(rt.pool, route_id, salts)


async def with_links(rt: Runtime, routes: list[JsonDict]) -> list[JsonDict]:
    """Copies of Route JSONs with the links that can be made again (dispatchers only)."""
    secret = rt.settings.link_secret
    if not secret or not routes:
        return routes
    known = await board.link_salts(rt.pool, [r["id"] for r in routes])
    out = []
    for route in routes:
        stops = []
        for stop in route["stops"]:
            found = known.get(stop["id"])
            if found is not None:
                token = links.derive(secret, found[0])
                if tokens.digest(token) == found[1]:
                    stop = {**stop, "tracking_url": tracking_url(rt.settings, token)}
            stops.append(stop)
        out.append({**route, "stops": stops})
    return out
