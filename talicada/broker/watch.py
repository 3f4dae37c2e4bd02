"""Watching a session: long poll, Server-Sent Events, and the session's log.

``GET /sessions/{uuid}?wait=S&phase=P`` answers when the phase is no longer
P or after S seconds (UWS style). ``GET /sessions/{uuid}/events`` streams
every recorded transition, past and future, in order, and ends after the
final one. ``GET /sessions/{uuid}/log`` is the whole record: transitions,
component messages and the executable's output.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from typing import Any

import msgspec
from aiohttp import web

from talicada import constants
from talicada.broker import lifecycle, params
from talicada.broker.components import Component, components
from talicada.broker.http import RETRY_AFTER, base_url, path_uuid, respond, viewer
from talicada.broker.keys import BROKER, NOTIFIER, SETTINGS
from talicada.broker.records import LiveSession, Transition
from talicada.broker.render import session_doc
from talicada.redisconn import is_unavailable
from talicada.schema import messages as msg
from talicada.schema.messages import RequestInvalid

routes = web.RouteTableDef()

#: Seconds between SSE comments that keep idle connections open through proxies.
KEEPALIVE = 15.0
#: Most seconds a long poll waits for a wake-up before it re-reads the session anyway.
RECHECK = 5.0


def _wait_param(request: web.Request) -> float | None:
    wait = params.seconds(request, "wait", None)
    if wait is None:
        return None
    # UWS clamps a longer wait to the server's limit rather than refusing it.
    return min(wait, constants.MAX_LONG_POLL.total_seconds())


def _until_final(request: web.Request) -> bool:
    """``?until=final``: wait for a final phase, not just for a change."""
    until = request.query.get("until")
    if until is None:
        return False
    if until != "final":
        reason = "only 'final' (wait until the session ends)"
        raise RequestInvalid([msg.make(msg.INVALID_FIELD, path="until", reason=reason)])
    return True


async def long_poll(request: web.Request, uuid: str, live: LiveSession) -> LiveSession:
    """The session once its phase differs from ``?phase=`` (default: its phase now).

    With ``?until=final`` it waits through passing phases (RELEASING) to a final one.
    """
    wait = _wait_param(request)
    final = _until_final(request)
    given = params.phase(request)  # checked whether or not it is used: a bad one is a 400
    if not wait:
        return live
    phase = given or live.phase
    broker = request.app[BROKER]
    deadline = time.monotonic() + wait
    async with request.app[NOTIFIER].watch(uuid) as changed:
        # Re-read once after subscribing, so a change in between is not missed.
        live = await broker.session(uuid, viewer(request))
        while (final or live.phase == phase) and live.phase not in lifecycle.FINAL:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            # Wait holding no Redis connection: the notifier wakes us. The
            # bounded wait also covers a lost wake-up (one read per RECHECK).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), timeout=min(remaining, RECHECK))
            changed.clear()
            live = await broker.session(uuid, viewer(request))
    return live


@routes.get("/sessions/{uuid}/events")
async def events(request: web.Request) -> web.StreamResponse:
    """Every transition of the session as Server-Sent Events, in order."""
    uuid = path_uuid(request)
    broker = request.app[BROKER]
    await broker.session(uuid, viewer(request))  # 404 before the stream starts
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    # A reconnecting client resumes after the last event it saw (the ids are
    # positions in the session's history).
    resume = request.headers.get("Last-Event-ID", "")
    sent = int(resume) + 1 if re.fullmatch(r"[0-9]{1,9}", resume) else 0
    # Watch before the stream starts, so a busy replica can still answer 503.
    async with request.app[NOTIFIER].watch(uuid) as changed:
        # The first read too: a Redis that cannot answer is still a 503 here.
        fresh = await broker.store.history(uuid, sent)
        await response.prepare(request)
        try:
            await _stream(request, response, uuid, sent, changed, fresh)
        except Exception as error:
            if not is_unavailable(error):
                raise
            # Too late for a 503: Redis went away mid-stream. Tell the client
            # when to reconnect (it resumes from Last-Event-ID) and end.
            await response.write(f"retry: {RETRY_AFTER * 1000}\n\n".encode())
    await response.write_eof()
    return response


def _parts(live: LiveSession) -> dict[str, Component]:
    return {part.uuid: part for part in components(live.record.session)}


def transition_doc(item: Transition, parts: dict[str, Component]) -> dict[str, str]:
    """One transition for clients; a component's names its family and name besides its uuid."""
    doc = {"time": item.time, "from": item.source, "to": item.target, "cause": item.cause}
    if item.component:
        doc["component"] = item.component
        part = parts.get(item.component)
        if part is not None:
            doc["family"] = part.family
            doc["name"] = part.name
    return doc


def _messages(live: LiveSession, parts: dict[str, Component]) -> list[dict[str, Any]]:
    """Every message of the session and its components, oldest first, each saying whose."""
    session = live.record.session
    found: list[dict[str, Any]] = [
        {"about": "session", **msgspec.to_builtins(item)} for item in session.meta.messages
    ]
    for piece in (session.executable, session.compute, *session.storage, *session.data):
        uuid = piece.meta.uuid if piece.meta else None
        part = parts.get(uuid or "")
        for item in piece.meta.messages if piece.meta else []:
            about = f"{part.family} {part.name}" if part else "component"
            found.append({"about": about, "component": uuid, **msgspec.to_builtins(item)})
    found.sort(key=lambda item: str(item.get("time", "")))
    return found


async def _stream(
    request: web.Request,
    response: web.StreamResponse,
    uuid: str,
    sent: int,
    changed: asyncio.Event,
    fresh: list[Transition],
) -> None:
    """Write ``fresh`` (transitions from number ``sent`` on), then the rest as they come."""
    broker = request.app[BROKER]
    live = await broker.session(uuid, viewer(request))
    while True:
        parts = _parts(live)
        for index, item in enumerate(fresh, start=sent):
            name = "component" if item.component else "transition"
            data = json.dumps(transition_doc(item, parts))
            await response.write(f"id: {index}\nevent: {name}\ndata: {data}\n\n".encode())
        sent += len(fresh)
        live = await broker.session(uuid, viewer(request))
        if live.phase in lifecycle.FINAL and not await broker.store.history(uuid, sent):
            return
        try:
            await asyncio.wait_for(changed.wait(), timeout=KEEPALIVE)
        except TimeoutError:
            await response.write(b": keepalive\n\n")
        changed.clear()
        fresh = await broker.store.history(uuid, sent)


@routes.get("/sessions/{uuid}/log")
async def session_log(request: web.Request) -> web.Response:
    """The session's record: transitions, messages and the executable's output."""
    uuid = path_uuid(request)
    broker = request.app[BROKER]
    live = await broker.session(uuid, viewer(request))
    history = await broker.store.history(uuid)
    parts = _parts(live)
    session = session_doc(live, base_url(request, request.app[SETTINGS].base_url))
    return respond(
        request,
        {
            "session": session,
            "history": [transition_doc(item, parts) for item in history],
            "messages": _messages(live, parts),
            "output": live.record.output,
            # What the platform said besides the output (Skaha's scheduling events).
            "platform": live.record.logs,
        },
        root="log",
    )
