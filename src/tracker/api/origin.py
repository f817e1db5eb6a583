"""Whether a cookie-carrying request comes from our own pages (cross-site request forgery).

A browser sends the session cookie with any request to this server, whichever page made
it; SameSite=Strict keeps it off most cross-site requests, and this check refuses the rest:
every state change authenticated by the cookie, every sign-in and every WebSocket opened
with it must come from this server's own origin, compared as scheme and host (and port),
never host alone. The origin is the request's own (`Host`, and the scheme uvicorn saw, so
`X-Forwarded-Proto` from a trusted proxy counts) or TRACKER_PUBLIC_URL's.

A request without `Origin` (and without `Sec-Fetch-Site` saying it is cross-site) is not
from a browser page that could be forged: browsers send `Origin` with every cross-origin
request and every non-GET one.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.requests import HTTPConnection

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_DEFAULT_PORTS = {"http": 80, "https": 443}
_WS_SCHEMES = {"ws": "http", "wss": "https"}


def normalized(url: str) -> str | None:
    """`scheme://host[:port]` of a URL, lower case, default port left out; None if none."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    scheme = _WS_SCHEMES.get(parts.scheme.lower(), parts.scheme.lower())
    host = parts.hostname
    if scheme not in _DEFAULT_PORTS or not host:
        return None
    if ":" in host:
        host = f"[{host}]"
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def own_origins(conn: HTTPConnection, public_url: str) -> set[str]:
    """This server's origins as the request reached it, and the configured public one."""
    found = set()
    host = conn.headers.get("host")
    if host:
        mine = normalized(f"{conn.url.scheme}://{host}")
        if mine:
            found.add(mine)
    public = normalized(public_url)
    if public:
        found.add(public)
    return found


def same_origin(conn: HTTPConnection, public_url: str) -> bool:
    """Whether the request may be from our own page (see the module's docstring)."""
    origin = conn.headers.get("origin")
    if origin is None:
        return conn.headers.get("sec-fetch-site", "same-origin") in ("same-origin", "none")
    found = normalized(origin)
    return found is not None and found in own_origins(conn, public_url)
