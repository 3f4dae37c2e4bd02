"""``POST /callbacks/{uuid}``: signed worker reports advance the session (docs/ARCHITECTURE.md §8).

Unsigned, wrongly signed or stale reports are 401 and change nothing; a
report whose delivery id was already applied is 200 and changes nothing.
"""

from __future__ import annotations

import time

import msgspec
import structlog
from aiohttp import web

from talicada.broker.engine import ReportRefused
from talicada.broker.http import path_uuid, respond
from talicada.broker.keys import BROKER, CALLBACK_SECRET, METRICS
from talicada.events import report as reports
from talicada.events.signing import SignatureError, verify
from talicada.schema import messages as msg
from talicada.schema.messages import Conflict, NotFound, RequestInvalid

log = structlog.get_logger("talicada.callbacks")
routes = web.RouteTableDef()


@routes.post("/callbacks/{uuid}")
async def callback(request: web.Request) -> web.Response:
    """Apply one worker report about one component of session ``uuid``."""
    uuid = path_uuid(request)
    body = await request.read()
    accepted: tuple[bytes, ...] = request.app[CALLBACK_SECRET]
    try:
        verify(accepted, uuid, request.headers, body, time.time())
    except SignatureError as error:
        log.warning("callback.rejected", session=uuid, reason=str(error))
        request.app[METRICS].callbacks.labels("unsigned").inc()
        item = msg.make(msg.INVALID_FIELD, path="X-Talicada-Signature", reason=str(error))
        return respond(request, {"messages": [item]}, status=401, root="error")
    try:
        report = reports.decoder.decode(body)
    except msgspec.DecodeError as error:
        raise RequestInvalid(
            [msg.make(msg.MALFORMED_BODY, media="report", reason=str(error))]
        ) from None
    try:
        result = await request.app[BROKER].driver.apply(uuid, report)
    except ReportRefused as error:
        request.app[METRICS].callbacks.labels("refused").inc()
        raise Conflict([msg.make(msg.INVALID_FIELD, path="component", reason=str(error))]) from None
    request.app[METRICS].callbacks.labels(result).inc()
    if result == "missing":
        raise NotFound([msg.make(msg.NOT_FOUND, what="session", uuid=uuid)])
    log.info(
        "callback.applied" if result != "duplicate" else "callback.duplicate",
        session=uuid,
        component=report.component,
        phase=report.phase,
        delivery=report.delivery,
    )
    return respond(request, {"status": result}, root="callback")
