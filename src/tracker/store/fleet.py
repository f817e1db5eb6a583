"""Depots and vehicles in PostgreSQL: every SQL statement about them.

Write functions take validated column values from `tracker.planning.fleet` (a dict of
column name → value; `lat`/`lon` for a depot's location, `device` as the device's public
unique id for a vehicle).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeAlias

import asyncpg

from tracker.planning.model import Depot, Vehicle

# A pool or a connection (in a transaction): both answer fetch/fetchrow/execute alike.
Conn: TypeAlias = "asyncpg.Pool | asyncpg.Connection"

_DEPOT = (
    "d.id, d.name, ST_Y(d.location::geometry) AS lat, ST_X(d.location::geometry) AS lon, "
    "d.address, d.created_at, d.updated_at"
)
_VEHICLE = (
    "v.id, v.name, v.device_id, dev.unique_id AS device, v.capacity, v.shift_start, "
    "v.shift_end, v.time_zone, v.start_depot_id, v.end_depot_id, v.skills, v.max_duration_s, "
    "v.active, v.created_at, v.updated_at"
)
_VEHICLE_FROM = "vehicles v LEFT JOIN devices dev ON dev.id = v.device_id"

VEHICLE_WRITABLE = (
    "name",
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


class UnknownReference(Exception):
    """A vehicle names a device or depot that does not exist (args[0] names the field)."""


class InUse(Exception):
    """A depot or vehicle still referenced (by vehicles, plans) cannot be deleted."""


def depot_from_row(row: asyncpg.Record) -> Depot:
    """A `Depot` from a row selected with this module's depot columns."""
    return Depot(
        row["id"],
        row["name"],
        row["lat"],
        row["lon"],
        row["address"],
        row["created_at"],
        row["updated_at"],
    )


