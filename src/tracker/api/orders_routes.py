"""The routes of orders, depots and vehicles (one table, added to the app's routes)."""

from __future__ import annotations

from starlette.routing import BaseRoute, Route

from tracker.api import depots, orders, orders_import, vehicles
from tracker.api.paths import IdConvertor  # noqa: F401 (registers {name:id})

ROUTES: list[BaseRoute] = [
    Route("/api/v1/orders", orders.create_orders, methods=["POST"]),
    Route("/api/v1/orders", orders.list_orders, methods=["GET"]),
    Route("/api/v1/orders/import", orders_import.import_orders, methods=["POST"]),
    Route("/api/v1/orders/{order_id:id}", orders.get_order, methods=["GET"]),
    Route("/api/v1/orders/{order_id:id}", orders.patch_order, methods=["PATCH"]),
    Route("/api/v1/orders/{order_id:id}/cancel", orders.cancel_order, methods=["POST"]),
    Route("/api/v1/depots", depots.create_depot, methods=["POST"]),
    Route("/api/v1/depots", depots.list_depots, methods=["GET"]),
    Route("/api/v1/depots/{depot_id:id}", depots.get_depot, methods=["GET"]),
    Route("/api/v1/depots/{depot_id:id}", depots.patch_depot, methods=["PATCH"]),
    Route("/api/v1/depots/{depot_id:id}", depots.delete_depot, methods=["DELETE"]),
    Route("/api/v1/vehicles", vehicles.create_vehicle, methods=["POST"]),
    Route("/api/v1/vehicles", vehicles.list_vehicles, methods=["GET"]),
    Route("/api/v1/vehicles/{vehicle_id:id}", vehicles.get_vehicle, methods=["GET"]),
    Route("/api/v1/vehicles/{vehicle_id:id}", vehicles.patch_vehicle, methods=["PATCH"]),
    Route("/api/v1/vehicles/{vehicle_id:id}", vehicles.delete_vehicle, methods=["DELETE"]),
]
