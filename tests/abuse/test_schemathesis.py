"""Schemathesis against a real server: every documented operation, with data generated from
the OpenAPI document (its examples, boundary values, then random valid and invalid input),
sent with the credentials the operation takes. No 5xx, and every answer's status, content
type, headers and body are the ones the document promises.

The document is loaded at collection time, so each operation is a test of its own; it is
the one the server publishes at /openapi.json (`test_openapi` checks they are equal).
The server runs on a loop in another thread (schemathesis calls it with a blocking client)
with a database of its own. A request that takes longer than REQUEST_TIMEOUT_S fails the
test: no input may hang the server.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.abuse.conftest import Fleet, credentials, threaded_fleet
from tracker.api import openapi

REQUEST_TIMEOUT_S = 15.0
# Random cases per operation (after its examples and boundary cases): about half a minute
# for the whole module. Every run draws new ones.
MAX_EXAMPLES = 40

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]

CONFIG = schemathesis.Config.from_dict(
    {
        "request-timeout": REQUEST_TIMEOUT_S,
        "generation": {
            "mode": "all",
            "max-examples": MAX_EXAMPLES,
            # Credentials are the test's to choose (conftest.credentials), not random strings.
            "with-security-parameters": False,
            "deterministic": False,
        },
        "phases": {"stateful": {"enabled": False}},
    }
)

schema = schemathesis.openapi.from_dict(openapi.document(), config=CONFIG)


@pytest.fixture(scope="module")
def fuzz_fleet() -> Iterator[Fleet]:
    with threaded_fleet("fuzz") as fleet:
        yield fleet


@schema.parametrize()
def test_operation_conforms(case: schemathesis.Case[Any], fuzz_fleet: Fleet) -> None:
    case.call_and_validate(
        base_url=fuzz_fleet.server.base_url,
        headers=credentials(case.operation.definition.raw, fuzz_fleet),
        checks=CHECKS,
        timeout=REQUEST_TIMEOUT_S,
    )
