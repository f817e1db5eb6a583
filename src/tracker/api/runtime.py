"""The parts of one running server instance, built by the app's lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from tracker import metrics
from tracker.api.ratelimit import Limits
from tracker.api.slowbody import BodyGuard
from tracker.config import Settings
from tracker.core import accuracy
from tracker.core.filters import FilterConfig
from tracker.core.route.progress import EtaConfig
from tracker.live.bus import LocalBus, make_bus
from tracker.live.hub import Hub
from tracker.live.source import load_vehicles
from tracker.planning.matrix import TravelModel
from tracker.planning.solver import SolverOptions
from tracker.services.auth import Authenticator
from tracker.services.delivery import WebhookSender
from tracker.services.geocoding import GeocodingService, NominatimClient
from tracker.services.ingest import IngestService
from tracker.services.learning import LearningService
from tracker.services.notifications import MessageSender, Notifications, channels
from tracker.services.planning import PlanningService
from tracker.services.replanning import ReplanningService
from tracker.services.route_desk import RouteDesk
from tracker.services.route_log import EventLog, per_device
from tracker.services.route_plans import PlanCache
from tracker.services.route_work import RouteWork
from tracker.services.routing import RoutingService, with_routes
from tracker.services.travel import Travel
from tracker.store import accuracy as accuracy_store
from tracker.store import messages as message_store
from tracker.store import orders as order_store
from tracker.store import proofs as proof_store
from tracker.store import retention
from tracker.store import webhooks as webhook_store
from tracker.store.db import DB_ERRORS, create_pool
from tracker.store.devices import last_fix
from tracker.store.geocoding import PgGeocodeQueue
from tracker.store.writer import PositionWriter

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """Pool, writer, bus, services: everything a request handler may use."""

    settings: Settings
    pool: asyncpg.Pool
    writer: PositionWriter
    bus: LocalBus
    auth: Authenticator
    ingest: IngestService
    hub: Hub
    routing: RoutingService
    webhooks: WebhookSender
    limits: Limits
    route_desk: RouteDesk  # workspace: cancel and reassign routes
    planning: PlanningService
    replanning: ReplanningService
    notifications: Notifications
    messages: MessageSender
    bodies: BodyGuard
    learning: LearningService
    geocoding: GeocodingService | None = None  # None: no TRACKER_GEOCODER_URL
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @classmethod
    async def start(cls, settings: Settings) -> Runtime:
        """Connect (lazily: the server starts even while PostgreSQL is down) and start loops."""
        pool = await create_pool(settings.database_url, settings.db_pool_size)
        writer = PositionWriter(
            settings.database_url, settings.commit_interval_ms, settings.commit_max_rows
        )
        writer.start()
        bus = make_bus(settings.redis_url, settings.bus_channel)
        hub = Hub(
            with_routes(pool, lambda: load_vehicles(pool), lambda: hub),
            settings.tick_ms / 1000.0,
            settings.ws_stuck_s,
            max_frame_bytes=settings.ws_max_frame_bytes,
        )
        bus.subscribe(hub.on_bus)
        bus.on_resumed(hub.on_bus_resumed)
        await bus.start()
        cfg = FilterConfig(
            max_future_s=settings.max_future_s,
            max_speed_mps=settings.max_speed_mps,
            max_age_s=settings.retention_days * 86400.0 or None,
        )
        auth = Authenticator(
            pool, settings.admin_token, settings.auth_cache_s, settings.auth_cache_size, bus
        )
        # Credential changes travel on the bus: every instance forgets and disconnects.
        bus.subscribe(auth.on_bus)
        bus.on_resumed(auth.on_bus_resumed)
        eta_cfg = EtaConfig(arriving_s=settings.arriving_s, auto_complete=settings.auto_complete)
        plans = PlanCache(settings.plan_cache)
        events = EventLog(bus)
        # Route progress runs after the ack, in rounds; route changes anywhere reach every
        # instance's "no route here" knowledge on the bus.
        work = RouteWork(pool, plans, events, eta_cfg, cache_s=settings.route_cache_s)
        bus.subscribe(work.on_bus)
        bus.on_resumed(work.on_bus_resumed)
        ingest = IngestService(writer, bus, cfg, lambda device_id: last_fix(pool, device_id), work)
        # Every instance's last positions keep every instance's jump-filter references.
        bus.subscribe(ingest.on_bus)
        bus.on_resumed(ingest.on_bus_resumed)
        routing = RoutingService(pool, bus, eta_cfg, plans, events, work)
        # Webhook deliveries are queued in the transaction that stores the events.
        routing.event_sinks.append(webhook_store.enqueue)
        # Each arrival scores the ETAs its stop was shown, once (live accuracy).
        routing.event_sinks.append(per_device(accuracy_store.record_arrivals))
        # Route planning: roads (or straight lines) and VROOM; re-planning shares both.
        travel = Travel(
            pool,
            TravelModel(
                settings.plan_speed_kmh / 3.6, settings.plan_detour, settings.plan_access_kmh / 3.6
            ),
        )
        solver_options = SolverOptions(
            settings.plan_exploration, settings.plan_threads, settings.plan_timeout_s or None
        )
        # Orders follow their stops.
        routing.event_sinks.append(per_device(order_store.follow_stop_events))
        # So are customer messages (arriving, delivered, failed).
        routing.event_sinks.append(
            message_store.event_sink(settings.message_language, channels(settings))
        )
        rt = cls(
            settings=settings,
            pool=pool,
            writer=writer,
            bus=bus,
            auth=auth,
            ingest=ingest,
            hub=hub,
            routing=routing,
            webhooks=WebhookSender(pool, settings),
            limits=Limits.from_settings(settings),
            route_desk=RouteDesk(pool, bus, routing),
            planning=PlanningService(
                pool, routing, travel, solver_options, settings.max_path_points
            ),
            replanning=ReplanningService(
                pool, bus, travel, EtaConfig(arriving_s=settings.arriving_s), solver_options
            ),
            notifications=Notifications(pool, settings),
            messages=MessageSender(pool, settings),
            bodies=BodyGuard(
                settings.body_timeout_s, settings.max_anonymous_bodies, settings.retry_after_s
            ),
            learning=LearningService(pool, settings.learn_interval_s),
        )
        if settings.geocoder_url:
            rt.geocoding = GeocodingService(
                PgGeocodeQueue(pool), NominatimClient(settings), settings.geocoder_interval_s
            )
            rt.spawn(rt.geocoding.run(), "geocoding")
        rt.spawn(work.run(), "route-work")
        rt.spawn(work.sweep(), "route-sweep")
        rt.spawn(rt._flush_metrics(), "metrics")
        rt.spawn(rt._accuracy_metrics(), "accuracy-metrics")
        rt.spawn(hub.run(), "hub")
        rt.spawn(rt.webhooks.run(), "webhooks")
        rt.spawn(auth.keep_checking(), "auth-recheck")
        rt.spawn(rt.bodies.run(), "body-deadlines")
        rt.spawn(rt._partitions_ahead(), "partitions-ahead")
        if channels(settings):
            rt.spawn(rt.messages.run(), "messages")
        proof_days = settings.proof_retention_days or settings.retention_days
        if proof_days > 0:
            rt.spawn(rt._purge_proofs(proof_days), "proof-retention")
        if settings.learn_interval_s > 0:
            rt.spawn(rt.learning.run(), "learning")
        if settings.retention_days > 0:
            rt.spawn(
                retention.keep_pruning(
                    settings.database_url, settings.retention_days, settings.retention_check_s
                ),
                "retention",
            )
        # Everything built so far lives as long as the process: out of the collector's
        # reach, a full collection (set off by any request allocating a lot) no longer
        # walks it, a pause of about 0.1-0.2 s for every request in the worker.
        gc.freeze()
        return rt

    def spawn(self, coro: Any, name: str) -> None:
        """Run a background loop that stops with the instance."""
        self._tasks.append(asyncio.create_task(coro, name=name))

    async def stop(self) -> None:
        """Graceful shutdown: flush pending writes first, then stop loops and disconnect."""
        await self.writer.close()
        # Apply what was acknowledged before stopping (the sweep would, at the next start).
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.routing.work.drain(), 5.0)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.geocoding is not None:
            await self.geocoding.close()
        await self.hub.close()
        await self.bus.close()
        await self.pool.close()
        metrics.flush()

    async def _flush_metrics(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            metrics.flush()

    async def refresh_accuracy_metrics(self) -> None:
        """Set the live accuracy gauges from the deployment's samples (see metrics.py)."""
        since = datetime.now(UTC) - timedelta(seconds=metrics.ACCURACY_WINDOW_S)
        by_horizon, _ = await accuracy_store.totals(self.pool, since)
        metrics.set_accuracy(accuracy.report(by_horizon))

    async def _accuracy_metrics(self) -> None:
        while True:
            # Down: the next round tries again; the gauges keep their last values.
            with contextlib.suppress(*DB_ERRORS):
                await self.refresh_accuracy_metrics()
            await asyncio.sleep(metrics.ACCURACY_REFRESH_S)

    async def _purge_proofs(self, days: float) -> None:
        # Proof photos and signatures go with the retention setting, like positions.
        while True:
            try:
                cutoff = datetime.now(UTC) - timedelta(days=days)
                gone = await proof_store.purge(self.pool, cutoff)
                if gone:
                    log.info("purged %d proof images older than %s", gone, cutoff.isoformat())
            except (*DB_ERRORS, asyncpg.PostgresError) as exc:
                log.warning("could not purge proof images: %s", exc)
            await asyncio.sleep(self.settings.retention_check_s)

    async def _partitions_ahead(self) -> None:
        # Create next months' partitions long before the first ping needs them.
        while True:
            try:
                now = datetime.now(UTC)
                for days in (0, 32, 64):
                    await self.pool.execute(
                        "SELECT tracker_ensure_partition($1)", now + timedelta(days=days)
                    )
            except DB_ERRORS as exc:
                log.warning("could not create partitions ahead: %s", exc)
            except asyncpg.PostgresError as exc:
                log.warning("could not create partitions ahead: %s", exc)
            await asyncio.sleep(3600)
