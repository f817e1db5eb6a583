"""The 15 real OsmAnd requests of tests/data/clients/ (Traccar's decoder test, Apache-2.0),
joined with their index row and the values Traccar's rules give for each."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CLIENTS = Path(__file__).parent / "data" / "clients"


@dataclass(frozen=True)
class OsmAndVector:
    """One request line: a JSON body (POST) or a query URI (GET), and what it should give."""

    number: int
    method: str
    content_type: str
    line: str
    expected: dict[str, Any]

    @property
    def is_json(self) -> bool:
        return self.content_type == "application/json"


def osmand_vectors() -> list[OsmAndVector]:
    """Every request line with its index row and expected values, checked to line up."""
    lines = (CLIENTS / "osmand_requests.txt").read_text().splitlines()
    index = [
        row.split("\t")
        for row in (CLIENTS / "osmand_requests_index.tsv").read_text().splitlines()[1:]
    ]
    expected = [
        json.loads(row)
        for row in (CLIENTS / "osmand_requests_expected.jsonl").read_text().splitlines()
    ]
    assert len(lines) == len(index) == len(expected) == 15
    vectors = []
    for number, (line, (line_no, method, content_type, _), exp) in enumerate(
        zip(lines, index, expected, strict=True), start=1
    ):
        assert int(line_no) == exp["line"] == number
        vectors.append(OsmAndVector(number, method, content_type, line, exp))
    return vectors
