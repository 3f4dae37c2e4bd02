"""The HTTP API (docs/ARCHITECTURE.md §3): decode, ask the broker, render. Nothing else."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from aiohttp import hdrs, web

from talicada.broker import lifecycle, params, ttl
from talicada.broker.http import (
    base_url,
    path_uuid,
    principal,
    read_body,
    require_operator,
    respond,
    response_media,
    viewer,
)
from talicada.broker.keys import BROKER, METRICS, OPENAPI, SETTINGS, STARTED
from talicada.broker.metrics import exposition
from talicada.broker.records import LiveSession
from talicada.broker.render import offerset_doc, offerset_ttl, refusal_doc, session_doc
from talicada.broker.service import OfferSetView
from talicada.broker.watch import long_poll
from talicada.schema import iso8601
from talicada.schema import messages as msg
from talicada.schema.codec import MediaType
from talicada.schema.kinds import Dialect
from talicada.schema.messages import RequestInvalid
from talicada.schema.model import EnumValueUpdate, SessionPhase
from talicada.schema.validation import parse_request, parse_update
from talicada.workers.backends._shared import ledger_for
from talicada.workers.health import workers as worker_health

routes = web.RouteTableDef()


def _base(request: web.Request) -> str:
    return base_url(request, request.app[SETTINGS].base_url)


async def _valid_request(request: web.Request) -> Any:
    body, media = await read_body(request)
    broker = request.app[BROKER]
    return parse_request(body, now=broker.clock(), lax=media is MediaType.XML)


def _offerset_response(
    request: web.Request, view: OfferSetView, headers: dict[str, str] | None = None
) -> web.Response:
    """An offer set with its TTL in the body and in ``Cache-Control`` (talicada/broker/ttl.py)."""
    now_ms = int(request.app[BROKER].clock().timestamp() * 1000)
    seconds = offerset_ttl(view, now_ms)
    return respond(
        request,
        offerset_doc(view, _base(request), seconds, _dialect(request), _limits(request)),
        root="offers-response",
        headers={**(headers or {}), hdrs.CACHE_CONTROL: ttl.cache_control(seconds)},
    )


_DIALECTS: dict[str, Dialect] = {dialect.value: dialect for dialect in Dialect}


def _dialect(request: web.Request) -> Dialect | None:
    """The dialect the reader asked answers in (``?dialect=``); None: each record's own."""
    text = request.query.get("dialect")
    if text is None:
        return None
    if text not in _DIALECTS:
        reason = f"unknown dialect {text!r}; dialects are " + ", ".join(_DIALECTS)
        raise RequestInvalid([msg.make(msg.INVALID_FIELD, path="dialect", reason=reason)])
    return _DIALECTS[text]


def _limits(request: web.Request) -> dict[str, float]:
    """Each platform's longest booking (seconds), for the options of offers and sessions."""
    return {p.name: p.max_duration for p in request.app[SETTINGS].platforms}


def _session(request: web.Request, live: LiveSession) -> dict[str, Any]:
    """``live`` rendered for this request: its dialect, URL and options."""
    limit = _limits(request).get(live.record.platform)
    return session_doc(live, _base(request), _dialect(request), limit)


@routes.post("/requests")
@routes.post("/offersets")
async def create_offerset(request: web.Request) -> web.Response:
    """Execution request → offer set (200, or 303 with ``Prefer: return=minimal``)."""
    valid = await _valid_request(request)
    view = await request.app[BROKER].request(
        valid, principal(request), max_offers=params.prefer_offers(request)
    )
    request.app[METRICS].offersets.labels(view.record.result).inc()
    base = _base(request)
    location = f"{base}/offersets/{view.record.uuid}"
    if "return=minimal" in request.headers.get("Prefer", ""):
        raise web.HTTPSeeOther(location)
    return _offerset_response(request, view, {hdrs.LOCATION: location})


