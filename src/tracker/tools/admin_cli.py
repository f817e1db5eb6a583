"""`tracker device list|disable|enable|rotate` and `tracker key list|revoke`: the
management API's operations from the command line, straight on the database.

A rotated token and its setup links are printed once (they are stored hashed); a revoked
key stops working on every instance within TRACKER_AUTH_CACHE_S.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable

import asyncpg

from tracker.config import Settings


def _run(work: Callable[[asyncpg.Pool], Awaitable[int]]) -> int:
    from tracker.store.db import create_pool

    async def run() -> int:
        pool = await create_pool(Settings.from_env().database_url, 1)
        try:
            return await work(pool)
        finally:
            await pool.close()

    return asyncio.run(run())


def _device_list(args: argparse.Namespace) -> int:
    from tracker.store import devices

    async def work(pool: asyncpg.Pool) -> int:
        rows = await devices.devices_with_last(pool)
        print(f"{'unique id':<24} {'name':<24} {'enabled':<8} last fix")
        for r in rows:
            last = r["fix_time"].isoformat(timespec="seconds") if r["fix_time"] else "never"
            enabled = "yes" if r["enabled"] else "no"
            print(f"{r['unique_id']:<24} {r['name']:<24} {enabled:<8} {last}")
        return 0

    return _run(work)


def _device_enable(enabled: bool) -> Callable[[argparse.Namespace], int]:
    def command(args: argparse.Namespace) -> int:
        from tracker.store import devices

        async def work(pool: asyncpg.Pool) -> int:
            device = await devices.set_enabled(pool, args.unique_id, enabled)
            if device is None:
                print(f"no device {args.unique_id!r}", file=sys.stderr)
                return 1
            print(f"device {device.unique_id} {'enabled' if enabled else 'disabled'}")
            return 0

        return _run(work)

    return command


def _device_rotate(args: argparse.Namespace) -> int:
    from tracker.api.device_setup import setup_links
    from tracker.store import registry

    async def work(pool: asyncpg.Pool) -> int:
        rotated = await registry.rotate_token(pool, args.unique_id)
        if rotated is None:
            print(f"no device {args.unique_id!r}", file=sys.stderr)
            return 1
        device, token = rotated
        print(f"device {device.unique_id} ({device.name}): new token")
        print(f"token: {token}")
        for app, link in setup_links(Settings.from_env(), device.unique_id, token).items():
            print(f"{app} setup: {link['url']}")
        print("The old token no longer works; the new one is shown only this once.")
        return 0

    return _run(work)


def _key_list(args: argparse.Namespace) -> int:
    from tracker.store import registry

    async def work(pool: asyncpg.Pool) -> int:
        print(f"{'id':>5} {'role':<11} {'state':<8} {'created':<26} name")
        for k in await registry.list_keys(pool):
            state = "active" if k.enabled else "revoked"
            created = k.created_at.isoformat(timespec="seconds")
            print(f"{k.id:>5} {k.role:<11} {state:<8} {created:<26} {k.name}")
        return 0

    return _run(work)


def _key_revoke(args: argparse.Namespace) -> int:
    from tracker.store import registry

    async def work(pool: asyncpg.Pool) -> int:
        key = await registry.revoke_key(pool, args.key_id)
        if key is None:
            print(f"no key {args.key_id}", file=sys.stderr)
            return 1
        print(f"key {key.id} ({key.name}) revoked")
        return 0

    return _run(work)


def register_device(dsub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`device list|disable|enable|rotate` beside `device add`."""
    dlist = dsub.add_parser("list", help="list devices with their last fix")
    dlist.set_defaults(func=_device_list)
    helps = {"disable": "disable a device: its pings are refused", "enable": "enable it again"}
    for name, enabled in (("disable", False), ("enable", True)):
        p = dsub.add_parser(name, help=helps[name])
        p.add_argument("unique_id")
        p.set_defaults(func=_device_enable(enabled))
    rotate = dsub.add_parser("rotate", help="give a device a new token (printed once)")
    rotate.add_argument("unique_id")
    rotate.set_defaults(func=_device_rotate)


def register_key(ksub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`key list|revoke` beside `key add`."""
    klist = ksub.add_parser("list", help="list API keys (never the keys themselves)")
    klist.set_defaults(func=_key_list)
    revoke = ksub.add_parser("revoke", help="revoke an API key for good")
    revoke.add_argument("key_id", type=int)
    revoke.set_defaults(func=_key_revoke)
