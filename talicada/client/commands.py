"""The ``talicada`` commands for people who run things: submit, accept, reject,
cancel, delete, extend, watch, run, sessions, log and demo, built on
:class:`~talicada.client.AsyncClient`.

argparse, like the operator commands in :mod:`talicada.cli`: one parser for
the whole command, so ``talicada --help`` lists everything and the existing
commands keep their exact behaviour.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from rich.table import Table
from rich.text import Text

from talicada.client import display, wire
from talicada.client.aio import DEFAULT_URL, AsyncClient, Transport
from talicada.client.errors import BrokerError, NoOffers
from talicada.client.follow import BROKER_ERROR, NO_OFFERS, follow
from talicada.client.localfiles import PLACEHOLDER, serving
from talicada.schema import iso8601

Handler = Callable[[AsyncClient, argparse.Namespace], Awaitable[int]]

EXIT_HELP = (
    "exit status: 0 the session COMPLETED, 1 FAILED, 3 CANCELLED, 4 REJECTED or EXPIRED, "
    "2 bad usage, 5 the broker refused or did not answer (its messages are printed), "
    "6 no offers (result NO), 7 the session had not ended."
)

_EPILOG = (
    f"Connection: --url (TALICADA_URL, default {DEFAULT_URL}) and a bearer token with --token "
    "(TALICADA_TOKEN; none needed by a broker in embedded mode). Output: tables and a "
    "live view in a terminal, JSON lines when piped or with --json."
)


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help=f"the broker (TALICADA_URL, default {DEFAULT_URL})")
    common.add_argument("--token", help="bearer token (TALICADA_TOKEN)")
    common.add_argument("--json", action="store_true", help="JSON lines, even in a terminal")
    return common


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the user commands to the ``talicada`` parser."""
    common = [_common()]

    def add(name: str, summary: str, description: str) -> argparse.ArgumentParser:
        return commands.add_parser(
            name, help=summary, description=description, epilog=_EPILOG, parents=common
        )

    request_help = "execution request: YAML, JSON or XML, in any dialect (see examples/)"
    files_help = (
        f"serve this directory on a loopback HTTP port and put that port where the request's "
        f"data URLs say {PLACEHOLDER} (as examples/v1-local-checksum-request.yaml does)"
    )
    submit = add(
        "submit",
        "send a request and show its offers",
        "Send an execution request. The broker answers with up to four offers (platform, "
        "start, duration, cores, memory, preparation time, expiry), each holding its "
        "capacity until it expires; accept one with 'talicada accept OFFER'. A request no "
        "platform can run gets 'No offers' and the reasons (exit 6).",
    )
    submit.add_argument("file", type=Path, help=request_help)
    run = add(
        "run",
        "submit, accept the earliest offer and watch it to the end",
        "The one-liner for scripts: send the request, accept the earliest offer, follow the "
        f"session until it ends. {EXIT_HELP}",
    )
    run.add_argument("file", type=Path, help=request_help)
    run.add_argument("--files", type=Path, metavar="DIR", help=files_help)
    for name, verb in (("accept", "accept an offer"), ("reject", "reject an offer")):
        command = add(
            name,
            verb,
            f"{verb.capitalize()} by its uuid (the 'offer' column of submit). Accepting "
            "books its capacity and rejects its siblings; rejecting frees what it held.",
        )
        command.add_argument("uuid", help="the offer's uuid")
        if name == "accept":
            command.add_argument("--watch", action="store_true", help="then follow it to the end")
    cancel = add(
        "cancel",
        "cancel a session",
        "Cancel a session (or an offer): whatever it runs is stopped and what it holds released.",
    )
    cancel.add_argument("uuid", help="the session's uuid")
    delete = add(
        "delete",
        "end a session, or forget a finished one",
        "As UWS's DELETE: a live session is ended (an open offer rejected, anything else "
        "cancelled); a finished one is forgotten, its record deleted now rather than after "
        "the broker's retention period.",
    )
    delete.add_argument("uuid", help="the session's uuid")
    extend = add(
        "extend",
        "change how long a session stays available",
        "Lengthen (or shorten) the session's available window, where the platform's calendar "
        "has room; the broker answers 409 with its reason otherwise. Durations are ISO 8601: "
        "PT30M, PT2H, P1D.",
    )
    extend.add_argument("uuid", help="the session's uuid")
    how = extend.add_mutually_exclusive_group(required=True)
    how.add_argument("--by", metavar="DURATION", help="add this much (e.g. PT30M)")
    how.add_argument("--to", metavar="DURATION", help="make the window this long (e.g. PT2H)")
    watch = add(
        "watch",
        "follow a session live until it ends",
        "Follow a session over Server-Sent Events (resuming after a dropped connection, "
        "falling back to long polls): its phase, the timeline of its phases, each component "
        f"and data staging progress. {EXIT_HELP}",
    )
    watch.add_argument("uuid", help="the session's uuid")
    watch.add_argument("--poll", action="store_true", help="long polls instead of SSE")
    sessions = add(
        "sessions",
        "list your sessions",
        "List your sessions and offers, newest first. Instants are ISO 8601 "
        "(2026-01-31T12:00:00Z).",
    )
    sessions.add_argument(
        "--phase", action="append", help="only these phases (repeatable or comma-separated)"
    )
    sessions.add_argument("--since", metavar="INSTANT", help="created at or after")
    sessions.add_argument("--until", metavar="INSTANT", help="created before")
    sessions.add_argument("--limit", type=int, default=20, help="at most this many (20)")
    log = add("log", "show a session's record", "Every transition, messages and output.")
    log.add_argument("uuid", help="the session's uuid")


