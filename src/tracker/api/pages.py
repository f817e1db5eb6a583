"""The dispatcher live map page and the static files behind it.

The page's scaffolding (Leaflet map, tile layer) is rendered with folium, but folium's
CDN links are replaced by Leaflet served from `web/node_modules` (installed with npm,
never copied into the repository), so the page works on a network without internet
access. The tile URL and attribution come from the settings, so a deployment can point
the map at its own tile server.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import folium
from branca.element import Element, Figure
from folium.elements import JSCSSMixin
from folium.template import Template
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from tracker.api.guards import runtime
from tracker.config import Settings

log = logging.getLogger(__name__)

STATIC_PREFIX = "/static"
LEAFLET_PREFIX = "/static/vendor/leaflet"
PAGE_TITLE = "tracker — live map"
# Only these kinds of file are served from web/: never package.json, templates or dotfiles.
SERVED_SUFFIXES = frozenset({".js", ".css", ".map", ".png", ".svg", ".ico", ".woff2"})


def web_dir() -> Path:
    """Where the front-end files are: TRACKER_WEB_DIR, else `web/` of the source checkout."""
    configured = os.environ.get("TRACKER_WEB_DIR")
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[3] / "web"


def leaflet_dir() -> Path:
    """Leaflet's `dist/` as installed by `npm ci` in web/."""
    return web_dir() / "node_modules" / "leaflet" / "dist"


class AssetFiles(StaticFiles):
    """StaticFiles limited to asset suffixes, outside node_modules and dotfiles.

    A missing directory answers 404 (with one warning in the log) rather than 500, so a
    checkout where `npm ci` has not run yet still serves the API.
    """

    def __init__(self, directory: Path) -> None:
        super().__init__(directory=directory, check_dir=False)
        self._warned = False

    async def check_config(self) -> None:
        directory = Path(str(self.directory))
        if not directory.is_dir() and not self._warned:
            self._warned = True
            log.warning("static directory %s is missing (run `npm ci` in web/)", directory)

    def lookup_path(self, path: str) -> tuple[str, os.stat_result | None]:
        parts = Path(path).parts
        if any(p.startswith(".") or p == "node_modules" for p in parts):
            return "", None
        if Path(path).suffix.lower() not in SERVED_SUFFIXES:
            return "", None
        return super().lookup_path(path)

    def file_response(
        self, full_path: Any, stat_result: os.stat_result, scope: Scope, status_code: int = 200
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        # Revalidate cheaply with ETag/Last-Modified; the page adds ?v=<hash> to our own files.
        response.headers.setdefault("Cache-Control", "no-cache")
        return response


def _asset_url(name: str) -> str:
    """URL of one of our own files in web/, versioned by its content so caches refresh."""
    path = web_dir() / name
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    except OSError:
        return f"{STATIC_PREFIX}/{name}"
    return f"{STATIC_PREFIX}/{name}?v={digest}"


class LocalMap(folium.Map):
    """folium.Map that links only Leaflet served by this server (no jQuery/Bootstrap/CDN)."""

    default_js = [("leaflet", f"{LEAFLET_PREFIX}/leaflet.js")]  # noqa: RUF012 (folium API)
    default_css = [("leaflet_css", f"{LEAFLET_PREFIX}/leaflet.css")]  # noqa: RUF012


class LiveLayer(JSCSSMixin):
    """The side panel, sign-in form and live script, attached to a LocalMap."""

    _template = Template(
        """
        {% macro html(this, kwargs) %}
        {{ this.panel_html }}
        {% endmacro %}

        {% macro script(this, kwargs) %}
        // map.js is a module, which runs after this script: it starts the queued map.
        (window.TrackerMapQueue = window.TrackerMapQueue || []).push(
            [{{ this._parent.get_name() }}, {{ this.config|tojson }}]);
        {% endmacro %}
        """
    )

    def __init__(self, config: dict[str, Any], panel_html: str) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._name = "LiveLayer"
        self.config = config
        self.panel_html = panel_html
        self.default_js: list[tuple[str, str]] = []  # map.js is a module: added by render_map
        self.default_css = [
            ("tracker_theme_css", _asset_url("theme.css")),
            ("tracker_map_css", _asset_url("map.css")),
        ]


def page_config(stale_after_s: float) -> dict[str, Any]:
    """What the page's script needs to know: endpoints and the staleness threshold."""
    return {
        "wsPath": "/ws/dispatch",
        "sessionPath": "/api/v1/session",
        # GET here after a refused handshake tells "signed out" (401) from "server down".
        "staleAfterS": stale_after_s,
    }


def render_map(settings: Settings) -> str:
    """The whole HTML of the dispatcher live map."""
    return _render_map(settings.tile_url, settings.tile_attribution, settings.stale_after_s)


@functools.lru_cache(maxsize=8)
def _render_map(tile_url: str, attribution: str, stale_after_s: float) -> str:
    fmap = LocalMap(
        location=[20.0, 0.0],
        zoom_start=2,
        tiles=tile_url,
        attr=attribution,
        max_zoom=19,
        control_scale=True,
    )
    panel = (web_dir() / "map_panel.html").read_text(encoding="utf-8")
    fmap.add_child(LiveLayer(page_config(stale_after_s), panel))
    root = fmap.get_root()
    assert isinstance(root, Figure)
    root.title = PAGE_TITLE
    root.header.add_child(Element('<meta name="referrer" content="same-origin">'))
    root.html.add_child(Element(f'<script type="module" src="{_asset_url("map.js")}"></script>'))
    html: str = root.render()
    return html


async def map_page(request: Request) -> Response:
    """GET / and /map: the dispatcher live map (sign-in happens on the page itself)."""
    html = render_map(runtime(request).settings)
    return HTMLResponse(html, headers={"Cache-Control": "no-cache"})


# The driver page holds a device token: nothing but this origin may run or load anything.
DRIVER_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


async def driver_page(request: Request) -> Response:
    """GET /driver: the driver's page (web/driver.html; sign-in with the device token)."""
    html = (web_dir() / "driver.html").read_text(encoding="utf-8")
    headers = {"Cache-Control": "no-cache", "Content-Security-Policy": DRIVER_CSP}
    return HTMLResponse(html, headers=headers)


def routes() -> list[BaseRoute]:
    """The page routes and static mounts (the Leaflet mount before the general one)."""
    if not (leaflet_dir() / "leaflet.js").is_file():
        log.warning("Leaflet not found at %s: run `npm ci` in %s", leaflet_dir(), web_dir())
    return [
        Route("/", map_page, methods=["GET"]),
        Route("/map", map_page, methods=["GET"]),
        Route("/driver", driver_page, methods=["GET"]),
        Mount(LEAFLET_PREFIX, AssetFiles(leaflet_dir())),
        Mount(STATIC_PREFIX, AssetFiles(web_dir())),
    ]
