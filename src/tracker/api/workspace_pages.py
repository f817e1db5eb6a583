"""The workspace's pages: the API reference at `/docs`, device, key and route
management at `/manage`, and planning at `/plan`.

`/docs` is Swagger UI (npm package `swagger-ui-dist`, served from web/node_modules like
Leaflet, never copied into the repository) rendering this server's `/openapi.json`.
Both pages load only this origin's scripts (a CSP says so), with the page's own code in
web/ as ES modules.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route

from tracker.api.pages import AssetFiles, web_dir

SWAGGER_PREFIX = "/static/vendor/swagger-ui"
POLYLINE_PREFIX = "/static/vendor/polyline"

# Swagger UI sets inline styles on its elements; nothing but this origin runs scripts.
PAGE_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: https:; connect-src 'self'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)


def swagger_dir() -> Path:
    """swagger-ui-dist as installed by `npm ci` in web/."""
    return web_dir() / "node_modules" / "swagger-ui-dist"


def polyline_dir() -> Path:
    """@googlemaps/polyline-codec's dist/ (the planning page decodes route paths with it)."""
    return web_dir() / "node_modules" / "@googlemaps" / "polyline-codec" / "dist"


def _page(name: str) -> Response:
    html = (web_dir() / name).read_text(encoding="utf-8")
    return HTMLResponse(
        html, headers={"Cache-Control": "no-cache", "Content-Security-Policy": PAGE_CSP}
    )


async def docs_page(request: Request) -> Response:
    """GET /docs: the API reference rendered from /openapi.json."""
    return _page("docs.html")


async def manage_page(request: Request) -> Response:
    """GET /manage: devices (setup links, disable, rotate), keys, routes (cancel, reassign).
    Signing in happens on the page (the map's session cookie)."""
    return _page("manage.html")


async def plan_page(request: Request) -> Response:
    """GET /plan: orders (CSV import, add, edit), depots, vans; optimise and dispatch."""
    return _page("plan.html")


def routes() -> list[BaseRoute]:
    """The pages and Swagger UI's files (mounted ahead of the general /static mount)."""
    return [
        Route("/docs", docs_page, methods=["GET"]),
        Route("/manage", manage_page, methods=["GET"]),
        Route("/plan", plan_page, methods=["GET"]),
        Mount(SWAGGER_PREFIX, AssetFiles(swagger_dir())),
        Mount(POLYLINE_PREFIX, AssetFiles(polyline_dir())),
    ]
