"""Same-origin checks (api.origin) and the watchers that close revoked connections."""

from __future__ import annotations

import asyncio

import pytest
from starlette.requests import HTTPConnection

from tracker.api.origin import normalized, same_origin
from tracker.services.auth import ALL_DEVICES, DEVICE, KEY, SESSION, Principal, Watchers

PUBLIC = "https://track.example.com"


def conn(headers: dict[str, str], scheme: str = "http", kind: str = "http") -> HTTPConnection:
    scope = {
        "type": kind,
        "scheme": scheme,
        "path": "/",
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "server": ("127.0.0.1", 8000),
    }
    return HTTPConnection(scope)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://Example.COM", "http://example.com"),
        ("http://example.com:80", "http://example.com"),
        ("https://example.com:443/x", "https://example.com"),
        ("https://example.com:8443", "https://example.com:8443"),
        ("ws://h:8000", "http://h:8000"),
        ("wss://h", "https://h"),
        ("http://[::1]:9", "http://[::1]:9"),
        ("null", None),
        ("ftp://h", None),
    ],
)
def test_origins_are_compared_as_scheme_host_and_port(url: str, expected: str | None) -> None:
    assert normalized(url) == expected


def test_same_origin_needs_scheme_and_host() -> None:
    host = {"Host": "127.0.0.1:8000"}
    assert same_origin(conn({**host, "Origin": "http://127.0.0.1:8000"}), PUBLIC)
    assert not same_origin(conn({**host, "Origin": "https://127.0.0.1:8000"}), PUBLIC)
    assert not same_origin(conn({**host, "Origin": "http://evil.example"}), PUBLIC)
    assert not same_origin(conn({**host, "Origin": "null"}), PUBLIC)
    # Behind a TLS proxy that is not trusted for X-Forwarded-Proto: the public URL counts.
    proxied = {"Host": "track.example.com", "Origin": PUBLIC}
    assert same_origin(conn(proxied), PUBLIC)
    # A WebSocket handshake (ws scheme) from the page of the same origin.
    assert same_origin(conn({**host, "Origin": "http://127.0.0.1:8000"}, "ws", "websocket"), "")
    # No Origin: not a forgeable browser request, unless the browser says cross-site.
    assert same_origin(conn(host), PUBLIC)
    assert not same_origin(conn({**host, "Sec-Fetch-Site": "cross-site"}), PUBLIC)


async def test_watchers_close_what_a_revoked_credential_opened() -> None:
    watchers = Watchers()
    closed: list[str] = []

    async def valid() -> bool:
        return True

    async def invalid() -> bool:
        return False

    key_socket = Principal("dispatcher", key_id=7)
    session_socket = Principal("dispatcher", key_id=7, session_id=3)
    watchers.watch(key_socket.identities(), lambda: closed.append("key"), valid)
    watchers.watch(session_socket.identities(), lambda: closed.append("session"), valid)
    unwatch = watchers.watch([(DEVICE, 1)], lambda: closed.append("device"), invalid)
    watchers.watch([(DEVICE, 2)], lambda: closed.append("device 2"), valid)
    assert watchers.revoke(SESSION, 3) == 1 and closed == ["session"]
    assert watchers.revoke(KEY, 7) == 1 and closed == ["session", "key"]
    assert watchers.revoke(KEY, 7) == 0  # once only
    assert await watchers.recheck_all() == 1 and closed[-1] == "device"
    unwatch()  # after it fired: harmless
    assert watchers.revoke(ALL_DEVICES, None) == 1 and closed[-1] == "device 2"
    assert len(watchers) == 0
    await asyncio.sleep(0)
