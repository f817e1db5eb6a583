"""PostgreSQL crashes while phones keep posting: 503 with Retry-After while it is down,
never a 2xx for a ping that was not committed, and once it is back every acknowledged ping
is in the table exactly once. Runs a private cluster: the shared server is never stopped."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import orjson

from tests.conftest import ServerFactory, add_device
from tests.faults.conftest import HOST, HttpConnection, Phone, PrivatePostgres, audit, record

PHONES = 6


async def retry_failed(phone: Phone, port: int) -> Counter[str]:
    """What a phone does later: send every ping that got no 2xx again, in batches."""
    totals: Counter[str] = Counter()
    conn = await HttpConnection.open(HOST, port)
    try:
        pings = sorted({p for p, _ in phone.failed}, key=lambda p: p.seq)
        for i in range(0, len(pings), 50):
            body = orjson.dumps({"positions": [p.json() for p in pings[i : i + 50]]})
            answer = await conn.request("POST", "/api/v1/positions", body, phone.token)
            totals[f"status_{answer.status}"] += 1
            reply: dict[str, Any] = answer.json()
            for key in ("stored", "duplicates", "rejected"):
                totals[key] += reply.get(key, 0)
    finally:
        conn.close()
    return totals


async def test_postgres_crash_while_phones_post(
    private_postgres: PrivatePostgres, server_factory: ServerFactory
) -> None:
    pg = private_postgres
    # Device tokens stay cached (as in production), so the writer meets the dead database.
    srv = await server_factory(database_url=pg.url(), auth_cache_s=300.0)
    devices = [await add_device(srv) for _ in range(PHONES)]
    phones = [Phone(d.unique_id, d.token, HOST, srv.port) for d in devices]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(p.run(stop)) for p in phones]
    try:
        await asyncio.sleep(2.5)
        await pg.crash()
        down_at = time.monotonic()
        await asyncio.sleep(4.0)
        restart_at = time.monotonic()
        await pg.start()
        up_at = time.monotonic()
        # Post on until every phone had acknowledgements again, then a little more.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not all(
            any(began > up_at and o.startswith("2") for began, _, o, _ in p.log) for p in phones
        ):
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.5)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        for p in phones:
            p.close()

    requests = [entry for p in phones for entry in p.log]
    while_down = [e for e in requests if e[0] >= down_at and e[1] <= restart_at]
    down_outcomes = Counter(o for _, _, o, _ in while_down)
    down_without_retry_after = sum(1 for e in while_down if e[2] == "503" and not e[3])
    answers = sum((p.answers for p in phones), Counter[str]())
    acked_after = sum(1 for e in requests if e[0] > up_at and e[2].startswith("2"))
    found = await audit(pg.url(), phones)
    retried: Counter[str] = Counter()
    for p in phones:
        retried += await retry_failed(p, srv.port)
    after_retry = await audit(pg.url(), phones)
    numbers = {
        "phones": PHONES,
        "outage_s": round(restart_at - down_at, 2),
        "pings_sent": found.sent,
        "pings_acknowledged": found.acked,
        "pings_503": sum(p.answers["503"] for p in phones),
        "pings_failed_other": found.failed - sum(p.answers["503"] for p in phones),
        "requests_while_down": len(while_down),
        "answers_while_down": dict(down_outcomes),
        "answers_while_down_without_retry_after": down_without_retry_after,
        "acknowledged_requests_after_restart": acked_after,
        "rows_stored": found.stored,
        "acknowledged_missing": found.acked_missing,
        "rows_duplicated": found.duplicated,
        "rows_not_matching_ping": found.wrong_row,
        "failed_but_stored": found.failed_but_stored,
        "retry_of_failed": {k: retried[k] for k in ("stored", "duplicates", "rejected")},
        "rows_stored_after_retry": after_retry.stored,
        "rejected_pings": sum(p.rejected for p in phones),
        "answers": dict(answers),
    }
    record("postgres_crash", numbers)

    # While the database was down: only 503, each telling the phone when to retry.
    assert len(while_down) >= PHONES
    assert set(down_outcomes) == {"503"}, down_outcomes
    assert down_without_retry_after == 0
    # Nothing but 202 and 503 at any time (no 500s, no dropped connections).
    assert set(answers) <= {"202", "503"}, answers
    assert numbers["rejected_pings"] == 0
    assert acked_after >= PHONES
    # Every acknowledged ping is stored, once, as the ping that was sent.
    assert found.acked > 0
    assert found.acked_missing == 0
    assert found.duplicated == 0
    assert found.wrong_row == 0
    # A 503'd ping may have committed (the answer was lost with the connection); the retry
    # reports it as a duplicate, stores the rest, and leaves every ping exactly once.
    assert retried["duplicates"] == found.failed_but_stored
    assert retried["stored"] + retried["duplicates"] == found.failed
    assert after_retry.stored == after_retry.sent == found.sent
    assert after_retry.duplicated == 0 and after_retry.wrong_row == 0
