"""Validating depots and vehicles: JSON → the store's column values, every bad field named."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tracker.planning.fields import MISSING, Checker
from tracker.planning.model import Depot, Vehicle

DEPOT_FIELDS = ("name", "lat", "lon", "address")
VEHICLE_FIELDS = (
    "name",
    "device",
    "capacity",
    "shift_start",
    "shift_end",
    "time_zone",
    "start_depot_id",
    "end_depot_id",
    "skills",
    "max_duration_s",
    "active",
)
MAX_ID = 2**63 - 1
MAX_DURATION_S = 7 * 86_400


def depot_fields(data: Mapping[str, Any], partial: bool = False) -> dict[str, Any]:
    """A new depot (name, lat, lon required) or, `partial`, a PATCH of one."""
    check = Checker(data)
    check.unknown(DEPOT_FIELDS)
    values = {
        "name": check.text("name", required=not partial),
        "address": check.text("address"),
        "lat": check.number("lat", -90.0, 90.0, required=not partial),
        "lon": check.number("lon", -180.0, 180.0, required=not partial),
    }
    if partial and check.given("name") and values["name"] == "":
        check.fail("name", "must not be empty")
    if partial and check.given("lat") != check.given("lon"):
        check.fail("lon" if check.given("lat") else "lat", "lat and lon go together")
    check.raise_if_invalid()
    return {k: v for k, v in values.items() if v is not MISSING}


def vehicle_fields(data: Mapping[str, Any], partial: bool = False) -> dict[str, Any]:
    """A new vehicle (name required) or, `partial`, a PATCH of one. `device` is a device's
    public id (null: none); depots are ids; shifts are local times of day in `time_zone`."""
    check = Checker(data)
    check.unknown(VEHICLE_FIELDS)
    values = {
        "name": check.text("name", required=not partial),
        "device": check.text("device", 128),
        "capacity": check.amounts("capacity"),
        "shift_start": check.time_of_day("shift_start"),
        "shift_end": check.time_of_day("shift_end"),
        "time_zone": check.zone("time_zone"),
        "start_depot_id": check.integer("start_depot_id", 1, MAX_ID, nullable=True),
        "end_depot_id": check.integer("end_depot_id", 1, MAX_ID, nullable=True),
        "skills": check.names("skills"),
        "max_duration_s": check.integer("max_duration_s", 1, MAX_DURATION_S, nullable=True),
        "active": check.boolean("active"),
    }
    if partial and check.given("name") and values["name"] == "":
        check.fail("name", "must not be empty")
    if values["device"] == "":
        values["device"] = None  # null or "" unlinks the device
    start, end = values["shift_start"], values["shift_end"]
    if start is not MISSING and start is not None and start == end:
        check.fail("shift_end", "must differ from shift_start (an earlier end is the next day)")
    check.raise_if_invalid()
    return {k: v for k, v in values.items() if v is not MISSING}


def depot_json(depot: Depot) -> dict[str, Any]:
    """The public JSON of a depot."""
    return {
        "id": depot.id,
        "name": depot.name,
        "lat": depot.lat,
        "lon": depot.lon,
        "address": depot.address,
        "created_at": depot.created_at.isoformat(),
        "updated_at": depot.updated_at.isoformat(),
    }


def vehicle_json(vehicle: Vehicle) -> dict[str, Any]:
    """The public JSON of a vehicle."""
    return {
        "id": vehicle.id,
        "name": vehicle.name,
        "device": vehicle.device,
        "capacity": dict(vehicle.capacity),
        "shift_start": vehicle.shift_start.isoformat() if vehicle.shift_start else None,
        "shift_end": vehicle.shift_end.isoformat() if vehicle.shift_end else None,
        "time_zone": vehicle.time_zone,
        "start_depot_id": vehicle.start_depot_id,
        "end_depot_id": vehicle.end_depot_id,
        "skills": list(vehicle.skills),
        "max_duration_s": vehicle.max_duration_s,
        "active": vehicle.active,
        "created_at": vehicle.created_at.isoformat(),
        "updated_at": vehicle.updated_at.isoformat(),
    }
