"""Reading a Nominatim-compatible /search answer and deciding whether it settles an address.

Pure: the service (`tracker.services.geocoding`) does the HTTP and the caching; this
module turns the JSON into candidates and a verdict:

- no usable result → `unresolved`;
- one place (results within `SAME_PLACE_M` of the best count as one: a building's node and
  its outline are the same door) at street level or finer → `resolved`;
- several places, or only a coarse one (a town or a country for a street address) →
  `ambiguous`: the dispatcher picks a candidate or types coordinates.
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from pyproj import Geod

from tracker.planning.model import AMBIGUOUS, RESOLVED, UNRESOLVED, Candidate

MAX_CANDIDATES = 5
SAME_PLACE_M = 150.0
# Nominatim's address ranks: 26 a street, 30 a house. Coarser answers (a suburb, a town,
# a country) mean the address itself was not found.
STREET_RANK = 26


class GeocoderReplyError(ValueError):
    """The geocoder answered something that is not a Nominatim search result list."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """What an address resolved to."""

    status: str
    lat: float | None
    lon: float | None
    candidates: tuple[Candidate, ...]


def normalise(address: str) -> str:
    """The cache key of an address: case, accents' composition and spacing do not matter."""
    text = unicodedata.normalize("NFC", address).casefold()
    text = re.sub(r"\s*,\s*", ", ", text)
    return re.sub(r"\s+", " ", text).strip(" ,")


def _float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def candidates(reply: Any) -> list[Candidate]:
    """Candidates from a /search reply (format json or jsonv2): in the geocoder's order of
    relevance, precise ones (street level or finer) before coarse ones."""
    if not isinstance(reply, list):
        raise GeocoderReplyError("expected a JSON list of places")
    out: list[Candidate] = []
    for place in reply:
        if not isinstance(place, dict):
            continue
        lat, lon = _float(place.get("lat")), _float(place.get("lon"))
        if lat is None or lon is None or not (-90 <= lat <= 90 and -180 <= lon <= 180):
            continue
        rank = _float(place.get("place_rank"))
        label = str(place.get("display_name") or "")[:300]
        importance = _float(place.get("importance")) or 0.0
        precise = rank is None or rank >= STREET_RANK
        out.append(Candidate(lat, lon, label, round(importance, 6), precise))
    out.sort(key=lambda c: not c.precise)  # stable: keeps the geocoder's order otherwise
    return out[:MAX_CANDIDATES]


def distance_m(a: Candidate, b: Candidate) -> float:
    """Metres between two candidates on the WGS84 ellipsoid."""
    return float(_GEOD.inv(a.lon, a.lat, b.lon, b.lat)[2])


_GEOD = Geod(ellps="WGS84")


def judge(found: list[Candidate]) -> Verdict:
    """The verdict on an address from its candidates (fresh or from the cache)."""
    if not found:
        return Verdict(UNRESOLVED, None, None, ())
    precise = [c for c in found if c.precise]
    if precise and all(distance_m(precise[0], c) <= SAME_PLACE_M for c in precise):
        return Verdict(RESOLVED, precise[0].lat, precise[0].lon, tuple(found))
    return Verdict(AMBIGUOUS, None, None, tuple(found))


def verdict(reply: Any) -> Verdict:
    """The verdict on one address from the geocoder's reply to it."""
    return judge(candidates(reply))
