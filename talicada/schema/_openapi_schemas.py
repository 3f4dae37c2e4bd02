"""The component schemas of the OpenAPI document, in the v1.0 wire form.

Part of :mod:`talicada.schema.openapi`: msgspec generates the schemas of the model's
structs, which are then rewritten from the canonical form (short kind names) to the
v1.0 dialect (kind URIs); the answers that are not part of the model are written here.
"""

from __future__ import annotations

from typing import Any, Final, get_args, get_type_hints

import msgspec

from talicada.events.report import Report
from talicada.schema import model
from talicada.schema._xml_names import SCHEMA_ELEMENTS, attribute_name, item_name
from talicada.schema.dialects import DEFAULT_KIND
from talicada.schema.kinds import KINDS, Dialect, Family, uri_for
from talicada.schema.messages import MessageItem

_REF: Final = "#/components/schemas/{name}"
_DIALECT: Final = Dialect.V1_0


def _kind_uris() -> dict[str, str]:
    """Each internal kind name (and update tag) → how the v1.0 wire spells it."""
    uris = {
        name: uri_for(family, name, _DIALECT) for family, names in KINDS.items() for name in names
    }
    # Update kinds are URIs already and spelled the same in every dialect.
    for update in get_args(model.AnyUpdate):
        tag = update.__struct_config__.tag
        uris[str(tag)] = str(tag)
    # So are the option kinds that answer them.
    for option in get_args(get_type_hints(model.Option)["kind"]):
        uris[option] = option
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


def _xml_hints(node: Any, key: str | None, element: str | None) -> None:
    """Add the XML hints of ``node`` (the value of ``key`` in ``element``) in place.

    The names come from talicada/schema/_xml_names.py, which the codec writes by:
    ``kind`` an attribute, every list wrapped and its members named.
    """
    if isinstance(node, list):
        for member in node:
            _xml_hints(member, key, element)
        return
    if not isinstance(node, dict):
        return
    for combinator in ("anyOf", "oneOf", "allOf"):
        _xml_hints(node.get(combinator), key, element)
    if node.get("type") == "array" and key is not None and isinstance(node.get("items"), dict):
        node["xml"] = {"wrapped": True}
        member = item_name(key)
        node["items"] = {**node["items"], "xml": {"name": member}}
        _xml_hints(node["items"], member, member)
    for name, value in node.get("properties", {}).items():
        if isinstance(value, dict) and element is not None and attribute_name(name, element):
            value["xml"] = {"attribute": True}
        # A nested component is written as an element named by its key.
        _xml_hints(value, name, name)


def _xml_names(schemas: dict[str, Any]) -> None:
    """Give each schema the XML names the codec writes it with."""
    for name, schema in schemas.items():
        element = SCHEMA_ELEMENTS.get(name)
        if element is not None:
            schema["xml"] = {"name": element}
        # A schema reached by reference is written under whatever key refers to it;
        # its own name stands in, which keeps its kind an attribute (only the
        # message and the connector, named above, keep kind an element).
        _xml_hints(schema, None, element or name)


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
    _xml_names(schemas)
    # Sorted so a new struct moves nothing else in the checked-in copy.
    return dict(sorted(schemas.items()))


def ref(name: str) -> dict[str, str]:
    """A reference to the component schema ``name``."""
    return {"$ref": _REF.format(name=name)}


def array(items: dict[str, Any]) -> dict[str, Any]:
    """The schema of a list of ``items``."""
    return {"type": "array", "items": items}


def strings() -> dict[str, Any]:
    """The schema of a list of strings."""
    return array({"type": "string"})


