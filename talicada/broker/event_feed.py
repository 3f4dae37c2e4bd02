"""``GET /events``: the event streams as JSON lines, for ``talicada events tail``.

Only an embedded broker serves it: its streams live in its own memory, where
no other process can read them. With Redis, ``talicada events tail`` reads the
streams from Redis itself and this route does not exist.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from talicada.broker import params
from talicada.broker.keys import BROKER, SETTINGS
from talicada.events import tail
from talicada.events.streams import LIFECYCLE, stream
from talicada.schema import messages as msg
from talicada.schema.messages import RequestInvalid
from talicada.workers.backends import backends_in_use

routes = web.RouteTableDef()

#: Longest a follow lasts before the client reconnects (seconds).
MAX_FOLLOW = 3600.0


def known_streams(request: web.Request) -> list[str]:
    """The lifecycle stream and one stream per role and back end in use."""
    platforms = request.app[SETTINGS].platforms
    return [LIFECYCLE, *(stream(role, backend) for role, backend in backends_in_use(platforms))]


@routes.get("/events")
async def events(request: web.Request) -> web.StreamResponse:
    """Follow ``?stream=`` (repeat; default lifecycle), ``&session=&type=&from_start=&count=``.

    ``?dead_letters=true`` lists the dead letters instead, then ends.
    """
    bus = request.app[BROKER].store.bus
    known = known_streams(request)
    streams = request.query.getall("stream", []) or [LIFECYCLE]
    unknown = [name for name in streams if name not in known]
    if unknown:
        reason = f"unknown stream {unknown[0]!r}; streams are " + ", ".join(known)
        raise RequestInvalid([msg.make(msg.INVALID_FIELD, path="stream", reason=reason)])
    # Every parameter is checked before the stream starts: a bad one is a 400.
    count = params.whole(request, "count", 0, 1, 100_000) or None
    dead_letters = params.flag(request, "dead_letters")
    from_start = params.flag(request, "from_start")
    session = params.uuid(request, "session")
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)

    async def emit(line: str) -> None:
        await response.write(line.encode())

    if dead_letters:
        await tail.dead_letters(bus, limit=count or 100, emit=emit)
    else:
        stop = asyncio.Event()
        # A follower reconnects after an hour rather than holding a task for ever.
        timer = asyncio.get_running_loop().call_later(MAX_FOLLOW, stop.set)
        try:
            await tail.follow(
                bus,
                streams,
                session=session,
                types=request.query.getall("type", []),
                from_start=from_start,
                count=count,
                stop=stop,
                emit=emit,
            )
        finally:
            timer.cancel()
    await response.write_eof()
    return response
