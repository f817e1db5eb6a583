"""Where a webhook may be sent, without I/O: the shape of its URL and the addresses its host
resolves to.

A webhook URL is chosen by a dispatcher, so the server must not become their way into the
networks only it can reach (SSRF): loopback, private ranges, link-local (cloud metadata at
169.254.169.254), unspecified, multicast, reserved, and the same behind IPv6 spellings
(IPv4-mapped, NAT64, 6to4). A deployment whose receivers live inside its own network lists
those networks explicitly (`TRACKER_WEBHOOK_ALLOW_CIDRS`).

Name resolution is the caller's (services.destinations): this module judges addresses once
they are known, and so judges every spelling of one (`2130706433`, `0x7f.1`, `127.1`,
`[::1]`, `localhost`) by what it resolves to, never by how it is written.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")

# The short reasons a delivery log shows (never a library's error text).
BLOCKED_ADDRESS = "blocked: not a public address"
BLOCKED_USERINFO = "blocked: credentials in the URL"
BLOCKED_URL = "blocked: not an http(s) URL"
UNRESOLVED = "dns: the name does not resolve"


class Refused(ValueError):
    """A destination the server will not send to; `reason` is one of the short reasons."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}{': ' + detail if detail else ''}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Target:
    """A webhook URL taken apart: what to resolve, where to connect, what to call it."""

    url: SplitResult
    host: str  # the host as resolved (IPv6 without brackets)
    port: int
    host_header: str  # the `Host` the receiver expects: the URL's own, in ASCII (IDNA)


def parse_networks(text: str) -> tuple[IPNetwork, ...]:
    """The allow-list setting: CIDRs separated by commas or spaces ("" = none)."""
    parts = [p for p in text.replace(",", " ").split() if p]
    networks: list[IPNetwork] = []
    for part in parts:
        try:
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError as exc:
            raise ValueError(f"expected CIDRs such as 10.0.0.0/8 ({exc})") from None
    return tuple(networks)


def check_networks(text: str) -> str:
    """Settings check: the value, if every part is a network."""
    parse_networks(text)
    return text


def target(url: str) -> Target:
    """The parts of an http(s) URL that sending needs; refuses userinfo and other schemes."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise Refused(BLOCKED_URL, str(exc)) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Refused(BLOCKED_URL, "must be an absolute http:// or https:// URL")
    if "@" in parts.netloc:
        # Forwarded as Basic auth by HTTP clients: a receiver's secret has no place in a URL
        # every dispatcher can read back; the signature authenticates deliveries.
        raise Refused(BLOCKED_USERINFO, "user:password@ is not allowed")
    header = parts.netloc
    if not header.isascii():
        try:
            header = parts.hostname.encode("idna").decode("ascii")
        except UnicodeError:
            raise Refused(BLOCKED_URL, "the host name cannot be encoded") from None
        if port is not None:
            header = f"{header}:{port}"
    return Target(parts, parts.hostname, port or (443 if parts.scheme == "https" else 80), header)


def unwrap(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 one carries (mapped, NAT64, 6to4), else the address."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address in _NAT64 or address in _NAT64_LOCAL:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if address.sixtofour is not None:
            return address.sixtofour
    return address


def is_public(address: IPAddress) -> bool:
    """Whether an address is on the public internet (judged by the IPv4 it may carry)."""
    inner = unwrap(address)
    if isinstance(address, ipaddress.IPv6Address) and address.teredo is not None:
        return False
    for candidate in {address, inner}:
        if (
            candidate.is_loopback
            or candidate.is_private
            or candidate.is_link_local
            or candidate.is_unspecified
            or candidate.is_multicast
            or candidate.is_reserved
            or not candidate.is_global
        ):
            return False
    return True


def permitted(address: IPAddress, allowed: Iterable[IPNetwork]) -> bool:
    """Public, or inside a network the deployment allows explicitly."""
    if is_public(address):
        return True
    inner = unwrap(address)
    return any(a in net for net in allowed for a in {address, inner} if a.version == net.version)


def vet(addresses: Iterable[str], allowed: Iterable[IPNetwork]) -> list[IPAddress]:
    """The resolved addresses of a host, if every one may be sent to; else `Refused`.

    All, not any: a name that answers one public and one internal address is refused, so
    which one a connection would pick never matters.
    """
    networks = tuple(allowed)
    found: list[IPAddress] = []
    for text in addresses:
        address = ipaddress.ip_address(text.split("%", 1)[0])  # drop an IPv6 zone id
        if not permitted(address, networks):
            raise Refused(BLOCKED_ADDRESS, str(address))
        if address not in found:
            found.append(address)
    if not found:
        raise Refused(UNRESOLVED)
    return found


def pinned_url(t: Target, address: IPAddress) -> str:
    """The URL with its host replaced by the vetted address (the connection goes there;
    `Host` and TLS SNI keep the original name)."""
    host = f"[{address}]" if address.version == 6 else str(address)
    netloc = f"{host}:{t.port}"
    return t.url._replace(netloc=netloc).geturl()
