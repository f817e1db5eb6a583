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
from tracker.api.throttle import EXEMPT_PATHS

PATH = "/openapi.json"
HTTP_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})


@functools.cache
def document() -> dict[str, Any]:
    """The OpenAPI document as a dict (parsed once per process)."""
    text = resources.files("tracker.api").joinpath("openapi.yaml").read_text(encoding="utf-8")
    doc: dict[str, Any] = yaml.safe_load(text)
    doc["info"]["version"] = __version__
    _add_rate_limits(doc)
    return doc


def _add_rate_limits(doc: dict[str, Any]) -> None:
    """429 on every operation the per-address limit covers (all but the probes), from the
    same list the limit uses, so the two cannot disagree."""
    for path, item in doc["paths"].items():
        if path in EXEMPT_PATHS:
            continue
        for method, operation in item.items():
            if method in HTTP_METHODS:
                limited = {"$ref": "#/components/responses/TooManyRequests"}
                operation["responses"].setdefault("429", limited)


@functools.cache
def _rendered() -> bytes:
    return orjson.dumps(document())


async def openapi_json(request: Request) -> Response:
    """GET /openapi.json: the document (public: it holds no secret)."""
    return Response(_rendered(), media_type="application/json")
