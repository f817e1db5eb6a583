"""The `tracker` command: serve, migrate, device and key administration, and tools."""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from collections.abc import Callable

from tracker import logs
from tracker.config import ConfigError, Settings
from tracker.tools import admin_cli

Command = Callable[[argparse.Namespace], int]


def _serve(args: argparse.Namespace) -> int:
    import dataclasses
    import os
    import shutil
    import signal
    import tempfile

    import uvicorn

    # The app is built by a factory in each worker, so settings travel in the environment.
    if args.osmand_port is not None:
        os.environ["TRACKER_OSMAND_PORT"] = str(args.osmand_port)
    os.environ.setdefault("TRACKER_OSMAND_HOST", args.host)
    settings = Settings.from_env()
    if args.log_level is not None:
        settings = dataclasses.replace(settings, log_level=args.log_level)
    # Every worker writes its metrics to files here and /metrics sums them (prometheus_client's
    # multiprocess mode); the variable must be set before a worker creates its first metric.
    # Each counter update writes to a memory-mapped file: unless TMPDIR says where, keep them
    # in memory (tmpfs) when the machine has one, so they are never written back to a disk.
    shm = os.access("/dev/shm", os.W_OK) and not os.environ.get("TMPDIR")
    metrics_dir = tempfile.mkdtemp(prefix="tracker-metrics-", dir="/dev/shm" if shm else None)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir

    def remove_then_end(sig: int, frame: object) -> None:
        # After a graceful stop uvicorn raises the signal that stopped it again; its default
        # action would end the process before the `finally` below removes the directory.
        shutil.rmtree(metrics_dir, ignore_errors=True)
        signal.signal(sig, signal.SIG_DFL)
        signal.raise_signal(sig)

    signal.signal(signal.SIGTERM, remove_then_end)
    try:
        uvicorn.run(
            "tracker.api.app:app_from_env",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            log_config=logs.config(settings),
            log_level=settings.log_level,
            access_log=False,  # the app writes its own (TRACKER_ACCESS_LOG)
            ws_ping_interval=20.0,
            ws_ping_timeout=20.0,
            ws_per_message_deflate=settings.ws_deflate,
            timeout_graceful_shutdown=10,
        )
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from tracker.store.migrations import ensure_database, migrate

    url = Settings.from_env().database_url

    async def run() -> list[str]:
        await ensure_database(url)
        return await migrate(url)

    applied = asyncio.run(run())
    print("applied: " + ", ".join(applied) if applied else "database is up to date")
    return 0


def _device_add(args: argparse.Namespace) -> int:
    from tracker.store import devices
    from tracker.store.db import create_pool

    async def run() -> int:
        pool = await create_pool(Settings.from_env().database_url, 1)
        try:
            device, token = await devices.add_device(pool, args.name, args.unique_id)
        except devices.DuplicateDevice:
            print(f"a device with unique id {args.unique_id!r} already exists", file=sys.stderr)
            return 1
        finally:
            await pool.close()
        print(f"device {device.unique_id} ({device.name})")
        print(f"token: {token}")
        print("The token is shown only this once; it is stored hashed.")
        return 0

    return asyncio.run(run())


def _key_add(args: argparse.Namespace) -> int:
    from tracker.store import devices
    from tracker.store.db import create_pool

    async def run() -> int:
        pool = await create_pool(Settings.from_env().database_url, 1)
        try:
            key = await devices.add_key(pool, args.name, args.role)
        finally:
            await pool.close()
        print(f"{args.role} key {args.name}: {key}")
        print("The key is shown only this once; it is stored hashed.")
        return 0

    return asyncio.run(run())


def _learn(args: argparse.Namespace) -> int:
    from tracker.services.learning import LearningService
    from tracker.store.db import create_pool

    async def run() -> int:
        pool = await create_pool(Settings.from_env().database_url, 1)
        try:
            return await LearningService(pool, 0.0, args.quiet_s).learn_once()
        finally:
            await pool.close()

    print(f"learned travel times from {asyncio.run(run())} drives")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="tracker", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP/WebSocket server")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        help="overrides TRACKER_LOG_LEVEL",
    )
    serve.add_argument(
        "--osmand-port",
        type=int,
        help="also listen here for Traccar Client/OsmAnd at `/` (Traccar's port: 5055)",
    )
    serve.set_defaults(func=_serve)

    mig = sub.add_parser("migrate", help="create the database if needed and apply migrations")
    mig.set_defaults(func=_migrate)

    learn = sub.add_parser(
        "learn",
        help="learn travel times from the drives that are over, once",
    )
    learn.add_argument(
        "--quiet-s",
        type=float,
        default=1800.0,
        help="an active route whose last fix is this old is over (default 1800)",
    )
    learn.set_defaults(func=_learn)

    device = sub.add_parser("device", help="manage devices")
    dsub = device.add_subparsers(dest="device_command", required=True)
    dadd = dsub.add_parser("add", help="register a device and print its token once")
    dadd.add_argument("name")
    dadd.add_argument("--unique-id", dest="unique_id")
    dadd.set_defaults(func=_device_add)
    admin_cli.register_device(dsub)

    key = sub.add_parser("key", help="manage API keys")
    ksub = key.add_subparsers(dest="key_command", required=True)
    kadd = ksub.add_parser("add", help="create an API key and print it once")
    kadd.add_argument("name", nargs="?", default="dispatcher")
    kadd.add_argument("--role", choices=["dispatcher", "admin"], default="dispatcher")
    kadd.set_defaults(func=_key_add)
    admin_cli.register_key(ksub)

    for register in EXTRA_COMMANDS:
        register(sub)
    return parser


