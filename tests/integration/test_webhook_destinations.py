"""Webhooks never reach what only the server can reach (issue 15, finding 1: SSRF).

Real servers and a real receiver on loopback: every spelling of a loopback, private or
link-local receiver is refused at registration; a subscription whose host points inside
at send time (stored earlier, or a name whose answer changed) is refused before any
connection, with a short reason in the log; with an explicit allow-list the receiver is
reached, at the one address the check resolved (DNS rebinding has no second lookup to use),
under its own Host name.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import trustme
import uvicorn

from tests.conftest import ServerFactory, free_port, own_database
from tests.integration.test_tracking import ADMIN, new_delivery
from tests.integration.test_webhooks import Receiver, deliveries, wait_for
from tracker.core.destinations import parse_networks
from tracker.services.delivery import post_pinned
from tracker.services.destinations import system_resolver
from tracker.store import webhooks as webhook_store

Json = dict[str, Any]


@pytest.fixture(scope="module")
async def dest_db() -> AsyncIterator[str]:
    """A database of this module's own: only its servers work its webhook outbox."""
    async with own_database("destinations") as url:
        yield url


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    await r.start()
    yield r
    await r.stop()


def settings(url: str, **extra: Any) -> dict[str, Any]:
    return {
        "database_url": url,
        "webhook_poll_s": 0.05,
        "webhook_retry_base_s": 0.2,
        "webhook_retry_max_s": 0.5,
        **extra,
    }


def hostile_urls(port: int) -> list[str]:
    """The spellings the issue registered, and their neighbours."""
    return [
        f"http://127.0.0.1:{port}/hook",
        f"http://[::1]:{port}/hook",
        f"http://localhost:{port}/hook",
        f"http://0.0.0.0:{port}/hook",
        f"http://2130706433:{port}/hook",
        f"http://0x7f.1:{port}/hook",
        f"http://127.1:{port}/hook",
        f"http://user:pw@127.0.0.1:{port}/hook",
        f"http://[::ffff:127.0.0.1]:{port}/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.1.2.3/hook",
        "http://192.168.0.1/hook",
        "http://100.64.0.1/hook",
        "http://224.0.0.1/hook",
        "http://[fe80::1]/hook",
        "http://[fd00::1]/hook",
    ]


async def test_every_spelling_of_an_internal_receiver_is_refused_at_registration(
    server_factory: ServerFactory, dest_db: str, receiver: Receiver
) -> None:
    srv = await server_factory(**settings(dest_db))
    statuses: dict[str, int] = {}
    async with srv.client() as client:
        for url in hostile_urls(receiver.port):
            r = await client.post(
                "/api/v1/webhooks", json={"url": url, "events": ["stop.arrived"]}, headers=ADMIN
            )
            statuses[url] = r.status_code
            if r.status_code == 400:
                body = r.json()
                assert body["error"] == "invalid_request" and body["message"].startswith("url:")
        # A name that does not resolve yet is accepted (the sender checks again).
        ok = await client.post(
            "/api/v1/webhooks",
            json={"url": "https://hooks.example.test/tracker", "events": ["stop.arrived"]},
            headers=ADMIN,
        )
    assert ok.status_code == 201, ok.text
    refused = [url for url, status in statuses.items() if status == 400]
    print(f"refused at registration: {len(refused)} of {len(statuses)}")
    assert statuses == {url: 400 for url in statuses}
    assert receiver.requests == []


