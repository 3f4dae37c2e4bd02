"""The OpenAPI 3.1 document of the HTTP API (DESIGN §3), generated from the model.

The component schemas come from the msgspec structs in :mod:`talicada.schema.model`,
then are rewritten from the canonical form (short kind names) to the wire form of
the v1.0 dialect (kind URIs from :mod:`talicada.schema.kinds`). The paths are
written here, next to nothing else, and a test keeps them in step with the routes.

Run ``python -m talicada.schema.openapi [--check] [DIR]`` to (re)write, or check,
the copies checked in under ``schema/``.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final, get_args

import msgspec
import yaml

from talicada import __version__
from talicada.events.report import Report
from talicada.schema import model
from talicada.schema.dialects import DEFAULT_KIND
from talicada.schema.kinds import KINDS, Dialect, Family, uri_for
from talicada.schema.messages import MessageItem

#: The media types every body may be written in (DESIGN §3).
MEDIA_TYPES: Final = ("application/json", "application/yaml", "application/xml")
#: Where ``python -m talicada.schema.openapi`` writes by default: ``<repo>/schema``.
DEFAULT_DIRECTORY: Final = Path(__file__).resolve().parents[2] / "schema"
FILE_NAMES: Final = ("openapi.json", "openapi.yaml")

_REF: Final = "#/components/schemas/{name}"
_DIALECT: Final = Dialect.V1_0

_DESCRIPTION: Final = """\
Talicada brokers the execution of astronomy software on science platforms. A client \
describes what it wants to run and the compute, storage and data it needs; the broker \
answers with an offer set, and accepting one offer turns it into a session whose \
lifecycle the client can follow and steer.

