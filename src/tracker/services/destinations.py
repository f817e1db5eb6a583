"""Resolving a webhook's host once and judging the answer (core.destinations): at
registration, and again right before every connection, which then goes to the address that
was judged. Resolving once and connecting to that address pins it, so DNS rebinding (a name
that answers a public address to the check and an internal one to the connection) has no
second lookup to swap.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Iterable

from tracker.core.destinations import (
    UNRESOLVED,
    IPAddress,
    IPNetwork,
    Refused,
    Target,
    target,
    vet,
)

# host, port -> the addresses it resolves to (as text); the system resolver by default.
Resolver = Callable[[str, int], Awaitable[list[str]]]


async def system_resolver(host: str, port: int) -> list[str]:
    """The addresses `getaddrinfo` gives for (host, port): numeric spellings of an IPv4
    address (`2130706433`, `0x7f.1`, `127.1`) come back as the address they mean."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


async def resolve(
    url: str, allowed: Iterable[IPNetwork], resolver: Resolver, timeout_s: float
) -> tuple[Target, list[IPAddress]]:
    """The URL's parts and its vetted addresses; `Refused` when any address is not
    permitted, the URL is not one to send to, or the name does not resolve in time."""
    t = target(url)
    try:
        addresses = await asyncio.wait_for(resolver(t.host, t.port), timeout_s)
    except (OSError, ValueError, TimeoutError) as exc:  # ValueError: NUL, bad IDNA
        raise Refused(UNRESOLVED, t.host) from exc
    return t, vet(addresses, allowed)