def vehicle_from_row(row: asyncpg.Record) -> Vehicle:
    """A `Vehicle` from a row selected with this module's vehicle columns."""
    return Vehicle(
        id=row["id"],
        name=row["name"],
        device_id=row["device_id"],
        device=row["device"],
        capacity=row["capacity"],
        shift_start=row["shift_start"],
        shift_end=row["shift_end"],
        time_zone=row["time_zone"],
        start_depot_id=row["start_depot_id"],
        end_depot_id=row["end_depot_id"],
        skills=tuple(row["skills"]),
        max_duration_s=row["max_duration_s"],
        active=row["active"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


# --- depots -------------------------------------------------------------------------------


async def insert_depot(conn: Conn, fields: dict[str, Any]) -> Depot:
    """Store a new depot."""
    row = await conn.fetchrow(
        "WITH d AS (INSERT INTO depots (name, address, location) VALUES ($1, $2, "
        "ST_SetSRID(ST_MakePoint($4, $3), 4326)::geography) RETURNING *) "
        f"SELECT {_DEPOT} FROM d",
        fields["name"],
        fields.get("address", ""),
        fields["lat"],
        fields["lon"],
    )
    assert row is not None
    return depot_from_row(row)


async def get_depot(conn: Conn, depot_id: int) -> Depot | None:
    """One depot by id."""
    row = await conn.fetchrow(f"SELECT {_DEPOT} FROM depots d WHERE d.id = $1", depot_id)
    return depot_from_row(row) if row else None


async def list_depots(conn: Conn) -> list[Depot]:
    """Every depot, by name."""
    rows = await conn.fetch(f"SELECT {_DEPOT} FROM depots d ORDER BY d.name, d.id")
    return [depot_from_row(r) for r in rows]


async def depots_by_ids(conn: Conn, ids: Sequence[int]) -> dict[int, Depot]:
    """Depots by id (the planner's lookup for its vehicles' depots)."""
    rows = await conn.fetch(
        f"SELECT {_DEPOT} FROM depots d WHERE d.id = ANY($1::bigint[])", list(ids)
    )
    return {r["id"]: depot_from_row(r) for r in rows}


async def update_depot(conn: Conn, depot_id: int, fields: dict[str, Any]) -> Depot | None:
    """Change a depot's name, address or location; None when there is no such depot."""
    sets = ["updated_at = now()"]
    values: list[Any] = [depot_id]
    for name in ("name", "address"):
        if name in fields:
            values.append(fields[name])
            sets.append(f"{name} = ${len(values)}")
    if "lat" in fields:
        values.extend([fields["lon"], fields["lat"]])
        n = len(values) - 1
        sets.append(f"location = ST_SetSRID(ST_MakePoint(${n}, ${n + 1}), 4326)::geography")
    row = await conn.fetchrow(
        f"WITH d AS (UPDATE depots SET {', '.join(sets)} WHERE id = $1 RETURNING *) "
        f"SELECT {_DEPOT} FROM d",
        *values,
    )
    return depot_from_row(row) if row else None


async def delete_depot(conn: Conn, depot_id: int) -> bool:
    """Delete a depot no vehicle uses; False when there is no such depot."""
    try:
        status: str = await conn.execute("DELETE FROM depots WHERE id = $1", depot_id)
    except asyncpg.ForeignKeyViolationError as exc:
        raise InUse(depot_id) from exc
    return status.endswith(" 1")


# --- vehicles -----------------------------------------------------------------------------


async def _device_id(conn: Conn, unique_id: str | None) -> int | None:
    if unique_id is None:
        return None
    found: int | None = await conn.fetchval(
        "SELECT id FROM devices WHERE unique_id = $1", unique_id
    )
    if found is None:
        raise UnknownReference("device")
    return found


def _fk_field(exc: asyncpg.ForeignKeyViolationError) -> str:
    detail = str(getattr(exc, "detail", "") or exc)
    for name in ("start_depot_id", "end_depot_id", "device_id"):
        if name in detail:
            return name.removesuffix("_id") if name == "device_id" else name
    return "reference"


async def insert_vehicle(conn: Conn, fields: dict[str, Any]) -> Vehicle:
    """Store a new vehicle; `UnknownReference` names a missing device or depot."""
    cols = ["device_id"]
    values: list[Any] = [await _device_id(conn, fields.get("device"))]
    for name in VEHICLE_WRITABLE:
        if name in fields:
            cols.append(name)
            values.append(fields[name])
    marks = ", ".join(f"${i}" for i in range(1, len(values) + 1))
    try:
        row = await conn.fetchrow(
            f"WITH v AS (INSERT INTO vehicles ({', '.join(cols)}) VALUES ({marks}) RETURNING *) "
            f"SELECT {_VEHICLE} FROM v LEFT JOIN devices dev ON dev.id = v.device_id",
            *values,
        )
    except asyncpg.ForeignKeyViolationError as exc:
        raise UnknownReference(_fk_field(exc)) from exc
    assert row is not None
    return vehicle_from_row(row)


async def get_vehicle(conn: Conn, vehicle_id: int) -> Vehicle | None:
    """One vehicle by id."""
    row = await conn.fetchrow(f"SELECT {_VEHICLE} FROM {_VEHICLE_FROM} WHERE v.id = $1", vehicle_id)
    return vehicle_from_row(row) if row else None


async def list_vehicles(conn: Conn, active: bool | None = None) -> list[Vehicle]:
    """Every vehicle (or only active/inactive ones), by name."""
    if active is None:
        rows = await conn.fetch(f"SELECT {_VEHICLE} FROM {_VEHICLE_FROM} ORDER BY v.name, v.id")
    else:
        rows = await conn.fetch(
            f"SELECT {_VEHICLE} FROM {_VEHICLE_FROM} WHERE v.active = $1 ORDER BY v.name, v.id",
            active,
        )
    return [vehicle_from_row(r) for r in rows]


async def vehicles_by_ids(conn: Conn, ids: Sequence[int]) -> dict[int, Vehicle]:
    """Vehicles by id (the planner's lookup when a plan names its vehicles)."""
    rows = await conn.fetch(
        f"SELECT {_VEHICLE} FROM {_VEHICLE_FROM} WHERE v.id = ANY($1::bigint[])", list(ids)
    )
    return {r["id"]: vehicle_from_row(r) for r in rows}


async def update_vehicle(conn: Conn, vehicle_id: int, fields: dict[str, Any]) -> Vehicle | None:
    """Change a vehicle; None when there is no such vehicle."""
    sets = ["updated_at = now()"]
    values: list[Any] = [vehicle_id]
    if "device" in fields:
        values.append(await _device_id(conn, fields["device"]))
        sets.append(f"device_id = ${len(values)}")
    for name in VEHICLE_WRITABLE:
        if name in fields:
            values.append(fields[name])
            sets.append(f"{name} = ${len(values)}")
    try:
        row = await conn.fetchrow(
            f"WITH v AS (UPDATE vehicles SET {', '.join(sets)} WHERE id = $1 RETURNING *) "
            f"SELECT {_VEHICLE} FROM v LEFT JOIN devices dev ON dev.id = v.device_id",
            *values,
        )
    except asyncpg.ForeignKeyViolationError as exc:
        raise UnknownReference(_fk_field(exc)) from exc
    return vehicle_from_row(row) if row else None


async def delete_vehicle(conn: Conn, vehicle_id: int) -> bool:
    """Delete a vehicle nothing refers to; False when there is no such vehicle."""
    try:
        status: str = await conn.execute("DELETE FROM vehicles WHERE id = $1", vehicle_id)
    except asyncpg.ForeignKeyViolationError as exc:
        raise InUse(vehicle_id) from exc
    return status.endswith(" 1")