def _service_schemas() -> dict[str, Any]:
    """Schemas of the answers that are not part of the model (errors, lists, probes)."""
    return {
        "ErrorResponse": {
            "title": "ErrorResponse",
            "description": "Why a request failed: one message per problem, each naming its path.",
            "type": "object",
            "properties": {"messages": array(ref("MessageItem"))},
            "required": ["messages"],
        },
        "Dialect": {
            "title": "Dialect",
            "description": "A spelling of the execution-broker model (docs/ARCHITECTURE.md §3).",
            "type": "string",
            "enum": [dialect.value for dialect in Dialect],
        },
        "RefusedExecution": {
            "title": "RefusedExecution",
            "description": "A direct execution that will not run: REJECTED, with messages "
            "saying why. `meta.url` is the offer set that answered NO, when one was made.",
            "type": "object",
            "properties": {
                "kind": {"type": "string"},
                "phase": {"type": "string", "enum": ["REJECTED"]},
                "meta": ref("Metadata"),
                "messages": array(ref("MessageItem")),
                "ttl": {
                    "type": "string",
                    "description": "ISO 8601 duration: how long the refusal holds (no "
                    "platform can run the request until then); as `Cache-Control: max-age`.",
                },
            },
            "required": ["messages"],
        },
        "SessionLog": {
            "title": "SessionLog",
            "description": "A session's record: the session, every transition, the output.",
            "type": "object",
            "properties": {
                "session": ref("ExecutionSession"),
                "history": array(
                    {
                        "type": "object",
                        "properties": {
                            "time": {"type": "string", "format": "date-time"},
                            "from": {"type": "string"},
                            "to": {"type": "string"},
                            "cause": {"type": "string"},
                            "component": {"type": "string", "format": "uuid"},
                            "family": {
                                "type": "string",
                                "description": "The component's family (executable, data …).",
                            },
                            "name": {"type": "string", "description": "The component's name."},
                        },
                        "required": ["time", "from", "to", "cause"],
                    }
                ),
                "messages": array(
                    {
                        "description": "A message of the session or a component; `about` "
                        "says whose (`session`, or the component's family and name).",
                        "allOf": [
                            ref("MessageItem"),
                            {
                                "type": "object",
                                "properties": {
                                    "about": {"type": "string"},
                                    "component": {"type": "string", "format": "uuid"},
                                },
                            },
                        ],
                    }
                ),
                "output": {"type": "object", "additionalProperties": {"type": "string"}},
                "platform": {
                    "type": "object",
                    "additionalProperties": {"type": "string"},
                    "description": "What the platform said besides the output, by source.",
                },
            },
            "required": ["session", "history", "messages", "output"],
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
                "sessions": array(ref("ExecutionSession")),
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
                "dialects": array(ref("Dialect")),
                "kinds": {
                    "type": "object",
                    "description": "Kind URIs (v1.0 spelling) by family.",
                    "additionalProperties": strings(),
                },
                "limits": {
                    "type": "object",
                    "description": "Limits on every request to this broker.",
                    "properties": {
                        "body_bytes": {"type": "integer"},
                        "long_poll": {"type": "string", "description": "ISO 8601 duration"},
                    },
                },
                "platforms": array(
                    {
                        "type": "object",
                        "description": (
                            "A platform this broker makes offers on. A remote one (another "
                            "broker it aggregates) has remote: true and lists its site's "
                            "platforms, or reachable: false when they are not known now."
                        ),
                        "properties": {
                            "name": {"type": "string"},
                            "launcher": {"type": "string"},
                            "executables": strings(),
                            "data": strings(),
                            "data_schemes": strings(),
                            "data_hosts": strings(),
                            "cores": {"type": "integer"},
                            "memory": {"type": "integer", "description": "GiB"},
                            "max_cores": {"type": "integer"},
                            "max_memory": {"type": "integer", "description": "GiB"},
                            "max_duration": {
                                "type": "string",
                                "description": "ISO 8601 duration",
                            },
                            "core_hour_price": {"type": "number"},
                            "remote": {"type": "boolean"},
                            "reachable": {"type": "boolean"},
                            "platforms": {
                                "type": "array",
                                "description": "The site's own platforms (same shape).",
                                "items": {"type": "object"},
                            },
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
                "ttl": {
                    "type": "string",
                    "description": (
                        "ISO 8601 duration this description stays true "
                        "(also Cache-Control: max-age)"
                    ),
                },
                "endpoints": strings(),
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
            "properties": {
                "status": {"enum": ["ok", "unavailable"]},
                "workers": {
                    "description": (
                        "/readyz only: the health record each worker publishes every 5 s "
                        "(talicada/workers/health.py); alive is false once a record is "
                        "15 s old."
                    ),
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "worker": {"type": "string"},
                            "stream": {"type": "string"},
                            "consumer": {"type": "string"},
                            "host": {"type": "string"},
                            "pid": {"type": "integer"},
                            "started": {"type": "number"},
                            "seen": {"type": "number"},
                            "processed": {"type": "integer"},
                            "retried": {"type": "integer"},
                            "dead_lettered": {"type": "integer"},
                            "overdue": {"type": "integer"},
                            "in_flight": {"type": "integer"},
                            "background_failed": {"type": "integer"},
                            "last_failure": {"type": "string"},
                            "alive": {"type": "boolean"},
                        },
                    },
                },
            },
            "required": ["status"],
        },
    }
