"""The aiohttp side of federation: thin hooks into the broker's application.

- :func:`faults_middleware` obeys ``X-Talicada-Fault`` on test sites;
- :func:`trust_middleware` lets a configured aggregator act for its client;
- :func:`forwarding_middleware` hands requests, and calls on offers that a
  remote site owns, to the :class:`~talicada.federation.aggregator.Aggregator`
  (everything else goes to the broker's own handlers unchanged);
- :func:`setup` adds ``GET /capabilities`` and the aggregator's lifetime.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta

import aiohttp
import msgspec
from aiohttp import hdrs, web
from aiohttp.typedefs import Middleware

from talicada import constants
from talicada.broker.http import PRINCIPAL, base_url, path_uuid, principal, read_body, respond
from talicada.broker.keys import BROKER, METRICS, SETTINGS
from talicada.broker.lifecycle import FINAL
from talicada.broker.ttl import cache_control
from talicada.federation import documents, faults
from talicada.federation.aggregator import Aggregator, Answer, SiteUnavailable
from talicada.federation.capabilities import describe
from talicada.federation.follow import View
from talicada.federation.index import Index, MemoryIndex, RedisIndex, RemoteSession
from talicada.federation.site import Identity
from talicada.schema import iso8601
from talicada.schema import messages as msg
from talicada.schema.codec import MediaType
from talicada.schema.kinds import Dialect
from talicada.schema.messages import RequestInvalid
from talicada.schema.model import EnumValueUpdate
from talicada.schema.validation import ValidRequest, parse_request, parse_update
from talicada.settings import Settings

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: The aggregator, present when the settings name remote platforms.
AGGREGATOR = web.AppKey("aggregator", Aggregator)

_ACCEPT = msgspec.json.encode(
    {"kind": "uri:enum-value-update", "path": "phase", "value": "ACCEPTED"}
)
#: What a principal asserted by a trusted caller may look like.
_PRINCIPAL = re.compile(r"^[^\s\x00-\x1f\x7f]{1,256}$")
#: Seconds between SSE comments that keep idle connections open through proxies.
KEEPALIVE = 15.0


def _error(request: web.Request, status: int, path: str, reason: str) -> web.Response:
    item = msg.make(msg.INVALID_FIELD, path=path, reason=reason)
    return respond(request, {"messages": [item]}, status=status, root="error")


def faults_middleware(settings: Settings) -> Middleware:
    """Injected failures by header, obeyed only on brokers configured for it."""
    return faults.middleware(settings.federation.fault_injection)


def trust_middleware(settings: Settings) -> Middleware:
    """A trusted caller (an aggregator's service token) acts for the principal it names."""
    header = settings.federation.principal_header
    trusted = frozenset(settings.federation.trusted)

    @web.middleware
    async def trust(request: web.Request, handler: Handler) -> web.StreamResponse:
        asserted = request.headers.get(header)
        if asserted is None:
            return await handler(request)
        caller = request.get(PRINCIPAL)
        if caller not in trusted:
            return _error(
                request, 403, header, f"{caller or 'this caller'} may not act for another principal"
            )
        if not _PRINCIPAL.match(asserted):
            return _error(request, 400, header, "a principal is 1-256 printable characters")
        request[PRINCIPAL] = asserted
        return await handler(request)

    return trust


def identity(request: web.Request) -> Identity:
    """Who the aggregator calls sites for: this request's principal and credentials."""
    return Identity(principal(request), request.headers.get(hdrs.AUTHORIZATION))


def _site_faults(request: web.Request) -> Callable[[str], str | None]:
    if not request.app[SETTINGS].federation.fault_injection:
        return lambda site: None
    try:
        parsed = faults.parse(request.headers.getall(faults.HEADER, []))
    except faults.BadFault:
        parsed = []  # the faults middleware already refused it
    return lambda site: faults.for_site(parsed, site)


def _base(request: web.Request) -> str:
    return base_url(request, request.app[SETTINGS].base_url)


def _session_url(request: web.Request, uuid: str) -> str:
    return f"{_base(request)}/sessions/{uuid}"


def _cache_control(seconds: int) -> dict[str, str]:
    return {hdrs.CACHE_CONTROL: cache_control(seconds)}


def _instant(ms: int) -> str:
    return iso8601.format_instant(datetime.fromtimestamp(ms / 1000, UTC))


def _render(request: web.Request, answer: Answer) -> web.Response:
    record = answer.record
    dialect = Dialect(record.dialect)
    base = _base(request)
    offers = [
        documents.with_url(offer, dialect, f"{base}/sessions/{documents.uuid_of(offer, dialect)}")
        for offer in answer.offers
    ]
    doc = documents.offerset(
        dialect=dialect,
        uuid=record.uuid,
        url=f"{base}/offersets/{record.uuid}",
        created=_instant(record.created),
        result=record.result,
        expires=_instant(record.expires) if record.result == "YES" else None,
        ttl=iso8601.format_duration(timedelta(seconds=answer.ttl)),
        messages=record.messages,
        offers=offers,
    )
    headers = {**_cache_control(answer.ttl), hdrs.LOCATION: f"{base}/offersets/{record.uuid}"}
    return respond(request, doc, root="offers-response", headers=headers)


# -- forwarding ------------------------------------------------------------------------------


def forwarding_middleware() -> Middleware:
    """Requests, and calls on offers a remote site owns, go to the aggregator."""

    @web.middleware
    async def forward(request: web.Request, handler: Handler) -> web.StreamResponse:
        aggregator = request.app.get(AGGREGATOR)
        resource = request.match_info.route.resource
        if aggregator is None or resource is None:
            return await handler(request)
        route = (request.method, resource.canonical)
        if route in (("POST", "/requests"), ("POST", "/offersets")):
            return await _create(request, aggregator)
        if route in (("POST", "/direct"), ("POST", "/sessions")):
            return await _direct(request, aggregator)
        if route == ("GET", "/offersets/{uuid}"):
            answer = await aggregator.offerset(path_uuid(request), identity(request))
            return await handler(request) if answer is None else _render(request, answer)
        if resource.canonical.startswith("/sessions/{uuid}"):
            record = await aggregator.owned(path_uuid(request), identity(request))
            if record is None:
                return await handler(request)
            if request.method == "POST" and resource.canonical == "/sessions/{uuid}":
                return await _update(request, aggregator, record)
            if request.method == "DELETE" and record.site is not None:
                # The site ends or forgets it (UWS DELETE); the client sees our list.
                await aggregator.forward(
                    record, "DELETE", f"/sessions/{record.uuid}", identity(request)
                )
                raise web.HTTPSeeOther(f"{_base(request)}/sessions")
            if record.site is not None:
                return await _read(request, aggregator, record, resource.canonical)
        return await handler(request)

    return forward


async def _valid(request: web.Request) -> tuple[ValidRequest, bytes, str]:
    decoded, media = await read_body(request)
    valid = parse_request(decoded, now=request.app[BROKER].clock(), lax=media is MediaType.XML)
    content_type = request.headers.get(hdrs.CONTENT_TYPE) or "application/json"
    return valid, await request.read(), content_type


async def _create(request: web.Request, aggregator: Aggregator) -> web.StreamResponse:
    valid, body, content_type = await _valid(request)
    answer = await aggregator.request(
        valid,
        body,
        content_type,
        identity(request),
        _site_faults(request),
    )
    request.app[METRICS].offersets.labels(answer.record.result).inc()
    if "return=minimal" in request.headers.get("Prefer", ""):
        raise web.HTTPSeeOther(f"{_base(request)}/offersets/{answer.record.uuid}")
    return _render(request, answer)


async def _direct(request: web.Request, aggregator: Aggregator) -> web.StreamResponse:
    """The best offer of all sites, accepted at once; the NO answer if there is none."""
    valid, body, content_type = await _valid(request)
    caller = identity(request)
    answer = await aggregator.request(
        valid,
        body,
        content_type,
        caller,
        _site_faults(request),
    )
    request.app[METRICS].offersets.labels(answer.record.result).inc()
    if not answer.record.offers:
        return _render(request, answer)
    record = await aggregator.owned(answer.record.offers[0], caller)
    assert record is not None
    update = EnumValueUpdate(path="phase", value="ACCEPTED")
    doc = await aggregator.update(
        record,
        update,
        _ACCEPT,
        "application/json",
        caller,
        _site_faults(request)(record.site or ""),
    )
    return _session(
        request, record, doc, headers={hdrs.LOCATION: _session_url(request, record.uuid)}
    )


def _session(
    request: web.Request,
    record: RemoteSession,
    doc: documents.Doc,
    headers: dict[str, str] | None = None,
) -> web.Response:
    dialect = Dialect(record.dialect)
    out = documents.with_url(doc, dialect, _session_url(request, record.uuid))
    return respond(request, out, root="execution", headers=headers)


async def _update(
    request: web.Request, aggregator: Aggregator, record: RemoteSession
) -> web.StreamResponse:
    decoded, media = await read_body(request)
    update = parse_update(decoded, lax=media is MediaType.XML)
    content_type = request.headers.get(hdrs.CONTENT_TYPE) or "application/json"
    fault = _site_faults(request)(record.site or "")
    doc = await aggregator.update(
        record, update, await request.read(), content_type, identity(request), fault
    )
    return _session(request, record, doc)


def _wait(request: web.Request) -> float:
    text = request.query.get("wait")
    if text is None:
        return 0.0
    try:
        wait = float(text)
    except ValueError:
        wait = -1.0
    longest = constants.MAX_LONG_POLL.total_seconds()
    if not 0 <= wait <= longest:
        raise RequestInvalid(
            [msg.make(msg.INVALID_FIELD, path="wait", reason=f"seconds from 0 to {longest:g}")]
        )
    return wait


async def _read(
    request: web.Request, aggregator: Aggregator, record: RemoteSession, route: str
) -> web.StreamResponse:
    caller = identity(request)
    uuid = record.uuid
    if route == "/sessions/{uuid}/log":
        doc = await aggregator.forward(record, "GET", f"/sessions/{uuid}/log", caller)
        session = doc.get("session")
        if isinstance(session, dict):
            url = _session_url(request, uuid)
            doc["session"] = documents.with_url(session, Dialect(record.dialect), url)
        return respond(request, doc, root="log")
    wait = _wait(request)
    fault = _site_faults(request)(record.site or "")
    following = wait or route.endswith("/events")
    view = aggregator.view(record, caller, fault) if following else None
    if view is None:
        view = aggregator.views.get(uuid)
    if route.endswith("/events"):
        if view is None:
            raise SiteUnavailable(
                [
                    msg.make(
                        msg.SITE_UNAVAILABLE, site=record.site, reason="too many sessions followed"
                    )
                ]
            )
        return await _events(request, view)
    if view is None:
        params = {k: v for k, v in request.query.items() if k in ("wait", "phase")}
        doc = await aggregator.forward(record, "GET", f"/sessions/{uuid}", caller, params=params)
        return _session(request, record, doc)
    await view.until(lambda: view.doc is not None, view.site.timeout)
    if view.doc is None:
        reason = view.error or "no answer"
        raise SiteUnavailable([msg.make(msg.SITE_UNAVAILABLE, site=record.site, reason=reason)])
    if wait:
        phase = request.query.get("phase", view.phase)
        await view.until(lambda: view.phase != phase or view.phase in FINAL, wait)
    elif view.stale and not view.done:
        # Components moved since the document was read: read it again, once.
        view.doc = await aggregator.forward(record, "GET", f"/sessions/{uuid}", caller)
        view.stale = False
    return _session(request, record, view.doc)


async def _events(request: web.Request, view: View) -> web.StreamResponse:
    """The view's transitions as Server-Sent Events, with the site's event ids."""
    await view.until(lambda: view.doc is not None, view.site.timeout)
    if view.doc is None:
        reason = view.error or "no answer"
        raise SiteUnavailable([msg.make(msg.SITE_UNAVAILABLE, site=view.site.name, reason=reason)])
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    resume = request.headers.get("Last-Event-ID", "")
    sent = int(resume) + 1 if re.fullmatch(r"[0-9]{1,9}", resume) else 0
    with view.watch() as changed:
        await response.prepare(request)
        while True:
            changed.clear()
            for index in range(sent, len(view.history)):
                item = view.history[index]
                name = "component" if "component" in item else "transition"
                data = json.dumps(item)
                await response.write(f"id: {index}\nevent: {name}\ndata: {data}\n\n".encode())
            sent = max(sent, len(view.history))
            if view.done:
                break
            try:
                await asyncio.wait_for(changed.wait(), timeout=KEEPALIVE)
            except TimeoutError:
                await response.write(b": keepalive\n\n")
    await response.write_eof()
    return response


# -- capabilities and lifetime ----------------------------------------------------------------


async def capabilities(request: web.Request) -> web.Response:
    """What this broker can do: dialects, kinds, limits, and its platforms (remote ones
    with what their sites can do)."""
    settings = request.app[SETTINGS]
    aggregator = request.app.get(AGGREGATOR)
    remote = await aggregator.remote_capabilities() if aggregator else {}
    endpoints = sorted({resource.canonical for resource in request.app.router.resources()})
    doc = describe(settings, remote, endpoints)
    ttl = int(settings.federation.capabilities_ttl)
    if any(found is None for found in remote.values()):
        ttl = 0  # a site is missing: what it can do may be known again at any moment
    return respond(
        request, doc, root="capabilities", headers={hdrs.CACHE_CONTROL: f"max-age={ttl}"}
    )


def _index(app: web.Application) -> Index:
    from talicada.broker.store.redis import RedisStore

    store = app[BROKER].store
    if isinstance(store, RedisStore):
        return RedisIndex(store.client, store.keys.prefix)
    return MemoryIndex()


async def _lifetime(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    async with aiohttp.ClientSession() as http:
        aggregator = Aggregator(
            settings,
            app[BROKER],
            _index(app),
            http,
            clock=app[BROKER].clock,
            registry=app[METRICS].registry,
        )
        app[AGGREGATOR] = aggregator
        yield
        await aggregator.close()


def setup(app: web.Application) -> None:
    """Add ``GET /capabilities``, and the aggregator when remote platforms are configured.

    Call after the broker's own lifetime is registered: the aggregator uses its store.
    """
    app.router.add_get("/capabilities", capabilities)
    if app[SETTINGS].remote_platforms:
        app.cleanup_ctx.append(_lifetime)
