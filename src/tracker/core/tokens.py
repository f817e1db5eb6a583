"""Bearer tokens: random, shown once, stored only as a SHA-256 digest.

The tokens carry 256 bits of randomness, so a fast hash is enough (no password stretching
needed) and lets the server find the owner with an index lookup on the digest.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets


def new_token() -> str:
    """A fresh URL-safe token with 256 bits of randomness, never starting with `-`.

    One URL-safe token in 64 began with `-`, which command lines read as an option
    (`--token -pQdR...`: "expected one argument"). Drawing again loses under 0.03 bits.
    """
    while True:
        token = secrets.token_urlsafe(32)
        if not token.startswith("-"):
            return token


def digest(token: str) -> bytes:
    """What the database stores for `token`."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def same(a: str, b: str) -> bool:
    """Constant-time comparison of two secrets."""
    return hmac.compare_digest(digest(a), digest(b))
