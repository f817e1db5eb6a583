"""Pure reading of Nominatim /search answers and the verdict on an address."""

from __future__ import annotations

import pytest

from tests.nominatim import place
from tracker.planning.geocode import GeocoderReplyError, candidates, normalise, verdict


def test_one_place_resolves_even_as_node_and_outline() -> None:
    v = verdict([place(42.5063, 1.5218, "door"), place(42.5064, 1.5219, "building")])
    assert (v.status, v.lat, v.lon) == ("resolved", 42.5063, 1.5218)
    assert [c.label for c in v.candidates] == ["door", "building"]


def test_two_places_far_apart_are_ambiguous() -> None:
    v = verdict([place(42.54, 1.58, "Encamp"), place(42.46, 1.49, "Sant Julià")])
    assert (v.status, v.lat) == ("ambiguous", None)


def test_a_town_for_a_street_address_is_ambiguous_and_sorted_last() -> None:
    v = verdict([place(42.53, 1.58, "Encamp", rank=16), place(42.5441, 1.5803, "Major 3")])
    assert v.status == "resolved"  # the precise answer wins; the town stays a candidate
    assert [c.precise for c in v.candidates] == [True, False]
    assert verdict([place(42.53, 1.58, "Encamp", rank=16)]).status == "ambiguous"


def test_nothing_usable_is_unresolved() -> None:
    assert verdict([]).status == "unresolved"
    assert verdict([{"lat": "x", "lon": "1"}, {"lat": "95", "lon": "1"}, "junk"]).status == (
        "unresolved"
    )
    with pytest.raises(GeocoderReplyError):
        candidates({"error": "Unable to geocode"})


def test_the_cache_key_ignores_case_and_spacing() -> None:
    assert normalise("  Plaça del Poble 1 ,Andorra  la Vella ") == normalise(
        "plaça del poble 1, andorra la vella"
    )