Requests are accepted in three dialects of the execution-broker model: seed-2025, v1.0 \
and v1.0.6. They differ in how a component names its kind (`type` or `kind`, and the \
form of the kind URI) and where its identity lives; every answer is written in the \
dialect of the request it belongs to. This document shows the v1.0 spelling only: a \
`kind` discriminator holding a v1.0 kind URI, and identity under `meta`. Bodies may be \
JSON, YAML or XML, chosen by `Content-Type` and `Accept` (JSON when nothing is asked).
"""


# -- component schemas ------------------------------------------------------------------


def _kind_uris() -> dict[str, str]:
    """Each internal kind name (and update tag) → how the v1.0 wire spells it."""
    uris = {
        name: uri_for(family, name, _DIALECT) for family, names in KINDS.items() for name in names
    }
    # Update kinds are URIs already and spelled the same in every dialect.
    for update in get_args(model.AnyUpdate):
        tag = update.__struct_config__.tag
        uris[str(tag)] = str(tag)
    return uris


def _wire_kinds(node: Any, uris: dict[str, str]) -> Any:
    """A copy of schema ``node`` with every ``kind`` tag spelled as a v1.0 URI.

    Raises ValueError on a tag the registry does not know, so a struct added to the
    model without a registry entry cannot leak its short name into the contract.
    """

    def uri(tag: object) -> str:
        if not isinstance(tag, str) or tag not in uris:
            raise ValueError(f"kind tag {tag!r} is not in talicada.schema.kinds.KINDS")
        return uris[tag]

    if isinstance(node, list):
        return [_wire_kinds(item, uris) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _wire_kinds(value, uris) for key, value in node.items()}
    discriminator = out.get("discriminator")
    if isinstance(discriminator, dict) and discriminator.get("propertyName") == "kind":
        mapping = discriminator.get("mapping", {})
        discriminator["mapping"] = {uri(tag): ref for tag, ref in mapping.items()}
    kind = out.get("properties", {}).get("kind") if out.get("type") == "object" else None
    # Only tag fields carry a fixed value; free-text kinds (MessageItem, Connector) don't.
    if isinstance(kind, dict) and ("enum" in kind or "const" in kind):
        values = kind.get("enum", [kind.get("const")])
        spelled = [uri(value) for value in values]
        out["properties"]["kind"] = (
            {"const": spelled[0]} if len(spelled) == 1 else {"enum": spelled}
        )
    if isinstance(out.get("description"), str):
        # Docstrings are reStructuredText; OpenAPI descriptions are CommonMark.
        out["description"] = out["description"].replace("``", "`")
    return out


def _default_kind_optional(schemas: dict[str, Any]) -> None:
    """Make ``kind`` optional where the dialect layer fills it in.

    Families with a single kind (compute, storage, volume) may leave it out on
    input; the broker always writes it on output.
    """
    for name, schema in schemas.items():
        struct = getattr(model, name, None)
        config = getattr(struct, "__struct_config__", None)
        if config is not None and config.tag in DEFAULT_KIND.values():
            schema["required"] = [field for field in schema["required"] if field != "kind"]


def _session_kind(schemas: dict[str, Any]) -> None:
    """Give ExecutionSession the ``kind`` the renderer writes (the struct has none)."""
    session = schemas["ExecutionSession"]
    kind = {"const": uri_for(Family.SESSION, "execution-session", _DIALECT)}
    session["properties"] = {"kind": kind, **session["properties"]}


def component_schemas() -> dict[str, Any]:
    """Every component schema, in the v1.0 wire form, sorted by name."""
    (_, _, _, update, _, _), generated = msgspec.json.schema_components(
        [
            model.ExecutionRequest,
            model.OfferSet,
            model.ExecutionSession,
            model.AnyUpdate,
            MessageItem,
            Report,
        ],
        ref_template=_REF,
    )
    generated["AnyUpdate"] = {
        "title": "AnyUpdate",
        "description": "A change to a session: accept, reject or cancel it, or extend it.",
        **update,
    }
    schemas: dict[str, Any] = _wire_kinds(generated, _kind_uris())
    _default_kind_optional(schemas)
    _session_kind(schemas)
    schemas.update(_service_schemas())
    # Sorted so a new struct moves nothing else in the checked-in copy.
    return dict(sorted(schemas.items()))


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF.format(name=name)}


def _array(items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": items}


def _strings() -> dict[str, Any]:
    return _array({"type": "string"})


def _service_schemas() -> dict[str, Any]:
    """Schemas of the answers that are not part of the model (errors, lists, probes)."""
    return {
        "ErrorResponse": {
            "title": "ErrorResponse",
            "description": "Why a request failed: one message per problem, each naming its path.",
            "type": "object",
            "properties": {"messages": _array(_ref("MessageItem"))},
            "required": ["messages"],
        },
        "SessionLog": {
            "title": "SessionLog",
            "description": "A session's record: the session, every transition, the output.",
            "type": "object",
            "properties": {
                "session": _ref("ExecutionSession"),
                "history": _array(
                    {
                        "type": "object",
                        "properties": {
                            "time": {"type": "string", "format": "date-time"},
                            "from": {"type": "string"},
                            "to": {"type": "string"},
                            "cause": {"type": "string"},
                            "component": {"type": "string", "format": "uuid"},
                        },
                        "required": ["time", "from", "to", "cause"],
                    }
                ),
                "output": {"type": "object", "additionalProperties": {"type": "string"}},
            },
            "required": ["session", "history", "output"],
        },
        "Callback": {
            "title": "Callback",
            "description": "What the broker did with a report: applied, or already applied.",
            "type": "object",
            "properties": {"status": {"type": "string", "enum": ["ok", "duplicate"]}},
            "required": ["status"],
        },
        "SessionList": {
            "title": "SessionList",
            "description": "One page of the caller's sessions, newest first.",
            "type": "object",
            "properties": {
                "sessions": _array(_ref("ExecutionSession")),
                "cursor": {"type": "string", "description": "Pass as `cursor` for the next page."},
                "next": {"type": "string", "description": "The URL of the next page."},
            },
            "required": ["sessions"],
        },
        "Capabilities": {
            "title": "Capabilities",
            "description": "What this broker accepts and the platforms it makes offers on.",
            "type": "object",
            "properties": {
                "service": {"type": "string"},
                "version": {"type": "string"},
                "dialects": _array({"enum": [dialect.value for dialect in Dialect]}),
                "kinds": {
                    "type": "object",
                    "description": "Kind URIs (v1.0 spelling) by family.",
                    "additionalProperties": _strings(),
                },
                "platforms": _array(
                    {
                        "type": "object",
                        "properties": {
                            "name": {"type": "string"},
                            "launcher": {"type": "string"},
                            "executables": _strings(),
                            "data": _strings(),
                            "data_schemes": _strings(),
                            "cores": {"type": "integer"},
                            "memory": {"type": "integer", "description": "GiB"},
                            "max_cores": {"type": "integer"},
                            "max_memory": {"type": "integer", "description": "GiB"},
                        },
                    }
                ),
                "offers": {
                    "type": "object",
                    "properties": {
                        "max": {"type": "integer"},
                        "ttl": {"type": "string", "description": "ISO 8601 duration"},
                    },
                },
                "endpoints": _strings(),
            },
        },
        "Availability": {
            "title": "Availability",
            "description": "VOSI-style availability of the service.",
            "type": "object",
            "properties": {
                "available": {"type": "boolean"},
                "upSince": {"type": "string", "format": "date-time"},
                "note": {"type": "string"},
            },
            "required": ["available"],
        },
        "Health": {
            "title": "Health",
            "description": "The answer of a probe.",
            "type": "object",
            "properties": {"status": {"enum": ["ok", "unavailable"]}},
            "required": ["status"],
        },
    }


# -- paths -------------------------------------------------------------------------------


def _content(schema: dict[str, Any]) -> dict[str, Any]:
    return {media: {"schema": schema} for media in MEDIA_TYPES}


def _ok(description: str, schema: dict[str, Any], *, location: bool = False) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description}
    if location:
        response["headers"] = {"Location": {"$ref": "#/components/headers/Location"}}
    response["content"] = _content(schema)
    return response


def _errors(*statuses: str) -> dict[str, Any]:
    return {status: {"$ref": f"#/components/responses/{_ERRORS[status][0]}"} for status in statuses}


_ERRORS: Final = {
    "400": ("BadRequest", "The request is invalid; the messages name each bad field."),
    "401": ("Unauthorized", "A valid bearer token is required."),
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
) -> dict[str, Any]:
    operation: dict[str, Any] = {"operationId": operation_id, "summary": summary, "tags": [tag]}
    if parameters:
        operation["parameters"] = parameters
    if body is not None:
        operation["requestBody"] = {"required": True, "content": _content(_ref(body))}
    # Content negotiation can refuse any request; only those with a body can be malformed.
    statuses = ["400", "406", "413", "415"] if body is not None else ["406"]
    if secured:
        statuses.append("401")
    operation["responses"] = dict(sorted({**responses, **_errors(*statuses)}.items()))
    if secured:
        operation["security"] = [{"bearer": []}]
    return operation


def _create_offerset(operation_id: str, summary: str) -> dict[str, Any]:
    return _operation(
        operation_id,
        summary,
        "offers",
        {
            "200": _ok(
                "The offer set: YES with offers, or NO saying why.", _ref("OfferSet"), location=True
            ),
            "303": _see_other(),
        },
        body="ExecutionRequest",
    )


def _direct(operation_id: str, summary: str) -> dict[str, Any]:
    refused = {"allOf": [_ref("OfferSet"), {"properties": {"result": {"const": "NO"}}}]}
    return _operation(
        operation_id,
        summary,
        "sessions",
        {
            "200": _ok(
                "The accepted session, or the offer set (result NO) when nothing can be offered.",
                {"oneOf": [_ref("ExecutionSession"), refused]},
                location=True,
            ),
            "303": _see_other(),
        },
        body="ExecutionRequest",
    )


def _list_parameters() -> list[dict[str, Any]]:
    return [
        {
            "name": "phase",
            "in": "query",
            "description": "Only sessions in these phases (repeat, or separate by commas).",
            "schema": _array(msgspec.json.schema(model.SessionPhase)),
            "style": "form",
            "explode": True,
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


def _long_poll_parameters() -> list[dict[str, Any]]:
    return [
        {
            "name": "wait",
            "in": "query",
            "description": "Seconds (0–60) to wait while the phase equals `phase` (UWS style).",
            "schema": {"type": "number", "minimum": 0, "maximum": 60},
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


def _paths() -> dict[str, Any]:
    uuid = [{"$ref": "#/components/parameters/uuid"}]
    health = _ref("Health")
    openapi_json = {"application/json": {"schema": {"type": "object"}}}
    openapi_yaml = {"application/yaml": {"schema": {"type": "string"}}}
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
                {"200": _ok("The offer set.", _ref("OfferSet")), **_errors("404")},
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
                    "200": _ok("One page of sessions.", _ref("SessionList")),
                    **_errors("400"),
                },
                parameters=_list_parameters(),
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
                {"200": _ok("The session.", _ref("ExecutionSession")), **_errors("400", "404")},
                parameters=_long_poll_parameters(),
            ),
            "post": _operation(
                "updateSession",
                "Accept, reject, cancel or extend a session.",
                "sessions",
                {
                    "200": _ok("The session after the update.", _ref("ExecutionSession")),
                    **_errors("404", "409"),
                },
                body="AnyUpdate",
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
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
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
                {"200": _ok("The record.", _ref("SessionLog")), **_errors("404")},
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
                        "200": _ok("Applied, or already applied (a replay).", _ref("Callback")),
                        "401": {"$ref": "#/components/responses/Unauthorized"},
                        **_errors("400", "404", "409"),
                    },
                    body="Report",
                    secured=False,
                ),
                "security": [{"callbackSignature": []}],
            },
        },
        "/metrics": _service(
            "getMetrics",
            "Prometheus metrics: requests, offers, callbacks, stream backlogs, dead letters.",
            {
                "200": {
                    "description": "The Prometheus text exposition format.",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            },
        ),
        "/capabilities": _service(
            "getCapabilities",
            "Describe the dialects, kinds and platforms this broker supports.",
            {"200": _ok("The capabilities.", _ref("Capabilities"))},
        ),
        "/availability": _service(
            "getAvailability",
            "Say whether the service is available and since when.",
            {"200": _ok("The availability.", _ref("Availability"))},
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


def _components() -> dict[str, Any]:
    return {
        "schemas": component_schemas(),
        "parameters": {
            "uuid": {
                "name": "uuid",
                "in": "path",
                "required": True,
                "description": "The uuid the broker gave the offer set or session.",
                "schema": {"type": "string", "format": "uuid"},
            },
        },
        "headers": {
            "Location": {
                "description": "The URL of the offer set or session.",
                "schema": {"type": "string", "format": "uri"},
            },
        },
        "responses": {
            name: {"description": description, "content": _content(_ref("ErrorResponse"))}
            for name, description in _ERRORS.values()
        },
        "securitySchemes": {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "A token from the broker's token file (not checked in embedded "
                "mode, where every caller is anonymous).",
            },
            "callbackSignature": {
                "type": "apiKey",
                "in": "header",
                "name": "X-Talicada-Signature",
                "description": "Workers sign each report: 'sha256=' and the HMAC-SHA256, with "
                "the deployment's callback secret, of the X-Talicada-Timestamp value, a dot and "
                "the body. Reports more than 5 minutes from the broker's clock are refused.",
            },
        },
    }


# -- the document ------------------------------------------------------------------------


def build_document() -> dict[str, Any]:
    """The OpenAPI 3.1.0 document of the HTTP API, in the v1.0 wire spelling."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Talicada execution broker",
            "version": __version__,
            "description": _DESCRIPTION,
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "tags": [
            {"name": "offers", "description": "Execution requests and the offers they get."},
            {"name": "sessions", "description": "Accepted offers and their lifecycle."},
            {"name": "service", "description": "Service description, probes and this document."},
        ],
        "paths": _paths(),
        "components": _components(),
    }


