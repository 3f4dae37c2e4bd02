"""HTTP plumbing: content negotiation, body decoding and the one error mapping.

Every error a client can cause leaves here as a MessageItem list with the
right status (400, 401, 404, 406, 408, 409, 413, 415). Redis being away, slow
or out of connections is 503 with ``Retry-After`` (the client should simply
try again); anything else is logged and answered 500 without internals.
Handlers raise; they never build error bodies.
"""

from __future__ import annotations

import asyncio
import uuid as uuidlib
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import hdrs, web
from aiohttp.typedefs import Middleware

from talicada.auth.identity import NOBODY, Identity
from talicada.broker.auth import Authenticator
from talicada.broker.notify import TooManyWatchers
from talicada.broker.store import EVERYONE
from talicada.redisconn import is_unavailable
from talicada.schema import codec
from talicada.schema import messages as msg
from talicada.schema.codec import MediaType
from talicada.schema.messages import Forbidden, MessageItem, RequestInvalid, RequestTimeout

log = structlog.get_logger("talicada.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

MEDIA = web.RequestKey("media", MediaType)
PRINCIPAL = web.RequestKey("principal", str)
IDENTITY = web.RequestKey("identity", Identity)

#: Seconds a client is told to wait before retrying a 503.
RETRY_AFTER = 5

#: Bodies larger than this are decoded in a worker thread, so that even a body
#: at the size and item limits does not hold the event loop (and every other
#: request on it) while it is parsed.
OFFLOAD_BYTES = 64 * 1024

#: Default seconds a client may take to send its body (Settings.http_body_timeout).
BODY_TIMEOUT = 30.0
BODY_TIMEOUT_KEY = web.AppKey("body_timeout", float)


def response_media(request: web.Request) -> MediaType:
    """The media type negotiated for this request's response."""
    media: MediaType = request.get(MEDIA, MediaType.JSON)
    return media


def respond(
    request: web.Request,
    data: object,
    *,
    status: int = 200,
    root: str = "response",
    headers: dict[str, str] | None = None,
) -> web.Response:
    """``data`` encoded in the negotiated media type."""
    media = response_media(request)
    return web.Response(
        body=codec.encode(data, media, root=root),
        status=status,
        headers={hdrs.CONTENT_TYPE: codec.content_type_header(media), **(headers or {})},
    )


async def read_body(request: web.Request) -> tuple[object, MediaType]:
    """The decoded request body and its media type; RequestInvalid if unreadable."""
    media = codec.media_type_for_content_type(request.headers.get(hdrs.CONTENT_TYPE))
    seconds = request.app.get(BODY_TIMEOUT_KEY, BODY_TIMEOUT)
    try:
        async with asyncio.timeout(seconds):
            body = await request.read()
    except TimeoutError:
        raise RequestTimeout(
            [msg.make(msg.TIMED_OUT, what="sending the request body", seconds=f"{seconds:g}")]
        ) from None
    if not body.strip():
        raise RequestInvalid(
            [msg.make(msg.MALFORMED_BODY, media=media.name, reason="the body is empty")]
        )
    try:
        if len(body) > OFFLOAD_BYTES:
            return await asyncio.to_thread(codec.decode, body, media), media
        return codec.decode(body, media), media
    except codec.CodecError as error:
        raise RequestInvalid(
            [msg.make(msg.MALFORMED_BODY, media=media.name, reason=str(error))]
        ) from error


def path_uuid(request: web.Request) -> str:
    """The ``{uuid}`` of the path, normalised; NotFound when it is not a uuid."""
    text = request.match_info["uuid"]
    try:
        return str(uuidlib.UUID(text))
    except ValueError:
        raise msg.NotFound([msg.make(msg.NOT_FOUND, what="resource", uuid=text[:64])]) from None


def base_url(request: web.Request, configured: str | None) -> str:
    """Where clients reach this broker, for ``href``s."""
    if configured:
        return configured.rstrip("/")
    return f"{request.scheme}://{request.host}"


#: Path parameters that name what a request is about, and the log key for each.
_SUBJECTS = {"/offersets/": "offerset", "/callbacks/": "session", "/sessions/": "session"}


def subject(request: web.Request) -> dict[str, str]:
    """What ``request`` is about, as log keys: ``{"session": uuid}`` or ``{"offerset": uuid}``."""
    uuid = request.match_info.get("uuid")
    if not uuid:
        return {}
    for prefix, key in _SUBJECTS.items():
        if request.path.startswith(prefix):
            return {key: uuid}
    return {}


@web.middleware
async def context_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bind the request (and the session it is about) to every log line written while serving it."""
    with structlog.contextvars.bound_contextvars(
        method=request.method, path=request.path, **subject(request)
    ):
        return await handler(request)


def _error(request: web.Request, status: int, messages: list[MessageItem]) -> web.Response:
    return respond(request, {"messages": messages}, status=status, root="error")


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Negotiate the response type first, then map every client error to a status."""
    try:
        request[MEDIA] = codec.negotiate(request.headers.get(hdrs.ACCEPT))
    except codec.NotAcceptable as error:
        request[MEDIA] = MediaType.JSON
        return _error(request, 406, [msg.make(msg.INVALID_FIELD, path="Accept", reason=str(error))])
    try:
        return await handler(request)
    except msg.Unavailable as error:
        response = _error(request, 503, error.messages)
        response.headers[hdrs.RETRY_AFTER] = str(error.retry_after)
        return response
    except RequestInvalid as error:
        return _error(request, error.status, error.messages)
    except TooManyWatchers as error:
        return unavailable(request, f"too many watchers on this replica ({error})")
    except codec.UnsupportedMediaType as error:
        return _error(
            request, 415, [msg.make(msg.INVALID_FIELD, path="Content-Type", reason=str(error))]
        )
    except web.HTTPRequestEntityTooLarge:
        # aiohttp's exception does not keep the limit; the request does.
        reason = f"the body is larger than {request.client_max_size} bytes"
        return _error(request, 413, [msg.make(msg.MALFORMED_BODY, media="request", reason=reason)])
    except web.HTTPException as error:
        if error.status < 400:
            raise
        # aiohttp's own refusals (unknown path, wrong method) in our format.
        response = _error(
            request,
            error.status,
            [msg.make(msg.INVALID_FIELD, path=request.path, reason=error.reason)],
        )
        if hdrs.ALLOW in error.headers:
            response.headers[hdrs.ALLOW] = error.headers[hdrs.ALLOW]
        return response
    except Exception as error:
        if is_unavailable(error):
            # Redis is away, failing over or out of connections. Logged once per
            # outage by the loops that watch Redis (notifier, timers), not here.
            log.debug("request.unavailable", path=request.path, error=str(error))
            return unavailable(request, "its state store (Redis) is unreachable or overloaded")
        log.exception("request.failed", method=request.method, path=request.path)
        item = msg.make(msg.INVALID_FIELD, path=request.path, reason="internal error; see logs")
        return _error(request, 500, [item])


def unavailable(request: web.Request, reason: str) -> web.Response:
    """503 with ``Retry-After``: the request was fine, the broker cannot serve it now."""
    item = msg.make(msg.UNAVAILABLE, reason=reason, retry=RETRY_AFTER)
    response = _error(request, 503, [item])
    response.headers[hdrs.RETRY_AFTER] = str(RETRY_AFTER)
    return response


def auth_middleware(authenticator: Authenticator | None, open_paths: frozenset[str]) -> Middleware:
    """Resolve the caller from a bearer token; 401 unless the path is open."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if authenticator is None:
            request[IDENTITY] = NOBODY
            request[PRINCIPAL] = NOBODY.principal
            return await handler(request)
        identity, reason = await authenticator.identify(request.headers.get(hdrs.AUTHORIZATION))
        # Callbacks carry their own HMAC signature instead of a bearer token.
        signed = request.path.startswith("/callbacks/")
        if identity is None and request.path not in open_paths and not signed:
            response = _error(
                request, 401, [msg.make(msg.INVALID_FIELD, path="Authorization", reason=reason)]
            )
            response.headers[hdrs.WWW_AUTHENTICATE] = 'Bearer realm="talicada"'
            return response
        request[IDENTITY] = identity or NOBODY
        request[PRINCIPAL] = request[IDENTITY].principal
        return await handler(request)

    return middleware


def principal(request: web.Request) -> str:
    """Who is calling (set by the auth middleware): the owner of what they create."""
    acting = request[PRINCIPAL]
    if acting == EVERYONE:
        # The name of the operators' index of every session; nobody may act as it.
        raise Forbidden(
            [msg.make(msg.INVALID_FIELD, path="principal", reason=f"{EVERYONE!r} is reserved")]
        )
    return acting


def identity(request: web.Request) -> Identity:
    """Who is calling and their roles (set by the auth middleware)."""
    found: Identity = request.get(IDENTITY, NOBODY)
    return found


def viewer(request: web.Request) -> str | None:
    """Whose sessions the caller may see and change: their own, or None (everyone's)."""
    caller, acting = identity(request), principal(request)
    # Roles belong to the authenticated caller: a principal asserted on its behalf
    # (a federation aggregator acting for a user) has none.
    return None if caller.operator and caller.principal == acting else acting


def require_operator(request: web.Request) -> None:
    """403 unless the caller holds the operator role."""
    if not identity(request).operator:
        raise Forbidden(
            [
                msg.make(
                    msg.INVALID_FIELD,
                    path="Authorization",
                    reason="this needs the operator role",
                )
            ]
        )
