"""The server's OpenAPI document: `openapi.yaml` next to this module, served as JSON.

The document is data kept next to the code it describes; `tests/abuse/test_openapi.py`
compares its paths and methods with the app's routes, and its enums with the code's, so a
new endpoint or value fails CI until it is documented.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any

import orjson
import yaml
from starlette.requests import Request
from starlette.responses import Response

from tracker import __version__

PATH = "/openapi.json"


@functools.cache
def document() -> dict[str, Any]:
    """The OpenAPI document as a dict (parsed once per process)."""
    text = resources.files("tracker").joinpath("openapi.yaml").read_text(encoding="utf-8")
    doc: dict[str, Any] = yaml.safe_load(text)
    doc["info"]["version"] = __version__
    return doc


@functools.cache
def _rendered() -> bytes:
    return orjson.dumps(document())


async def openapi_json(request: Request) -> Response:
    """GET /openapi.json: the document (public: it holds no secret)."""
    return Response(_rendered(), media_type="application/json")