def run_command(args: argparse.Namespace) -> int:
    """Run one user command; its exit status."""
    handler = HANDLERS[args.command]
    args.json = args.json or not sys.stdout.isatty()

    async def main() -> int:
        async with AsyncClient(args.url, args.token) as client:
            return await handler(client, args)

    try:
        return asyncio.run(main())
    except NoOffers as refused:
        _say_refusal("no offers", refused)
        return NO_OFFERS
    except BrokerError as error:
        _say_refusal(f"the broker answered {error.status}" if error.status else "error", error)
        return BROKER_ERROR
    except KeyboardInterrupt:
        return 130


def _say_refusal(what: str, error: BrokerError) -> None:
    err = display.console(stderr=True)
    err.print(f"[bold red]talicada: {what}[/]")
    for item in error.messages:
        err.print(f"  • {item.message or item.kind}", markup=False)


def read_request(path: Path) -> str:
    """The request text; a clear message when the file cannot be read."""
    try:
        return path.read_text()
    except OSError as error:
        raise SystemExit(f"talicada: cannot read {path}: {error.strerror}") from None


async def _platform(client: AsyncClient) -> str:
    # Offers do not name their platform in the API; with one platform it is known.
    names = [p.get("name", "") for p in (await client.capabilities()).get("platforms", [])]
    return names[0] if len(names) == 1 else "?"


async def _submit(client: AsyncClient, args: argparse.Namespace) -> int:
    offers = await client.request_offers(read_request(args.file))
    if args.json:
        display.emit(offers)
    else:
        out = display.console()
        out.print(display.offers_table(offers, await _platform(client)))
        if offers.result == "YES":
            out.print("[dim]accept one with: talicada accept OFFER[/]")
    return 0 if offers.result == "YES" else NO_OFFERS


async def _run(client: AsyncClient, args: argparse.Namespace) -> int:
    text = read_request(args.file)
    if PLACEHOLDER in text and args.files is None:
        raise SystemExit(
            f"talicada: the request's data URLs say {PLACEHOLDER}: pass --files DIR to serve "
            "DIR on a loopback port and use it there"
        )
    async with serving(args.files) as port:
        if port:
            text = text.replace(PLACEHOLDER, f"127.0.0.1:{port}")
        return await submit_and_follow(client, text, json_lines=args.json)