@routes.get("/offersets/{uuid}")
async def get_offerset(request: web.Request) -> web.Response:
    """An offer set with the live phase of each offer."""
    view = await request.app[BROKER].offerset(path_uuid(request), viewer(request))
    return _offerset_response(request, view)


@routes.post("/direct")
@routes.post("/sessions")
async def direct(request: web.Request) -> web.Response:
    """Execute without choosing: the best offer, accepted at once.

    A request that is invalid or that no platform can run is answered 400 as a
    REJECTED execution whose messages say why (the reference schema's answer).
    """
    dialect = _dialect(request)
    try:
        valid = await _valid_request(request)
    except RequestInvalid as error:
        if error.status != 400:
            raise
        refused = refusal_doc(error.messages, dialect or Dialect.V1_0)
        return respond(request, refused, status=400, root="execution")
    result = await request.app[BROKER].direct(valid, principal(request))
    base = _base(request)
    if isinstance(result, LiveSession):
        location = f"{base}/sessions/{result.record.uuid}"
        if "return=minimal" in request.headers.get("Prefer", ""):
            raise web.HTTPSeeOther(location)
        return respond(
            request, _session(request, result), root="execution", headers={hdrs.LOCATION: location}
        )
    record = result.record
    # The refusal holds as long as its NO offer set would (talicada/broker/ttl.py).
    seconds = offerset_ttl(result, int(request.app[BROKER].clock().timestamp() * 1000))
    refused = refusal_doc(
        record.messages,
        dialect or Dialect(record.dialect),
        f"{base}/offersets/{record.uuid}",
        ttl_seconds=seconds,
    )
    headers: dict[str, str] = {hdrs.CACHE_CONTROL: ttl.cache_control(seconds)}
    return respond(request, refused, status=400, root="execution", headers=headers)


@routes.get("/sessions/{uuid}")
async def get_session(request: web.Request) -> web.Response:
    """One session (or offer); ``?wait=S&phase=P`` waits while the phase is P."""
    uuid = path_uuid(request)
    live = await request.app[BROKER].session(uuid, viewer(request))
    live = await long_poll(request, uuid, live)
    return respond(request, _session(request, live), root="execution")


@routes.post("/sessions/{uuid}")
async def update_session(request: web.Request) -> web.Response:
    """Apply an update (accept, reject, cancel)."""
    uuid = path_uuid(request)
    body, media = await read_body(request)
    update = parse_update(body, lax=media is MediaType.XML)
    live = await request.app[BROKER].update(uuid, viewer(request), update)
    return respond(request, _session(request, live), root="execution")


@routes.delete("/sessions/{uuid}")
async def delete_session(request: web.Request) -> web.Response:
    """UWS's DELETE, 303 to the list: a live session is ended (an open offer
    rejected, anything else cancelled), a final one is forgotten (its record,
    history and retained MQTT message deleted now rather than after the
    retention period). So one DELETE stops a session and a second, once it
    has finished releasing, removes it; on a session already final one does.
    """
    uuid = path_uuid(request)
    broker = request.app[BROKER]
    live = await broker.session(uuid, viewer(request))
    if live.phase in lifecycle.FINAL:
        await broker.forget(live)
    else:
        target: SessionPhase = "REJECTED" if live.phase == "OFFERED" else "CANCELLED"
        if lifecycle.allowed(live.phase, target):
            update = EnumValueUpdate(path="phase", value=target)
            await broker.update(uuid, viewer(request), update)
    raise web.HTTPSeeOther(f"{_base(request)}/sessions")


def _instant_param(request: web.Request, name: str) -> datetime | None:
    text = request.query.get(name)
    if text is None:
        return None
    try:
        return iso8601.parse_instant(text)
    except iso8601.Iso8601Error as error:
        raise RequestInvalid([msg.make(msg.INVALID_FIELD, path=name, reason=str(error))]) from None


def _limit_param(request: web.Request) -> int:
    return params.whole(request, "limit", 50, 1, 500)


