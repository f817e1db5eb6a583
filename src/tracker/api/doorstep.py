"""The doorstep's endpoints: driver reports and proof, the customer's actions, messages."""

from __future__ import annotations

from starlette.routing import BaseRoute

from tracker.api import customer, messaging, reports

# Before the tracking page's catch-all `/t/{token:any}`.
ROUTES: list[BaseRoute] = [*reports.ROUTES, *customer.ROUTES, *messaging.ROUTES]