async def test_a_stored_internal_receiver_is_refused_before_connecting(
    server_factory: ServerFactory, dest_db: str, receiver: Receiver
) -> None:
    srv = await server_factory(**settings(dest_db))
    pool: asyncpg.Pool = srv.runtime.pool
    # Registered before this check existed (or while an allow-list said so).
    row = await webhook_store.create(
        pool, receiver.url, "whsec_old", ["stop.arrived"], 300.0, "legacy"
    )
    # A name that resolved elsewhere at registration and points at loopback now.
    renamed = f"http://moved.example.test:{receiver.port}/hook"
    async with srv.client() as client:
        r = await client.post(
            "/api/v1/webhooks", json={"url": renamed, "events": ["stop.arrived"]}, headers=ADMIN
        )
    assert r.status_code == 201, r.text
    moved = r.json()

    async def to_loopback(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    srv.runtime.webhooks.resolver = to_loopback
    d = await new_delivery(srv)
    await d.set_status(0, "arrived")

    async def attempted(hook_id: int) -> Json:
        while True:
            found = await deliveries(srv, hook_id)
            if found and found[0]["attempt_log"] and found[0]["last_error"]:
                return found[0]
            await asyncio.sleep(0.05)

    for hook_id in (row["id"], moved["id"]):
        entry = await asyncio.wait_for(attempted(hook_id), 10.0)
        (first, *_) = entry["attempt_log"]
        assert first["status_code"] is None
        assert first["error"] == "blocked: not a public address"
        assert entry["last_error"] == "blocked: not a public address"
    await asyncio.sleep(0.5)
    assert receiver.requests == []  # nothing was ever sent


async def test_allowed_network_is_reached_at_the_address_that_was_checked(
    server_factory: ServerFactory, dest_db: str, receiver: Receiver
) -> None:
    srv = await server_factory(**settings(dest_db, webhook_allow_cidrs="127.0.0.1/32"))
    lookups: list[str] = []

    async def rebinding(host: str, port: int) -> list[str]:
        if host != "receiver.example.test":
            return await system_resolver(host, port)
        # The first answer passes the check; any later one would lead elsewhere.
        lookups.append(host)
        return ["127.0.0.1"] if len(lookups) % 2 == 1 else ["10.66.66.66"]

    srv.runtime.webhooks.resolver = rebinding
    name = f"receiver.example.test:{receiver.port}"
    async with srv.client() as client:
        r = await client.post(
            "/api/v1/webhooks",
            json={"url": f"http://{name}/hook", "events": ["stop.arrived"]},
            headers=ADMIN,
        )
        assert r.status_code == 201, r.text
        # Allowed by the list: loopback given as an address works too.
        direct = await client.post(
            "/api/v1/webhooks",
            json={"url": receiver.url, "events": ["stop.arrived"]},
            headers=ADMIN,
        )
        assert direct.status_code == 201, direct.text
        # ...but only the listed network: the rest of loopback stays refused.
        other = await client.post(
            "/api/v1/webhooks",
            json={"url": f"http://127.0.0.2:{receiver.port}/hook", "events": ["stop.arrived"]},
            headers=ADMIN,
        )
        assert other.status_code == 400
    lookups.clear()
    d = await new_delivery(srv)
    await d.set_status(0, "arrived")
    await wait_for(lambda: len(receiver.acknowledged()) >= 2)
    hosts = sorted(r.headers["host"] for r in receiver.requests)
    assert hosts == sorted([name, f"127.0.0.1:{receiver.port}"])
    # One lookup for the attempt that needed one, and the connection went where it said.
    assert lookups == ["receiver.example.test"]


async def test_tls_is_checked_against_the_name_while_connecting_to_the_pinned_address(
    tmp_path: Path,
) -> None:
    """A real TLS receiver on loopback with a certificate for its name only: the sender
    connects to the vetted address and still sends the name (SNI, Host), so the
    certificate verifies; the same address under another name fails verification."""
    ca = trustme.CA()
    cert = ca.issue_cert("receiver.example.test")
    pem = tmp_path / "receiver.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(pem))
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        seen.append(dict(scope["headers"])[b"host"].decode())
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", ssl_certfile=str(pem)
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    trust = ssl.create_default_context()
    ca.configure_trust(trust)
    lookups: list[str] = []

    async def to_loopback(host: str, p: int) -> list[str]:
        lookups.append(host)
        return ["127.0.0.1"]

    allowed = parse_networks("127.0.0.1/32")
    try:
        async with httpx.AsyncClient(verify=trust, trust_env=False) as client:
            ok = await post_pinned(
                client,
                f"https://receiver.example.test:{port}/hook",
                b"{}",
                {"Content-Type": "application/json"},
                allowed,
                to_loopback,
                5.0,
            )
            wrong = await post_pinned(
                client,
                f"https://impostor.example.test:{port}/hook",
                b"{}",
                {},
                allowed,
                to_loopback,
                5.0,
            )
    finally:
        server.should_exit = True
        await task
    assert ok == (204, None)
    assert seen == [f"receiver.example.test:{port}"]
    assert wrong == (None, "connect failed")  # the certificate is not the impostor's
    assert lookups == ["receiver.example.test", "impostor.example.test"]
