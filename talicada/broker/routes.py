"""The HTTP API (docs/ARCHITECTURE.md §3): decode, ask the broker, render. Nothing else."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from aiohttp import hdrs, web

from talicada.broker import ttl
from talicada.broker.http import base_url, path_uuid, principal, read_body, respond
from talicada.broker.keys import BROKER, METRICS, OPENAPI, SETTINGS, STARTED
from talicada.broker.metrics import exposition
from talicada.broker.records import LiveSession
from talicada.broker.render import offerset_doc, offerset_ttl, session_doc
from talicada.broker.service import OfferSetView
from talicada.broker.watch import long_poll
from talicada.schema import iso8601
from talicada.schema import messages as msg
from talicada.schema.codec import MediaType
from talicada.schema.messages import RequestInvalid
from talicada.schema.model import SessionPhase
from talicada.schema.validation import parse_request, parse_update
from talicada.workers.backends._shared import ledger_for
from talicada.workers.health import workers as worker_health

routes = web.RouteTableDef()

_PHASES: frozenset[str] = frozenset(SessionPhase.__args__)  # type: ignore[attr-defined]


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
        offerset_doc(view, _base(request), seconds),
        root="offers-response",
        headers={**(headers or {}), hdrs.CACHE_CONTROL: ttl.cache_control(seconds)},
    )


@routes.post("/requests")
@routes.post("/offersets")
async def create_offerset(request: web.Request) -> web.Response:
    """Execution request → offer set (200, or 303 with ``Prefer: return=minimal``)."""
    valid = await _valid_request(request)
    view = await request.app[BROKER].request(valid, principal(request))
    request.app[METRICS].offersets.labels(view.record.result).inc()
    base = _base(request)
    location = f"{base}/offersets/{view.record.uuid}"
    if "return=minimal" in request.headers.get("Prefer", ""):
        raise web.HTTPSeeOther(location)
    return _offerset_response(request, view, {hdrs.LOCATION: location})


@routes.get("/offersets/{uuid}")
async def get_offerset(request: web.Request) -> web.Response:
    """An offer set with the live phase of each offer."""
    view = await request.app[BROKER].offerset(path_uuid(request), principal(request))
    return _offerset_response(request, view)


@routes.post("/direct")
@routes.post("/sessions")
async def direct(request: web.Request) -> web.Response:
    """Execute without choosing: the best offer, accepted at once."""
    valid = await _valid_request(request)
    result = await request.app[BROKER].direct(valid, principal(request))
    base = _base(request)
    if isinstance(result, LiveSession):
        location = f"{base}/sessions/{result.record.uuid}"
        if "return=minimal" in request.headers.get("Prefer", ""):
            raise web.HTTPSeeOther(location)
        return respond(
            request, session_doc(result, base), root="execution", headers={hdrs.LOCATION: location}
        )
    return _offerset_response(request, result)


@routes.get("/sessions/{uuid}")
async def get_session(request: web.Request) -> web.Response:
    """One session (or offer); ``?wait=S&phase=P`` waits while the phase is P."""
    uuid = path_uuid(request)
    live = await request.app[BROKER].session(uuid, principal(request))
    live = await long_poll(request, uuid, live)
    return respond(request, session_doc(live, _base(request)), root="execution")


@routes.post("/sessions/{uuid}")
async def update_session(request: web.Request) -> web.Response:
    """Apply an update (accept, reject, cancel)."""
    uuid = path_uuid(request)
    body, media = await read_body(request)
    update = parse_update(body, lax=media is MediaType.XML)
    live = await request.app[BROKER].update(uuid, principal(request), update)
    return respond(request, session_doc(live, _base(request)), root="execution")


def _instant_param(request: web.Request, name: str) -> datetime | None:
    text = request.query.get(name)
    if text is None:
        return None
    try:
        return iso8601.parse_instant(text)
    except iso8601.Iso8601Error as error:
        raise RequestInvalid([msg.make(msg.INVALID_FIELD, path=name, reason=str(error))]) from None


def _limit_param(request: web.Request) -> int:
    text = request.query.get("limit", "50")
    if not text.isdigit() or not 1 <= int(text) <= 500:
        raise RequestInvalid(
            [msg.make(msg.INVALID_FIELD, path="limit", reason="a whole number from 1 to 500")]
        )
    return int(text)


@routes.get("/sessions")
async def list_sessions(request: web.Request) -> web.Response:
    """The caller's sessions, newest first: ``?phase=&since=&until=&cursor=&limit=``."""
    phases = [p for value in request.query.getall("phase", []) for p in value.split(",") if p]
    unknown = [phase for phase in phases if phase not in _PHASES]
    if unknown:
        raise RequestInvalid(
            [
                msg.make(
                    msg.INVALID_FIELD,
                    path="phase",
                    reason=f"unknown phase {unknown[0]!r}; phases are "
                    + ", ".join(sorted(_PHASES)),
                )
            ]
        )
    sessions, cursor = await request.app[BROKER].list_sessions(
        principal(request),
        phases=phases,  # type: ignore[arg-type]
        since=_instant_param(request, "since"),
        until=_instant_param(request, "until"),
        cursor=request.query.get("cursor"),
        limit=_limit_param(request),
    )
    base = _base(request)
    page: dict[str, Any] = {"sessions": [session_doc(live, base) for live in sessions]}
    if cursor:
        page["cursor"] = cursor
        page["next"] = str(request.rel_url.update_query(cursor=cursor))
    return respond(request, page, root="sessions")


@routes.get("/availability")
async def availability(request: web.Request) -> web.Response:
    """VOSI availability: is the service up, and since when."""
    ready = await request.app[BROKER].store.ping()
    started = request.app[STARTED]
    return respond(
        request,
        {
            "available": ready,
            "upSince": iso8601.format_instant(datetime.fromtimestamp(started).astimezone()),
            "note": "accepting requests" if ready else "the state store does not answer",
        },
        root="availability",
    )


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
    return await exposition(request.app[METRICS], request.app[BROKER].store.bus)


@routes.get("/openapi.json")
async def openapi_json(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 document generated from the model."""
    return web.Response(body=request.app[OPENAPI].json, content_type="application/json")


@routes.get("/openapi.yaml")
async def openapi_yaml(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 document as YAML."""
    return web.Response(body=request.app[OPENAPI].yaml, content_type="application/yaml")
