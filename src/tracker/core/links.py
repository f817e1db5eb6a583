"""Customer link tokens a dispatcher can be shown again: HMAC-SHA256(secret, salt).

The database keeps each stop's random salt and the token's digest, never the token; only
a server holding TRACKER_LINK_SECRET can make the token again from the salt. The token has
the same form and strength as a random one (256 bits, URL-safe), so the link lookup is the
same for both kinds.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

SALT_BYTES = 16


def new_salt() -> bytes:
    """A fresh random salt for one stop's link."""
    return secrets.token_bytes(SALT_BYTES)


def derive(secret: str, salt: bytes) -> str:
    """The link token of `salt` under `secret`."""
    mac = hmac.new(secret.encode("utf-8"), b"tracker-link:" + salt, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")
