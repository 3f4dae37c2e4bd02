"""The paths of the OpenAPI document: every operation of the HTTP API.

Part of :mod:`talicada.schema.openapi`.  The paths are written by hand here, and a
test keeps them in step with the routes.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from talicada.schema import model
from talicada.schema._openapi_schemas import array, ref

#: The media types every body may be written in (docs/ARCHITECTURE.md §3).
MEDIA_TYPES: Final = ("application/json", "application/yaml", "application/xml")


def content(schema: dict[str, Any]) -> dict[str, Any]:
    """A body of ``schema`` in each of the :data:`MEDIA_TYPES`."""
    return {media: {"schema": schema} for media in MEDIA_TYPES}


def _ok(
    description: str, schema: dict[str, Any], *, location: bool = False, cached: bool = False
) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description}
    headers: dict[str, Any] = {}
    if location:
        headers["Location"] = {"$ref": "#/components/headers/Location"}
    if cached:
        headers["Cache-Control"] = {"$ref": "#/components/headers/Cache-Control"}
    if headers:
        response["headers"] = headers
    response["content"] = content(schema)
    return response


def _errors(*statuses: str) -> dict[str, Any]:
    return {status: {"$ref": f"#/components/responses/{ERRORS[status][0]}"} for status in statuses}


#: Error responses by status: (component name, description).
ERRORS: Final = {
    "400": ("BadRequest", "The request is invalid; the messages name each bad field."),
    "401": ("Unauthorized", "A valid bearer token is required."),
    "403": ("Forbidden", "The caller lacks the role this needs (operator)."),
    "404": ("NotFound", "No such resource, or not the caller's."),
    "406": ("NotAcceptable", "None of the media types in `Accept` can be produced."),
    "409": ("Conflict", "The update is well formed but the session's state does not allow it."),
    "413": ("ContentTooLarge", "The body is larger than the broker accepts."),
    "415": ("UnsupportedMediaType", "The `Content-Type` is not JSON, YAML or XML."),
}


def _see_other() -> dict[str, Any]:
    return {
        "description": "Sent instead of the body when the request has `Prefer: return=minimal`.",
        "headers": {"Location": {"$ref": "#/components/headers/Location"}},
    }


def _operation(
    operation_id: str,
    summary: str,
    tag: str,
    responses: dict[str, Any],
    *,
    body: str | None = None,
    secured: bool = True,
    parameters: list[dict[str, Any]] | None = None,
    answers_model: bool = False,
) -> dict[str, Any]:
    operation: dict[str, Any] = {"operationId": operation_id, "summary": summary, "tags": [tag]}
    if answers_model:
        parameters = [*(parameters or []), DIALECT]
    if parameters:
        operation["parameters"] = parameters
    if body is not None:
        operation["requestBody"] = {"required": True, "content": content(ref(body))}
    # Content negotiation can refuse any request; only those with a body can be malformed.
    statuses = ["400", "406", "413", "415"] if body is not None else ["406"]
    if secured:
        statuses.append("401")
    # An operation's own answer for a status wins over the shared error answer.
    operation["responses"] = dict(sorted({**_errors(*statuses), **responses}.items()))
    # Every operation says how it is secured; the public ones with an empty list.
    operation["security"] = [{"bearer": []}] if secured else []
    return operation


#: ``?dialect=``: the spelling of the answer (docs/ARCHITECTURE.md §3).
DIALECT: Final = {"$ref": "#/components/parameters/dialect"}


#: One Server-Sent Event: its ``event`` name, ``id`` and JSON ``data`` as text.
SSE_EVENT: Final = {
    "type": "object",
    "properties": {
        "event": {"type": "string", "enum": ["transition", "component"]},
        "id": {"type": "string"},
        "data": {"type": "string"},
        "retry": {"type": "string"},
    },
}


#: ``Prefer`` on POST /requests: RFC 7240 preferences this broker honours.
PREFER = {
    "name": "Prefer",
    "in": "header",
    "required": False,
    "description": "`return=minimal`: answer 303 to the offer set instead of its body. "
    "`offers=N` (1-32): make at most N offers, fewer than the broker's most "
    "(`offers.max` in /capabilities). Both may be given, comma-separated.",
    "schema": {"type": "string"},
    "example": "offers=1",
}


def _create_offerset(operation_id: str, summary: str) -> dict[str, Any]:
    return _operation(
        operation_id,
        summary,
        "offers",
        {
            "200": _ok(
                "The offer set: YES with offers, or NO saying why.",
                ref("OfferSet"),
                location=True,
                cached=True,
            ),
            "303": _see_other(),
        },
        body="ExecutionRequest",
        answers_model=True,
        parameters=[PREFER],
    )


def _direct(operation_id: str, summary: str) -> dict[str, Any]:
    return _operation(
        operation_id,
        summary,
        "sessions",
        {
            "200": _ok("The accepted session.", ref("ExecutionSession"), location=True),
            "303": _see_other(),
            "400": {
                "description": "The request is invalid, or no platform can run it: a REJECTED "
                "execution whose messages say why (also under `messages`, as in every error).",
                "content": content(ref("RefusedExecution")),
            },
        },
        body="ExecutionRequest",
        answers_model=True,
    )


def _list_parameters() -> list[dict[str, Any]]:
    return [
        {
            "name": "phase",
            "in": "query",
            "description": "Only sessions in these phases (repeat, or separate by commas). "
            "Without it: every accepted session, live or finished, and no offers.",
            "schema": array(msgspec.json.schema(model.SessionPhase)),
            "style": "form",
            "explode": True,
        },
        {
            "name": "offers",
            "in": "query",
            "description": "With no `phase`: list offers (OFFERED, REJECTED, EXPIRED) too.",
            "schema": {"type": "boolean", "default": False},
        },
        {
            "name": "since",
            "in": "query",
            "description": "Only sessions created at or after this instant.",
            "schema": {"type": "string", "format": "date-time"},
        },
        {
            "name": "until",
            "in": "query",
            "description": "Only sessions created before this instant.",
            "schema": {"type": "string", "format": "date-time"},
        },
        {
            "name": "cursor",
            "in": "query",
            "description": "Where the previous page ended (its `cursor`).",
            "schema": {"type": "string"},
        },
        {
            "name": "limit",
            "in": "query",
            "description": "Most sessions on one page.",
            "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 50},
        },
    ]


def _event_parameters() -> list[dict[str, Any]]:
    def query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
        return {"name": name, "in": "query", "description": description, "schema": schema}

    text = {"type": "string"}
    return [
        query("stream", "A stream to follow (repeat; default: lifecycle).", array(text)),
        query("session", "Only events of this session.", {"type": "string", "format": "uuid"}),
        query("type", "Only events of this type (repeat).", array(text)),
        query("from_start", "Begin with the oldest event kept.", {"type": "boolean"}),
        query("count", "Stop after this many events.", {"type": "integer", "minimum": 1}),
        query("dead_letters", "List the dead letters instead.", {"type": "boolean"}),
    ]


def _long_poll_parameters() -> list[dict[str, Any]]:
    return [
        {
            "name": "wait",
            "in": "query",
            "description": "Seconds to wait while the phase equals `phase` (UWS style); "
            "more than 60 waits 60.",
            "schema": {"type": "number", "minimum": 0},
        },
        {
            "name": "until",
            "in": "query",
            "description": "`final`: wait until the session reaches a final phase, through "
            "passing ones such as RELEASING.",
            "schema": {"type": "string", "enum": ["final"]},
        },
        {
            "name": "phase",
            "in": "query",
            "description": "The phase to wait out (default: the phase when the request arrives).",
            "schema": msgspec.json.schema(model.SessionPhase),
        },
    ]


def _service(operation_id: str, summary: str, responses: dict[str, Any]) -> dict[str, Any]:
    """A path item with one GET that anyone may call (no token)."""
    return {"get": _operation(operation_id, summary, "service", responses, secured=False)}


def paths() -> dict[str, Any]:
    """Every path item of the document, by URL."""
    uuid = [{"$ref": "#/components/parameters/uuid"}]
    health = ref("Health")
    openapi_json = {"application/json": {"schema": {"type": "object"}}}
    # A YAML document of the same object (clients that parse YAML see an object).
    openapi_yaml = {"application/yaml": {"schema": {"type": "object"}}}
    return {
        "/requests": {
            "post": _create_offerset("createOfferSet", "Ask for offers to run an execution."),
        },
        "/offersets": {
            "post": _create_offerset(
                "createOfferSetAtOffersets", "Ask for offers (alias of POST /requests)."
            ),
        },
        "/offersets/{uuid}": {
            "parameters": uuid,
            "get": _operation(
                "getOfferSet",
                "Read an offer set with the current phase of each offer.",
                "offers",
                {"200": _ok("The offer set.", ref("OfferSet"), cached=True), **_errors("404")},
                answers_model=True,
            ),
        },
        "/direct": {
            "post": _direct("executeDirect", "Run at once on the best offer, without choosing."),
        },
        "/sessions": {
            "get": _operation(
                "listSessions",
                "List the caller's sessions, newest first, a page at a time.",
                "sessions",
                {
                    "200": _ok("One page of sessions.", ref("SessionList")),
                    **_errors("400"),
                },
                parameters=_list_parameters(),
                answers_model=True,
            ),
            "post": _direct(
                "executeDirectAtSessions", "Run at once on the best offer (alias of POST /direct)."
            ),
        },
        "/sessions/{uuid}": {
            "parameters": uuid,
            "get": _operation(
                "getSession",
                "Read a session (or offer); with wait, once its phase is no longer phase.",
                "sessions",
                {"200": _ok("The session.", ref("ExecutionSession")), **_errors("400", "404")},
                parameters=_long_poll_parameters(),
                answers_model=True,
            ),
            "post": _operation(
                "updateSession",
                "Accept, reject, cancel or extend a session.",
                "sessions",
                {
                    "200": _ok("The session after the update.", ref("ExecutionSession")),
                    **_errors("404", "409"),
                },
                body="AnyUpdate",
                answers_model=True,
            ),
            "delete": _operation(
                "deleteSession",
                "UWS's DELETE: reject an open offer or cancel a live session; forget a "
                "final one (its record, history and retained MQTT message are deleted "
                "now, not after the retention period); then 303 to the list.",
                "sessions",
                {
                    "303": {
                        "description": "Ended or forgotten; see the list of sessions.",
                        "headers": {"Location": {"$ref": "#/components/headers/Location"}},
                    },
                    **_errors("404", "409"),
                },
            ),
        },
        "/sessions/{uuid}/events": {
            "parameters": uuid,
            "get": _operation(
                "streamSessionEvents",
                "Every transition of the session, past and future, as Server-Sent Events.",
                "sessions",
                {
                    "200": {
                        "description": "An event stream: 'transition' events for the session, "
                        "'component' events for its components, each with JSON data "
                        "{from, to, cause, time[, component]}; it ends after the final phase.",
                        # Each event as its fields (what SSE-aware tools validate).
                        "content": {"text/event-stream": {"schema": SSE_EVENT}},
                    },
                    **_errors("404"),
                },
            ),
        },
        "/sessions/{uuid}/log": {
            "parameters": uuid,
            "get": _operation(
                "getSessionLog",
                "The session's whole record: transitions, messages and the executable's output.",
                "sessions",
                {"200": _ok("The record.", ref("SessionLog")), **_errors("404")},
            ),
        },
        "/callbacks/{uuid}": {
            "parameters": uuid,
            "post": {
                **_operation(
                    "reportToSession",
                    "A worker's signed report that a component of the session reached a phase.",
                    "workers",
                    {
                        "200": _ok("Applied, or already applied (a replay).", ref("Callback")),
                        "401": {"$ref": "#/components/responses/Unauthorized"},
                        **_errors("400", "404", "409"),
                    },
                    body="Report",
                    secured=False,
                ),
                "security": [{"callbackSignature": []}],
            },
        },
        "/events": {
            "get": _operation(
                "followEvents",
                "The event streams as JSON lines (an embedded broker only: with Redis, "
                "`talicada events tail` reads the streams from Redis and this path is absent).",
                "service",
                {
                    "200": {
                        "description": "One JSON object per line: {stream, event}; it ends after "
                        "`count` events, or lists the dead letters with `dead_letters=true`.",
                        "content": {"application/x-ndjson": {"schema": {"type": "string"}}},
                    },
                    # 404 on a broker over Redis, where this path is absent.
                    **_errors("400", "404"),
                },
                parameters=_event_parameters(),
            ),
        },
        "/metrics": _service(
            "getMetrics",
            "Prometheus metrics: requests, offers, callbacks, stream backlogs, dead letters.",
            {
                "200": {
                    "description": "The Prometheus text exposition format.",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                },
                # Only where metrics need the operator role (metrics_access, metrics_port).
                **_errors("401", "403"),
            },
        ),
        "/capabilities": _service(
            "getCapabilities",
            "Describe the dialects, kinds, limits and platforms (remote ones with their "
            "sites' platforms) of this broker; Cache-Control max-age says how long it holds.",
            {"200": _ok("The capabilities.", ref("Capabilities"))},
        ),
        "/availability": _service(
            "getAvailability",
            "Say whether the service is available and since when.",
            {"200": _ok("The availability.", ref("Availability"))},
        ),
        "/healthz": _service(
            "getHealth", "Liveness probe: the process serves HTTP.", {"200": _ok("Alive.", health)}
        ),
        "/readyz": _service(
            "getReadiness",
            "Readiness probe: the state store answers.",
            {"200": _ok("Ready.", health), "503": _ok("The state store does not answer.", health)},
        ),
        "/openapi.json": _service(
            "getOpenApiJson",
            "This document as JSON.",
            {"200": {"description": "The OpenAPI document.", "content": openapi_json}},
        ),
        "/openapi.yaml": _service(
            "getOpenApiYaml",
            "This document as YAML.",
            {"200": {"description": "The OpenAPI document.", "content": openapi_yaml}},
        ),
    }
