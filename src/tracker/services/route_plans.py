"""Route plans kept per instance: a plan is built once per route and revision, then reused
for every fix (projection, path in metres, where each stop lies along it)."""

from __future__ import annotations

from collections import OrderedDict

import asyncpg

from tracker import offload
from tracker.core.route import progress
from tracker.core.route.progress import RoutePlan
from tracker.store import learning as learned
from tracker.store import routes as store

_LONG_PATH = 200  # path points from which building a plan is worth a thread


class PlanCache:
    """Least recently used plans by route id, each valid for one revision (re-planning
    bumps a route's revision)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._plans: OrderedDict[int, tuple[int, RoutePlan]] = OrderedDict()

    def cached(self, route_id: int, revision: int) -> RoutePlan | None:
        """The route's plan at `revision` if this instance has it."""
        cached = self._plans.get(route_id)
        if cached is None or cached[0] != revision:
            return None
        self._plans.move_to_end(route_id)
        return cached[1]

    async def get(self, conn: asyncpg.Connection, route_id: int, revision: int) -> RoutePlan:
        """The route's plan at `revision`, built from the store when not cached."""
        plan = self.cached(route_id, revision)
        if plan is not None:
            return plan
        route = await store.load_route(conn, route_id)
        history = await learned.snapshot(conn, route.path)
        # Tens of milliseconds for a long road path: in a thread, so the acks go on.
        plan = await offload.run(len(route.path) >= _LONG_PATH, progress.plan, route, history)
        self.keep(route_id, plan, revision)
        return plan

    def keep(self, route_id: int, plan: RoutePlan, revision: int = 0) -> None:
        """Remember a plan just built (a route being created)."""
        self._plans[route_id] = (revision, plan)
        self._plans.move_to_end(route_id)
        while len(self._plans) > self._size:
            self._plans.popitem(last=False)

    def forget(self, route_id: int) -> None:
        """Drop a route's plan (handed to another van, re-planned elsewhere)."""
        self._plans.pop(route_id, None)
