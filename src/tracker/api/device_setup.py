"""Putting a phone to work: setup links and QR codes for the apps, and token rotation.

A device's token is shown only when it is made (registration, or rotation here), so the
links that carry it are part of those replies only:

- Traccar Client: `org.traccar.client://setup?url=…&id=…` (the app's configuration link;
  the OsmAnd protocol needs no token, the device is its unique id). Its in-app QR scanner
  reads the same link.
- Overland: `overland://setup?url=…&token=…` (the app's own setup link).
- The driver page: `…/driver#token=…` (the fragment never reaches a server log).

Each link comes with a QR code (SVG as a data: URI, made with segno) for the phone's
camera. `POST /api/v1/devices/{id}/token` (admin) gives a device a new token: the old one
stops working at once on this instance and within TRACKER_AUTH_CACHE_S on the others.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import segno
from starlette.requests import Request
from starlette.responses import Response

from tracker.api.guards import require_admin, runtime, unavailable
from tracker.api.responses import ApiError, ORJSONResponse
from tracker.config import Settings
from tracker.store import registry
from tracker.store.db import DB_ERRORS

# What Traccar Client is told besides where and who: the README's suggested settings.
TRACCAR_SETTINGS = {"accuracy": "high", "interval": "30", "distance": "30", "buffer": "true"}


def qr_svg(text: str) -> str:
    """A QR code of `text` as an SVG data: URI (error correction M, fits a phone screen)."""
    code = segno.make(text, error="m")
    uri: str = code.svg_data_uri(scale=4, border=2)
    return uri


def setup_links(settings: Settings, unique_id: str, token: str) -> dict[str, Any]:
    """Every app's setup link for a device (with its QR code)."""
    base = settings.public_url.rstrip("/")
    traccar = "org.traccar.client://setup?" + urlencode(
        {"url": f"{base}/ingest/osmand", "id": unique_id, **TRACCAR_SETTINGS}
    )
    overland = "overland://setup?" + urlencode(
        {"url": f"{base}/ingest/overland", "token": token, "device_id": unique_id}
    )
    driver = f"{base}/driver#token={token}"
    return {
        "traccar": {"url": traccar, "qr": qr_svg(traccar)},
        "overland": {"url": overland, "qr": qr_svg(overland)},
        "driver": {"url": driver, "qr": qr_svg(driver)},
    }


async def rotate_token(request: Request) -> Response:
    """POST /api/v1/devices/{id}/token → 200 {id, name, enabled, token, setup}."""
    await require_admin(request)
    rt = runtime(request)
    try:
        rotated = await registry.rotate_token(rt.pool, request.path_params["device"])
    except DB_ERRORS as exc:
        raise unavailable(rt) from exc
    if rotated is None:
        raise ApiError(404, "not_found", "no such device")
    device, token = rotated
    await rt.auth.device_changed(device.id)  # every instance, its open sockets too
    return ORJSONResponse(
        {
            "id": device.unique_id,
            "name": device.name,
            "enabled": device.enabled,
            "token": token,
            "setup": setup_links(rt.settings, device.unique_id, token),
        }
    )
