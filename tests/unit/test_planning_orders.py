"""Pure checks of orders, depots and vehicles: values derived, every bad field named."""

from __future__ import annotations

from datetime import UTC, date, datetime, time

import pytest

from tracker.planning.fields import Invalid
from tracker.planning.fleet import depot_fields, vehicle_fields
from tracker.planning.model import Candidate, Order, Window, shift_bounds
from tracker.planning.orders import new_order, order_changes


def stored(**extra: object) -> Order:
    base: dict[str, object] = {
        "id": 1,
        "external_id": None,
        "kind": "delivery",
        "lat": None,
        "lon": None,
        "address": "Carrer Major 3",
        "recipient": "",
        "phone": "",
        "email": "",
        "windows": (),
        "service_s": 0.0,
        "size": {},
        "skills": (),
        "priority": 0,
        "notes": "",
        "date": date(2030, 1, 1),
        "status": "unplanned",
        "geocode_status": "ambiguous",
        "geocode_candidates": (
            Candidate(42.54, 1.58, "Encamp", 0.2),
            Candidate(42.46, 1.49, "Sant Julià", 0.1),
        ),
        "route_id": None,
        "stop_id": None,
        "created_at": datetime(2030, 1, 1, tzinfo=UTC),
        "updated_at": datetime(2030, 1, 1, tzinfo=UTC),
    }
    base.update(extra)
    return Order(**base)  # type: ignore[arg-type]


def fields_of(exc: pytest.ExceptionInfo[Invalid]) -> set[str]:
    return {e.field for e in exc.value.errors}


def test_windows_are_sorted_in_utc_and_the_date_is_the_local_day() -> None:
    values = new_order(
        {
            "lat": 1,
            "lon": 2,
            "windows": [
                {"start": "2030-05-05T14:00:00+02:00", "end": "2030-05-05T16:00:00+02:00"},
                ["2030-05-05T00:30:00+02:00", "2030-05-05T02:00:00+02:00"],
            ],
        }
    )
    assert values["windows"] == [
        ["2030-05-04T22:30:00+00:00", "2030-05-05T00:00:00+00:00"],
        ["2030-05-05T12:00:00+00:00", "2030-05-05T14:00:00+00:00"],
    ]
    assert values["date"] == date(2030, 5, 5)
    assert (values["kind"], values["geocode_status"]) == ("delivery", "given")


def test_every_bad_field_is_named_at_once() -> None:
    with pytest.raises(Invalid) as exc:
        new_order(
            {"lat": 100, "lon": 2, "priority": -1, "size": {"kg": "x"}, "extra": 1, "date": "x"},
            prefix="orders[3].",
        )
    assert fields_of(exc) == {
        "orders[3].lat",
        "orders[3].priority",
        "orders[3].size.kg",
        "orders[3].extra",
        "orders[3].date",
    }


def test_address_only_waits_for_the_geocoder_or_is_flagged() -> None:
    body = {"address": "Carrer Major 3", "date": "2030-01-01"}
    assert new_order(body)["geocode_status"] == "pending"
    assert new_order(body, geocoder=False)["geocode_status"] == "unresolved"
    with pytest.raises(Invalid) as exc:
        new_order({"date": "2030-01-01"})
    assert fields_of(exc) == {"address"}
    with pytest.raises(Invalid) as exc:
        new_order({"lat": 1, "lon": 2})
    assert fields_of(exc) == {"date"}


def test_picking_a_candidate_resolves_the_order() -> None:
    values = order_changes({"candidate": 1}, stored())
    assert (values["lat"], values["lon"], values["geocode_status"]) == (42.46, 1.49, "resolved")
    with pytest.raises(Invalid):
        order_changes({"candidate": 2}, stored())
    with pytest.raises(Invalid):
        order_changes({"candidate": 0}, stored(geocode_candidates=()))


def test_a_new_address_is_geocoded_again_but_the_same_one_is_not() -> None:
    again = order_changes({"address": "Avinguda Meritxell 20"}, stored())
    assert (again["geocode_status"], again["lat"]) == ("pending", None)
    same = order_changes({"address": "Carrer Major 3", "notes": "x"}, stored())
    assert "geocode_status" not in same
    retry = order_changes({"address": "Carrer Major 3"}, stored(geocode_status="unresolved"))
    assert retry["geocode_status"] == "pending"
    nothing = order_changes(
        {"address": "Carrer Major 3"}, stored(geocode_status="unresolved"), geocoder=False
    )
    assert nothing["geocode_status"] == "unresolved"


def test_shift_bounds_across_midnight_and_daylight_saving() -> None:
    # 27 March 2030: the last Sunday of March, Europe moves to summer time at 02:00.
    begin, end = shift_bounds(date(2030, 3, 31), time(22), time(6), "Europe/Andorra")
    assert begin == datetime(2030, 3, 31, 20, 0, tzinfo=UTC)
    assert end == datetime(2030, 4, 1, 4, 0, tzinfo=UTC)
    assert shift_bounds(date(2030, 1, 1), None, time(12), "UTC") == (
        None,
        datetime(2030, 1, 1, 12, tzinfo=UTC),
    )


def test_depot_and_vehicle_checks() -> None:
    assert depot_fields({"name": " Hub ", "lat": 1, "lon": 2}) == {
        "name": "Hub",
        "lat": 1.0,
        "lon": 2.0,
    }
    with pytest.raises(Invalid) as exc:
        depot_fields({"name": "Hub", "lat": 1}, partial=True)
    assert fields_of(exc) == {"lon"}
    values = vehicle_fields({"name": "V", "device": "", "skills": ["b", "a", "b"]})
    assert values == {"name": "V", "device": None, "skills": ["a", "b"]}
    with pytest.raises(Invalid) as exc:
        vehicle_fields({"name": "V", "time_zone": "Nowhere/Land", "capacity": {"": 1}})
    assert fields_of(exc) == {"time_zone", "capacity."}


def test_window_dataclass_is_what_the_store_reads() -> None:
    assert stored(
        windows=(Window(datetime(2030, 1, 1, tzinfo=UTC), datetime(2030, 1, 2, tzinfo=UTC)),)
    ).windows
