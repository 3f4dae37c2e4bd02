"""The ``talicada`` command: ``serve`` runs the broker, ``worker NAME`` one worker,
``events tail`` follows the streams, ``openapi`` writes the contract; the user
commands (``submit``, ``run``, ``watch``, ``demo`` …) live in
:mod:`talicada.client.commands`."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import aiohttp
import structlog
from aiohttp import web

from talicada import __version__, heap, logs
from talicada.events.streams import LIFECYCLE, ROLES, Role, stream
from talicada.settings import Settings, SettingsError, load
from talicada.workers.registry import WORKERS


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="talicada",
        description="Talicada: an event-driven execution broker (IVOA ExecutionBroker).",
    )
    parser.add_argument("--version", action="version", version=f"talicada {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run the broker",
        description=(
            "Run the broker HTTP API. With no Redis URL (the default) it runs embedded: "
            "in-memory state, one 'local' platform for the test tasks, auth off. "
            "Embedded state is NOT durable: it is lost when the process stops."
        ),
    )
    serve.add_argument("--config", metavar="FILE", help="TOML settings file (TALICADA_CONFIG)")
    serve.add_argument("--host", help="address to listen on (TALICADA_HOST, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (TALICADA_PORT, 8082)")
    serve.add_argument(
        "--redis-url", help="Redis for state and calendar (TALICADA_REDIS_URL); none = embedded"
    )
    serve.add_argument(
        "--embedded", action="store_true", help="ignore any configured Redis and run in memory"
    )

    worker = commands.add_parser(
        "worker",
        help="run one worker service",
        description=(
            "Run one worker: consume its Redis stream, act, and report to the broker through "
            "signed callbacks. Needs TALICADA_REDIS_URL, TALICADA_BROKER_URL and "
            "TALICADA_CALLBACK_SECRET (the same secret as the broker). SIGTERM finishes the "
            "events in hand, then exits."
        ),
    )
    worker.add_argument("name", choices=WORKERS, help="which worker role")
    worker.add_argument(
        "--backend",
        "--implementation",
        dest="backend",
        help=(
            "which back end of the role to run (local, skaha, srcnet, harbor, none); it consumes "
            "the stream ROLE:BACKEND. Default: the one the configured platforms use"
        ),
    )
    worker.add_argument("--config", metavar="FILE", help="TOML settings file (TALICADA_CONFIG)")

    events = commands.add_parser("events", help="look at the event streams (operators)")
    event_commands = events.add_subparsers(dest="events_command", required=True, metavar="WHAT")
    tail = event_commands.add_parser(
        "tail",
        help="follow the event streams as JSON lines",
        description="Follow events as they are published (Ctrl-C stops). Needs TALICADA_REDIS_URL.",
    )
    tail.add_argument(
        "--stream",
        action="append",
        help=(
            "stream to follow: lifecycle, a role (prepare-data, image-cache, launch, release: "
            "every back end the platforms use) or ROLE:BACKEND (repeatable; default: lifecycle)"
        ),
    )
    tail.add_argument("--session", help="only events of this session")
    tail.add_argument("--type", action="append", default=[], help="only events of this type")
    tail.add_argument("--from-start", action="store_true", help="begin with the oldest kept")
    tail.add_argument("--count", type=int, help="stop after this many events")
    tail.add_argument("--dead-letters", action="store_true", help="list the dead letters instead")
    tail.add_argument("--config", metavar="FILE", help="TOML settings file (TALICADA_CONFIG)")

    openapi = commands.add_parser("openapi", help="write or check the generated OpenAPI files")
    openapi.add_argument("--check", action="store_true", help="fail if the files are stale")
    openapi.add_argument("directory", nargs="?", help="where to write (default: ./schema)")

    from talicada.client.commands import add_commands

    add_commands(commands)
    demo = commands.add_parser(
        "demo",
        help="see the whole lifecycle in seconds (no set-up)",
        description=(
            "Start an embedded broker and a loopback file server, run the checksum example "
            "(examples/v1-local-checksum-request.yaml) to its end with watch's display, and "
            "stop. Exit status 0 when the session COMPLETED."
        ),
    )
    demo.add_argument("--json", action="store_true", help="JSON lines, even in a terminal")
    demo.add_argument(
        "--request", type=Path, metavar="FILE", help="another request for the local platform"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``talicada`` console script."""
    args = _parser().parse_args(argv)
    if args.command == "worker":
        return _worker(args)
    if args.command == "events":
        return _events(args)
    if args.command == "openapi":
        from talicada.schema import openapi

        return openapi.main([*(["--check"] if args.check else []), *filter(None, [args.directory])])
    if args.command == "demo":
        from talicada.client import demo

        return demo.main(json_lines=args.json or not sys.stdout.isatty(), request=args.request)
    if args.command != "serve":
        from talicada.client.commands import run_command

        return run_command(args)
    return _serve(args)


