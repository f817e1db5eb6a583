"""The doorstep's enums in the OpenAPI document are the code's."""

from __future__ import annotations

from typing import Any

from tracker.api import openapi, reports, stopfields
from tracker.core import notices
from tracker.store import messages


def component(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = openapi.document()["components"]["schemas"][name]
    return schema


def test_enums_are_the_codes() -> None:
    assert tuple(component("ReasonCode")["enum"]) == reports.REASON_CODES
    assert tuple(component("ProofKind")["enum"]) == stopfields.PROOF_KINDS
    assert tuple(component("MessageKind")["enum"]) == notices.KINDS
    assert set(component("MessageStatus")["enum"]) == messages.STATUSES
    assert set(component("StopReport")["properties"]) == set(reports.REPORT_FIELDS)
    assert set(component("NewStop")["properties"]) == set(stopfields.STOP_FIELDS)
    assert set(component("NewRoute")["properties"]) == set(stopfields.ROUTE_FIELDS)