async def submit_and_follow(client: AsyncClient, request: str, *, json_lines: bool) -> int:
    """Request, accept the earliest offer and follow the session (``run``, ``demo``)."""
    offers, session = await client.run(request)
    uuid = session.meta.uuid or ""
    if json_lines:
        platform = await _platform(client)
        rows = [display.offer_row(offer, platform) for offer in offers.offers]
        display.emit({"event": "offers", "offerset": offers.meta.uuid, "offers": rows})
        display.emit({"event": "accepted", "session": uuid})
    else:
        out = display.console()
        out.print(display.offers_table(offers, await _platform(client)))
        out.print(f"Accepted the earliest offer: [bold]{uuid}[/]")
    return await follow(client, uuid, live=not json_lines)


async def _update(client: AsyncClient, args: argparse.Namespace) -> int:
    if args.command == "accept":
        session = await client.accept(args.uuid)
    elif args.command == "reject":
        session = await client.reject(args.uuid)
    elif args.command == "cancel":
        session = await client.cancel(args.uuid)
    else:
        try:
            by = iso8601.parse_duration(args.by) if args.by else None
        except iso8601.Iso8601Error as error:
            raise SystemExit(f"talicada: --by {args.by}: {error}") from None
        session = await client.extend(args.uuid, by=by, to=args.to)
    if args.json:
        display.emit(session)
    else:
        window = session.schedule.available if session.schedule else None
        line = display.phase_text(session.phase)
        extra = f"  available for {display.duration(window.duration)}" if window else ""
        display.console().print(f"{session.meta.uuid}  ", line, extra)
    if getattr(args, "watch", False):
        return await follow(client, args.uuid, live=not args.json)
    return 0


async def _watch(client: AsyncClient, args: argparse.Namespace) -> int:
    transport: Transport = "poll" if args.poll else "auto"
    return await follow(client, args.uuid, live=not args.json, transport=transport)


async def _sessions(client: AsyncClient, args: argparse.Namespace) -> int:
    phases = [p.strip().upper() for v in args.phase or [] for p in v.split(",") if p.strip()]
    page = await client.list_sessions(
        phases=phases, since=args.since, until=args.until, limit=args.limit
    )
    if args.json:
        for session in page.sessions:
            display.emit(session)
        return 0
    table = Table(title="Sessions (newest first)", title_justify="left")
    for column in ("session", "name", "phase", "created", "start", "duration"):
        table.add_column(column, no_wrap=column in ("session", "created", "start"))
    for session in page.sessions:
        window = session.schedule.available if session.schedule else None
        table.add_row(
            session.meta.uuid or "",
            Text(session.meta.name or ""),
            display.phase_text(session.phase),
            display.when(session.meta.created),
            display.when(window.start if window else None),
            display.duration(window.duration if window else None),
        )
    display.console().print(table)
    return 0


async def _log(client: AsyncClient, args: argparse.Namespace) -> int:
    record = await client.log(args.uuid)
    if args.json:
        display.emit(record)
        return 0
    view = display.SessionView(record.session)
    for step in record.history:
        view.add(step)
    out = display.console()
    out.print(view.render())
    for _, label, part in display.components(record.session):
        for item in part.meta.messages if part.meta else []:
            out.print(Text.assemble((f"{label}: ", "dim"), item.message))
    for stream, text in {**record.output, **record.platform}.items():
        if text:
            out.rule(stream)
            out.print(text, markup=False)
    return 0


async def _delete(client: AsyncClient, args: argparse.Namespace) -> int:
    before = await client.get(args.uuid)
    await client.delete(args.uuid)
    done = "forgotten" if wire.is_final(before.phase) else "ended"
    if args.json:
        display.emit({"event": done, "session": args.uuid, "phase": before.phase})
    else:
        display.console().print(f"{args.uuid}  {done}")
    return 0


HANDLERS: dict[str, Handler] = {
    "submit": _submit,
    "run": _run,
    "accept": _update,
    "reject": _update,
    "cancel": _update,
    "delete": _delete,
    "extend": _update,
    "watch": _watch,
    "sessions": _sessions,
    "log": _log,
}
