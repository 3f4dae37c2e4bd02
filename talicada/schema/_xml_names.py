"""How plain data is named in XML: which keys are attributes, what list members are called.

Part of :mod:`talicada.schema.codec`. The community schema gives the XML form of
the execution-broker model through OpenAPI ``xml`` hints: a component's ``kind``
(and the ``kind`` of costs, metrics, options and updates) is an attribute, and a
list's members are elements named for one member (``<offers>`` holds
``<execution>``, ``<messages>`` holds ``<message>``). This module is the one
place those facts live; the encoder, the decoder and the OpenAPI document
(``talicada/schema/_openapi_schemas.py``) all read them from here, so they agree
(except where OpenAPI has no way to say it: the members of the ``kinds`` map
in /capabilities). tests/test_reference_schema.py checks them against the
reference's own hints.

Every list is written wrapped: one element named by its key, holding one
element per member (the reference wraps ``offers`` and names the other lists
the same way).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

#: Keys written as XML attributes when their value is a scalar. The reference
#: marks ``kind`` ``attribute: true`` wherever it is a discriminator.
ATTRIBUTES: Final = frozenset({"kind"})

#: Elements whose ``kind`` stays an element: the reference gives the ``kind`` of
#: a message or a connector (free text, not a discriminator) no attribute hint.
ELEMENT_KIND: Final = frozenset({"message", "connector"})

#: The element a schema of the OpenAPI document is written as, where that is
#: always the same (a component inside a document is named by its key instead).
SCHEMA_ELEMENTS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "ExecutionRequest": "offers-request",
        "OfferSet": "offers-response",
        "ExecutionSession": "execution",
        "RefusedExecution": "execution",
        "MessageItem": "message",
        "Connector": "connector",
        "ErrorResponse": "error",
        "SessionList": "sessions",
        "SessionLog": "log",
        "Capabilities": "capabilities",
    }
)

#: The name of each member of a list, by the list's key, where English
#: singulars (:func:`singular`) would not give it.
ITEM_NAMES: Final[Mapping[str, str]] = MappingProxyType(
    {
        # The reference's names.
        "offers": "execution",
        # A page of sessions holds what GET /sessions/{uuid} answers alone.
        "sessions": "execution",
        # Mass nouns: the reference names these lists and not their members, and
        # OpenAPI then names each member like its list.
        "storage": "storage",
        "data": "data",
        # Lists whose names are not plurals.
        "command": "argument",
        "history": "transition",
    }
)

#: Lists held in these elements name their members so, whatever the list is
#: called: /capabilities lists kind URIs by family (``<kinds><executable><kind>``).
ITEM_NAMES_WITHIN: Final[Mapping[str, str]] = MappingProxyType({"kinds": "kind"})

#: What a list member is called when its list's name is no known plural (a
#: list under a key the client chose, such as a port's protocol).
FALLBACK_ITEM: Final = "item"

# Plural endings and their singulars, longest first; a bare trailing "s" is the last resort.
_ENDINGS: Final = (("ies", "y"), ("sses", "ss"), ("shes", "sh"), ("ches", "ch"), ("xes", "x"))
_NOT_PLURAL: Final = ("ss", "us", "is")


def singular(name: str) -> str | None:
    """The English singular of ``name``, or None when it does not look plural."""
    for plural, single in _ENDINGS:
        if name.endswith(plural) and len(name) > len(plural):
            return name[: -len(plural)] + single
    if name.endswith("s") and not name.endswith(_NOT_PLURAL) and len(name) > 1:
        return name[:-1]
    return None


@functools.lru_cache(maxsize=1024)
def item_name(list_name: str, parent: str | None = None) -> str:
    """The element name of each member of the list written as ``<list_name>``
    inside ``<parent>``."""
    return (
        ITEM_NAMES_WITHIN.get(parent or "")
        or ITEM_NAMES.get(list_name)
        or singular(list_name)
        or FALLBACK_ITEM
    )


def attribute_name(key: str, element: str) -> bool:
    """Whether a scalar ``key`` of the dict written as ``<element>`` is an XML attribute."""
    return key in ATTRIBUTES and element not in ELEMENT_KIND


def is_attribute(key: str, value: object, element: str) -> bool:
    """Whether ``key: value`` of the dict written as ``<element>`` is an XML attribute."""
    return attribute_name(key, element) and isinstance(value, str | int | float | bool)
