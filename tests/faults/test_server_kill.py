"""The server is killed with SIGKILL under load (supervisor and both workers at once) and
started again: every ping it acknowledged before dying is stored; answers lost with the
process are connection errors, never a 2xx."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

from tests.faults.conftest import HOST, Phone, TrackerProcess, audit, record
from tracker.store.db import create_pool
from tracker.store.devices import add_device

PHONES = 8


async def test_sigkill_under_load_loses_no_acknowledged_ping(
    database_url: str, tracker_processes: list[TrackerProcess]
) -> None:
    server = TrackerProcess(database_url, workers=2)
    tracker_processes.append(server)
    await server.start()
    pool = await create_pool(database_url, 2)
    try:
        devices = [await add_device(pool, f"Killed van {i}") for i in range(PHONES)]
    finally:
        await pool.close()
    phones = [Phone(d.unique_id, token, HOST, server.port, pause_s=0.0) for d, token in devices]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(p.run(stop)) for p in phones]
    try:
        await asyncio.sleep(3.0)
        acked_before_kill = sum(len(p.acked) for p in phones)
        server.kill_group()
        killed_at = time.monotonic()
        await asyncio.sleep(1.0)
        await server.start()
        up_at = time.monotonic()
        await asyncio.sleep(2.5)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        for p in phones:
            p.close()

    found = await audit(database_url, phones)
    answers = sum((p.answers for p in phones), Counter[str]())
    requests = [entry for p in phones for entry in p.log]
    reset = sum(1 for e in requests if e[2] == "reset")
    acked_after = sum(1 for p in phones for e in p.log if e[0] > up_at and e[2].startswith("2"))
    numbers = {
        "phones": PHONES,
        "workers": 2,
        "pings_sent": found.sent,
        "pings_acknowledged": found.acked,
        "pings_acknowledged_before_kill": acked_before_kill,
        "requests_acknowledged_after_restart": acked_after,
        "requests_reset_by_kill": reset,
        "requests_refused_while_down": sum(1 for e in requests if e[2] == "refused"),
        "requests_in_flight_at_kill": sum(1 for e in requests if e[0] < killed_at < e[1]),
        "pings_failed": found.failed,
        "rows_stored": found.stored,
        "acknowledged_missing": found.acked_missing,
        "rows_duplicated": found.duplicated,
        "rows_not_matching_ping": found.wrong_row,
        "failed_but_stored": found.failed_but_stored,
        "rejected_pings": sum(p.rejected for p in phones),
        "answers": dict(answers),
    }
    record("server_sigkill", numbers)

    # The kill hit requests in flight, and the phones noticed.
    assert reset >= 1
    # Nothing but acknowledgements and lost connections: no 5xx from the restarted server.
    assert set(answers) <= {"202", "reset", "refused"}, answers
    assert sum(p.rejected for p in phones) == 0
    assert acked_after > 0
    # acknowledged ⊆ stored, each once and as sent.
    assert found.acked_missing == 0
    assert found.duplicated == 0
    assert found.wrong_row == 0
    assert found.stored == found.acked + found.failed_but_stored