def _serve(args: argparse.Namespace) -> int:
    import msgspec

    from talicada.broker.app import create_app

    try:
        settings = load(args.config, host=args.host, port=args.port, redis_url=args.redis_url)
        if args.embedded:
            settings = msgspec.structs.replace(settings, redis_url=None)
        json_lines = logs.configure(settings.log_format)
        app = create_app(settings)
    except SettingsError as error:
        print(f"talicada: {error}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_run_server(app, settings, json_lines=json_lines))
    except StartupFailed as error:
        # One line, not a traceback: the operator needs the cause, not our stack.
        print(f"talicada: {error}", file=sys.stderr)
        return 1
    return 0


class StartupFailed(Exception):
    """``talicada serve`` cannot start: the port is taken, the store does not answer."""


def _ready_message(settings: Settings) -> str:
    """What ``serve`` prints once it listens: where, and what to try next."""
    mode = "embedded (in memory, not durable)" if settings.embedded else "redis"
    url = f"http://{settings.host}:{settings.port}"
    return (
        f"talicada {__version__}: {mode} mode, listening on {url}\n"
        f"next: open {url}/ui/ in a browser, or run `talicada demo` in another terminal "
        f"(API: {url}/openapi.yaml; stop with Ctrl-C)"
    )


async def _run_server(app: web.Application, settings: Settings, *, json_lines: bool) -> None:
    """Serve ``app`` until SIGINT/SIGTERM; embedded mode also runs every worker."""
    import redis.exceptions

    from talicada.broker.access import AccessLog
    from talicada.broker.app import run_embedded_workers, server_timeouts

    stop = _stop_on_signals()
    runner = web.AppRunner(app, access_log_class=AccessLog, **server_timeouts(settings))
    try:
        await runner.setup()
    except (OSError, redis.exceptions.RedisError) as error:
        await runner.cleanup()
        raise StartupFailed(f"the state store (Redis) does not answer: {error}") from None
    site = web.TCPSite(runner, settings.host, settings.port)
    try:
        await site.start()
    except OSError as error:
        await runner.cleanup()
        reason = error.strerror or str(error)
        raise StartupFailed(f"cannot listen on {settings.host}:{settings.port}: {reason}") from None
    if json_lines:
        # stderr stays one format: the same words as one JSON line.
        listening, _, step = _ready_message(settings).partition("\n")
        structlog.get_logger("talicada.serve").info("serve.listening", text=listening, next=step)
    else:
        print(_ready_message(settings), file=sys.stderr, flush=True)
    metrics_runner = None
    if settings.metrics_port is not None:
        from talicada.broker import metrics_site

        metrics_runner = await metrics_site.start(app, settings.host, settings.metrics_port)
    heap.settle()  # after start-up: its objects live as long as the process
    workers = None
    if settings.embedded:
        # Embedded workers still report over HTTP, to this very server.
        wildcard = settings.host in ("0.0.0.0", "::", "")  # noqa: S104 - recognising, not binding
        host = "127.0.0.1" if wildcard else settings.host
        url = settings.broker_url or f"http://{host}:{settings.port}"
        workers = asyncio.create_task(run_embedded_workers(app, url, stop))
    await stop.wait()
    if workers is not None:
        await workers
    if metrics_runner is not None:
        await metrics_runner.cleanup()
    await runner.cleanup()


def _worker(args: argparse.Namespace) -> int:
    try:
        settings = load(args.config)
        if settings.redis_url is None:
            raise SettingsError("redis_url: a worker needs TALICADA_REDIS_URL")
        if not settings.broker_url:
            raise SettingsError("broker_url: a worker needs TALICADA_BROKER_URL")
        if not settings.callback_secret:
            raise SettingsError("callback_secret: a worker needs TALICADA_CALLBACK_SECRET")
        logs.configure(settings.log_format)
    except SettingsError as error:
        print(f"talicada: {error}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_run_worker(args.name, args.backend, settings))
    except SettingsError as error:
        print(f"talicada: {error}", file=sys.stderr)
        return 2
    return 0


async def _run_worker(name: Role, backend: str | None, settings: Settings) -> None:
    from talicada import redisconn
    from talicada.events.redis_bus import RedisBus
    from talicada.workers.registry import run_named

    assert settings.redis_url
    assert settings.broker_url
    assert settings.callback_secret
    stop = _stop_on_signals()
    client = redisconn.client(settings.redis_url, settings.redis_pool)
    heap.settle()
    try:
        await run_named(
            name,
            bus=RedisBus(
                client,
                prefix=settings.key_prefix,
                reclaim_idle_ms=int(settings.reclaim_idle * 1000),
            ),
            settings=settings,
            broker_url=settings.broker_url,
            secret=settings.callback_secret.encode(),
            stop=stop,
            backend=backend,
        )
    finally:
        await client.aclose()


def _events(args: argparse.Namespace) -> int:
    try:
        settings = load(args.config)
        args.stream = _streams(args.stream or [LIFECYCLE], settings)
    except SettingsError as error:
        print(f"talicada: {error}", file=sys.stderr)
        return 2
    if settings.redis_url is None:
        # An embedded broker keeps its streams in its own memory: ask it over HTTP.
        return asyncio.run(_tail_embedded(args, settings))
    asyncio.run(_tail(args, settings))
    return 0


async def _tail_embedded(args: argparse.Namespace, settings: Settings) -> int:
    """Follow an embedded broker's streams through its ``GET /events``."""
    wildcard = settings.host in ("0.0.0.0", "::", "")  # noqa: S104 - recognising, not binding
    url = (
        settings.broker_url
        or f"http://{'127.0.0.1' if wildcard else settings.host}:{settings.port}"
    )
    query: list[tuple[str, str]] = [("stream", name) for name in args.stream]
    query += [("type", name) for name in args.type]
    if args.session:
        query.append(("session", args.session))
    if args.from_start:
        query.append(("from_start", "true"))
    if args.count:
        query.append(("count", str(args.count)))
    if args.dead_letters:
        query.append(("dead_letters", "true"))
    stop = _stop_on_signals()
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=5)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as http,
            http.get(f"{url}/events", params=query) as response,
        ):
            if response.status != 200:
                print(f"talicada: {url}/events answered {response.status}", file=sys.stderr)
                return 1
            reading = asyncio.ensure_future(_print_lines(response))
            stopping = asyncio.ensure_future(stop.wait())
            await asyncio.wait({reading, stopping}, return_when=asyncio.FIRST_COMPLETED)
            for task in (reading, stopping):
                task.cancel()
    except aiohttp.ClientConnectionError as error:
        print(
            f"talicada: no broker answers at {url} ({error}); is `make run` running?",
            file=sys.stderr,
        )
        return 1
    return 0


