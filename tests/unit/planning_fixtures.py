"""Orders, vehicles and depots for the planning unit tests (plain model values)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from typing import Any

from tracker.planning.model import Depot, Order, Vehicle

DAY = date(2026, 12, 2)
MADE = datetime(2026, 12, 1, tzinfo=UTC)


def order(order_id: int, lat: float, lon: float, **changes: Any) -> Order:
    """A located delivery of one parcel, two minutes of service, no window."""
    values: dict[str, Any] = {
        "id": order_id,
        "external_id": f"x{order_id}",
        "kind": "delivery",
        "lat": lat,
        "lon": lon,
        "address": f"Street {order_id}",
        "recipient": f"R{order_id}",
        "phone": "",
        "email": "",
        "windows": (),
        "service_s": 120.0,
        "size": {"parcels": 1.0},
        "skills": (),
        "priority": 0,
        "notes": "",
        "date": DAY,
        "status": "unplanned",
        "geocode_status": "given",
        "geocode_candidates": (),
        "route_id": None,
        "stop_id": None,
        "created_at": MADE,
        "updated_at": MADE,
    }
    values.update(changes)
    return Order(**values)


def vehicle(vehicle_id: int, **changes: Any) -> Vehicle:
    """A van for ten parcels, 08:00-17:00 UTC, from and back to depot 1."""
    values: dict[str, Any] = {
        "id": vehicle_id,
        "name": f"Van {vehicle_id}",
        "device_id": None,
        "device": None,
        "capacity": {"parcels": 10.0},
        "shift_start": time(8),
        "shift_end": time(17),
        "time_zone": "UTC",
        "start_depot_id": 1,
        "end_depot_id": 1,
        "skills": (),
        "max_duration_s": None,
        "active": True,
        "created_at": MADE,
        "updated_at": MADE,
    }
    values.update(changes)
    return Vehicle(**values)


def depot(depot_id: int = 1, lat: float = 42.5075, lon: float = 1.5218) -> Depot:
    return Depot(depot_id, f"Depot {depot_id}", lat, lon, "", MADE, MADE)
