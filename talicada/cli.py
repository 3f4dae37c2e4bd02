"""The ``talicada`` command: ``serve`` runs the broker; ``openapi`` writes the contract."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from talicada import __version__, logs
from talicada.settings import SettingsError, load


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

    openapi = commands.add_parser("openapi", help="write or check the generated OpenAPI files")
    openapi.add_argument("--check", action="store_true", help="fail if the files are stale")
    openapi.add_argument("directory", nargs="?", help="where to write (default: ./schema)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``talicada`` console script."""
    args = _parser().parse_args(argv)
    if args.command == "openapi":
        from talicada.schema import openapi

        return openapi.main([*(["--check"] if args.check else []), *filter(None, [args.directory])])
    return _serve(args)


def _serve(args: argparse.Namespace) -> int:
    import msgspec
    from aiohttp import web

    from talicada.broker.app import create_app

    try:
        settings = load(args.config, host=args.host, port=args.port, redis_url=args.redis_url)
        if args.embedded:
            settings = msgspec.structs.replace(settings, redis_url=None)
        logs.configure(settings.log_format)
        app = create_app(settings)
    except SettingsError as error:
        print(f"talicada: {error}", file=sys.stderr)
        return 2
    mode = "embedded (in memory, not durable)" if settings.embedded else "redis"
    print(
        f"talicada {__version__}: {mode} mode, listening on http://{settings.host}:{settings.port}",
        file=sys.stderr,
    )
    web.run_app(app, host=settings.host, port=settings.port, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