async def _print_lines(response: aiohttp.ClientResponse) -> None:
    async for line in response.content:
        sys.stdout.write(line.decode())
        sys.stdout.flush()


async def _tail(args: argparse.Namespace, settings: Settings) -> None:
    from talicada.events import tail
    from talicada.events.redis_bus import RedisBus

    assert settings.redis_url
    bus = await RedisBus.connect(settings.redis_url, prefix=settings.key_prefix)
    try:
        if args.dead_letters:
            await tail.dead_letters(bus, limit=args.count or 100)
            return
        await tail.follow(
            bus,
            args.stream,
            session=args.session,
            types=args.type,
            from_start=args.from_start,
            count=args.count,
            stop=_stop_on_signals(),
        )
    finally:
        await bus.close()


def _streams(names: list[str], settings: Settings) -> list[str]:
    """Stream names from ``--stream`` values: a role stands for each of its back ends in use."""
    from talicada.workers.backends import BACKENDS, backends_in_use

    found: list[str] = []
    for name in names:
        role, _, backend = name.partition(":")
        if name == LIFECYCLE:
            found.append(name)
        elif role not in ROLES:
            raise SettingsError(f"--stream {name}: not lifecycle, a role or ROLE:BACKEND")
        elif backend:
            if backend not in BACKENDS[role]:
                raise SettingsError(f"--stream {name}: no back end {backend!r} for {role}")
            found.append(name)
        else:
            found += [stream(r, b) for r, b in backends_in_use(settings.platforms) if r == role]
    return found


def _stop_on_signals() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM: graceful shutdown."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(number, stop.set)
    return stop


if __name__ == "__main__":
    sys.exit(main())