@functools.cache
def document_bytes() -> tuple[bytes, bytes]:
    """The document encoded once: (indented JSON, YAML), each ending in a newline."""
    text = json.dumps(build_document(), indent=2, ensure_ascii=False) + "\n"
    # YAML from the parsed JSON: both files then say exactly the same thing, and
    # no object is shared, which safe_dump would write as an anchor and alias.
    tree = json.loads(text)
    yaml_text = yaml.safe_dump(tree, sort_keys=False, allow_unicode=True)
    return text.encode("utf-8"), yaml_text.encode("utf-8")


def write(directory: Path) -> list[Path]:
    """Write ``openapi.json`` and ``openapi.yaml`` into ``directory``; their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, content in zip(FILE_NAMES, document_bytes(), strict=True):
        path = directory / name
        path.write_bytes(content)
        written.append(path)
    return written


def stale(directory: Path) -> list[Path]:
    """The files in ``directory`` that are missing or differ from the model."""
    return [
        directory / name
        for name, content in zip(FILE_NAMES, document_bytes(), strict=True)
        if not (directory / name).is_file() or (directory / name).read_bytes() != content
    ]


def _print(paths: Iterable[Path], prefix: str) -> None:
    for path in paths:
        print(f"{prefix} {path}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Write the document into DIR, or with ``--check`` exit 1 if it is stale."""
    parser = argparse.ArgumentParser(
        prog="python -m talicada.schema.openapi",
        description="Generate the OpenAPI document of the Talicada HTTP API from the model.",
    )
    parser.add_argument(
        "--check", action="store_true", help="only check that the files are up to date"
    )
    parser.add_argument(
        "directory",
        nargs="?",
        type=Path,
        default=DEFAULT_DIRECTORY,
        metavar="DIR",
        help=f"where openapi.json and openapi.yaml live (default: {DEFAULT_DIRECTORY})",
    )
    args = parser.parse_args(argv)
    if args.check:
        outdated = stale(args.directory)
        if outdated:
            _print(outdated, "stale:")
            where = "" if args.directory == DEFAULT_DIRECTORY else f" {args.directory}"
            print(f"run `python -m talicada.schema.openapi{where}` to regenerate", file=sys.stderr)
            return 1
        return 0
    _print(write(args.directory), "wrote")
    return 0


if __name__ == "__main__":
    sys.exit(main())
