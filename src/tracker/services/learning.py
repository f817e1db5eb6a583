"""Learning travel times from finished drives: a periodic job shared by every instance.

Each round takes routes whose drive is over (completed or cancelled, or silent for
`quiet_s`), reads their stored fixes, turns them into cell crossings
(`core.route.history.crossings`) and folds those into `learned_cells`, in one transaction
per batch; rows being learned are locked, so instances running the job at once split the
work instead of counting a drive twice. Plans built afterwards (route creation, or a plan
loaded on another instance) use the new figures; the ping path never waits for any of it.
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from tracker.core.route import history as hist
from tracker.store import learning as store
from tracker.store.db import DB_ERRORS

log = logging.getLogger(__name__)

BATCH = 50


class LearningService:
    """Folds finished drives into the learned travel times, now or every `interval_s`."""

    def __init__(self, pool: asyncpg.Pool, interval_s: float, quiet_s: float = 1800.0) -> None:
        self._pool = pool
        self._interval_s = interval_s
        self._quiet_s = quiet_s

    async def learn_once(self) -> int:
        """Learn every drive that is ready; returns how many routes were learned."""
        learned = 0
        while True:
            async with self._pool.acquire() as conn, conn.transaction():
                drives = await store.drives_to_learn(conn, self._quiet_s, BATCH)
                for drive in drives:
                    crossings = hist.crossings(await store.track(conn, drive))
                    await store.add_crossings(conn, crossings)
                await store.mark_learned(conn, [d.route_id for d in drives])
            learned += len(drives)
            if len(drives) < BATCH:
                return learned

    async def run(self) -> None:
        """Learn every `interval_s` seconds until cancelled (a failed round is retried)."""
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                n = await self.learn_once()
            except DB_ERRORS:
                log.warning("learning travel times failed; retrying next round", exc_info=True)
                continue
            if n:
                log.info("learned travel times from %d drives", n)