_OFFER_PHASES: frozenset[str] = frozenset({"INITIAL", "OFFERED", "REJECTED", "EXPIRED"})


@routes.get("/sessions")
async def list_sessions(request: web.Request) -> web.Response:
    """The caller's sessions, newest first: ``?phase=&since=&until=&cursor=&limit=&offers=``.

    Without ``phase``, offers (OFFERED, REJECTED, EXPIRED) are left out unless
    ``offers=true``.
    """
    phases = params.phases(request)
    # Parsed whether or not it matters, so a bad value is always a 400.
    with_offers = params.flag(request, "offers")
    if not phases and not with_offers:
        # Offers, taken or not, are the offer set's business; a user's list is
        # what was accepted (docs/ARCHITECTURE.md §3).
        phases = sorted(params.PHASES - _OFFER_PHASES)
    sessions, cursor = await request.app[BROKER].list_sessions(
        viewer(request),
        phases=phases,
        since=_instant_param(request, "since"),
        until=_instant_param(request, "until"),
        cursor=request.query.get("cursor"),
        limit=_limit_param(request),
    )
    page: dict[str, Any] = {"sessions": [_session(request, live) for live in sessions]}
    if cursor:
        page["cursor"] = cursor
        page["next"] = str(request.rel_url.update_query(cursor=cursor))
    return respond(request, page, root="sessions")


@routes.get("/availability")
async def availability(request: web.Request) -> web.Response:
    """VOSI availability: is the service up, and since when."""
    ready = await request.app[BROKER].store.ping()
    started = request.app[STARTED]
    doc = {
        "available": ready,
        "upSince": iso8601.format_instant(datetime.fromtimestamp(started).astimezone()),
        "note": "accepting requests" if ready else "the state store does not answer",
    }
    if response_media(request) is MediaType.XML:
        return web.Response(body=vosi_availability(doc), content_type="application/xml")
    return respond(request, doc, root="availability")


#: The namespace VOSI clients look for (IVOA VOSI 1.1, availability).
VOSI_AVAILABILITY = "http://www.ivoa.net/xml/VOSIAvailability/v1.0"


def vosi_availability(doc: dict[str, Any]) -> bytes:
    """``doc`` as a VOSI availability document: namespaced elements, in VOSI's order."""
    import xml.etree.ElementTree as ET  # writing only: nothing untrusted is parsed

    ET.register_namespace("vosi", VOSI_AVAILABILITY)
    root = ET.Element(f"{{{VOSI_AVAILABILITY}}}availability")
    for key in ("available", "upSince", "note"):
        value = doc[key]
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        ET.SubElement(root, f"{{{VOSI_AVAILABILITY}}}{key}").text = text
    body: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return body


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process serves HTTP."""
    return respond(request, {"status": "ok"}, root="health")


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    """Readiness: the state store answers. Lists the workers' health records
    (talicada/workers/health.py), each marked alive or not; readiness does not
    depend on them, since workers come and go independently of the broker."""
    store = request.app[BROKER].store
    ready = await store.ping()
    body: dict[str, object] = {"status": "ok" if ready else "unavailable"}
    if ready:
        try:
            found = await worker_health(ledger_for(store.bus))
        except Exception:  # a probe must answer even when the records cannot be read
            found = []
        body["workers"] = [msgspec.to_builtins(record) for record in found]
    return respond(request, body, status=200 if ready else 503, root="health")


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    """Prometheus metrics of this replica (and the shared streams)."""
    settings = request.app[SETTINGS]
    if settings.metrics_access == "operator" or settings.metrics_port is not None:
        require_operator(request)
    return await exposition(request.app[METRICS], request.app[BROKER].store.bus)


@routes.get("/openapi.json")
async def openapi_json(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 document generated from the model."""
    return web.Response(body=request.app[OPENAPI].json, content_type="application/json")


@routes.get("/openapi.yaml")
async def openapi_yaml(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 document as YAML."""
    return web.Response(body=request.app[OPENAPI].yaml, content_type="application/yaml")
