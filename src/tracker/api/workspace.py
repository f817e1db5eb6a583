"""The dispatcher's workspace: its API operations and pages, as one list of routes.

API: routes listed, cancelled, reassigned and drawn (`route_desk`), the event history
(`events`), live ETA accuracy (`accuracy`), API keys (`staff_keys`), device token
rotation (`device_setup`). Pages: the API reference at `/docs` (Swagger UI from npm,
served locally like Leaflet) and the management page at `/manage` (`workspace_pages`).
"""

from __future__ import annotations

from starlette.routing import BaseRoute, Route

from tracker.api import accuracy, device_setup, events, route_desk, staff_keys, workspace_pages
from tracker.api.paths import IdConvertor  # noqa: F401 (registers {name:id})

ROUTES: list[BaseRoute] = [
    Route("/api/v1/routes", route_desk.list_routes, methods=["GET"]),
    Route("/api/v1/routes/{route_id:id}/cancel", route_desk.cancel_route, methods=["POST"]),
    Route("/api/v1/routes/{route_id:id}/reassign", route_desk.reassign_route, methods=["POST"]),
    Route("/api/v1/routes/{route_id:id}/path", route_desk.route_path, methods=["GET"]),
    Route("/api/v1/events", events.list_events, methods=["GET"]),
    Route("/api/v1/accuracy", accuracy.get_accuracy, methods=["GET"]),
    Route("/api/v1/keys", staff_keys.list_keys, methods=["GET"]),
    Route("/api/v1/keys", staff_keys.create_key, methods=["POST"]),
    Route("/api/v1/keys/{key_id:id}/revoke", staff_keys.revoke_key, methods=["POST"]),
    Route("/api/v1/devices/{device}/token", device_setup.rotate_token, methods=["POST"]),
    *workspace_pages.routes(),
]