# Tools living in their own modules add their subcommands here.
EXTRA_COMMANDS: list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = []


def _register_simulate(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from tracker.tools import simulate

    simulate.register(sub)


EXTRA_COMMANDS.append(_register_simulate)


def _register_import(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from tracker.tools import importer

    importer.register(sub)


EXTRA_COMMANDS.append(_register_import)


def _register_backtest(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    # The backtest parses its own arguments; everything after `backtest` is handed over.
    backtest = sub.add_parser(
        "backtest",
        help="replay a recorded drive and report ETA accuracy against a naive baseline",
        add_help=False,
        # No option prefix here, so `--help` and the backtest's own options pass through.
        prefix_chars="\0",
    )
    backtest.add_argument("argv", nargs=argparse.REMAINDER)
    backtest.set_defaults(func=_backtest)


def _backtest(args: argparse.Namespace) -> int:
    from tracker.tools import backtest

    return backtest.run_cli(list(args.argv))


EXTRA_COMMANDS.append(_register_backtest)


def _register_prune(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    prune = sub.add_parser(
        "prune",
        help="drop months of positions older than the retention (whole partitions)",
        description="Drop every monthly partition of positions that ended at least N days "
        "ago; the month holding the cut-off stays. Defaults to TRACKER_RETENTION_DAYS.",
    )
    prune.add_argument("--older-than-days", type=float, dest="days", metavar="N")
    prune.add_argument("--dry-run", action="store_true", help="list and count, drop nothing")
    prune.set_defaults(func=_prune)


def _prune(args: argparse.Namespace) -> int:
    from tracker.store import retention

    settings = Settings.from_env()
    days = args.days if args.days is not None else settings.retention_days
    if not 0 < days < 1_000_000:  # also refuses NaN and infinity
        print(
            "tracker prune: give --older-than-days N (N > 0) or set TRACKER_RETENTION_DAYS",
            file=sys.stderr,
        )
        return 2
    result = asyncio.run(retention.prune(settings.database_url, days, dry_run=args.dry_run))
    for line in retention.report(result, days):
        print(line)
    return 0


EXTRA_COMMANDS.append(_register_prune)


def _register_orders(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from tracker.tools import orders

    orders.register(sub)


EXTRA_COMMANDS.append(_register_orders)


def _register_roads(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from tracker.tools import roads

    roads.register(sub)


EXTRA_COMMANDS.append(_register_roads)


# Options whose value is a secret that may begin with `-` (tokens made before tokens.new_token
# avoided it, or an admin token chosen by hand).
SECRET_OPTIONS = frozenset({"--token", "--admin-token"})
_OPTION_LIKE = re.compile(r"--?[A-Za-z][a-z-]*")


def join_secret_values(argv: list[str]) -> list[str]:
    """`--token -pQdR...` as `--token=-pQdR...`, which argparse takes as the value.

    argparse reads any argument starting with `-` as an option, so a token beginning with
    one got "expected one argument". A next argument that looks like an option name
    (`--url`, `-h`) or has an `=` (no token does) is left alone.
    """
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            out.extend(argv[i:])
            break
        nxt = argv[i + 1] if i + 1 < len(argv) else None
        if (
            arg in SECRET_OPTIONS
            and nxt is not None
            and nxt.startswith("-")
            and "=" not in nxt
            and not _OPTION_LIKE.fullmatch(nxt)
        ):
            out.append(f"{arg}={nxt}")
            i += 2
            continue
        out.append(arg)
        i += 1
    return out


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `tracker` console script."""
    args = build_parser().parse_args(join_secret_values(sys.argv[1:] if argv is None else argv))
    func: Command = args.func
    try:
        logs.configure(Settings.from_env())
        return func(args)
    except ConfigError as exc:
        print(f"tracker: configuration error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
