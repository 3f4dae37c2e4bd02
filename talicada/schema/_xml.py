"""XML framing: element trees to plain data and back, without DTDs or entities.

Part of :mod:`talicada.schema.codec`; the mapping between elements and data
(attributes and children as keys, wrapped lists of named members, string
scalars) is set out in its docstring, and the names themselves come from
:mod:`talicada.schema._xml_names`.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections import Counter
from typing import Final

from defusedxml.common import DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden
from defusedxml.ElementTree import DefusedXMLParser

from talicada.schema._limits import CodecError, Limits, depth_error, utf8
from talicada.schema._negotiation import CHARSETS
from talicada.schema._xml_names import FALLBACK_ITEM, is_attribute, item_name

_XML_DECLARED_ENCODING: Final = re.compile(
    rb"<\?xml\s[^>]*?\bencoding\s*=\s*[\"']([^\"']*)[\"']", re.IGNORECASE
)
# Characters XML 1.0 cannot carry, even escaped.
_XML_ILLEGAL: Final = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
# Close to the XML Name production, minus colons (we write no namespaces).
_XML_NAME: Final = re.compile(r"[^\W\d][\w.\-]*\Z")


def _local_name(name: str) -> str:
    return name.rpartition("}")[2]


def _xml_shape(element: ET.Element, path: str, parent: str | None) -> object:
    """The value of ``element`` (a child of ``<parent>``): its scalar, or an empty
    container to be filled later."""
    text = (element.text or "").strip()
    children = list(element)
    if not children and not element.attrib:
        return text or None
    if text or any((child.tail or "").strip() for child in children):
        raise CodecError(
            f"XML element {path} mixes text with attributes or child elements, "
            "which is not accepted"
        )
    if not element.attrib and _is_list(element, parent):
        return []
    return {}


def _is_list(element: ET.Element, parent: str | None) -> bool:
    """Whether ``element``'s children are list members: each named for one member
    of a list called like ``element`` (``<offers><execution/>``), or ``<item>``
    (what this broker wrote before it followed the reference's names)."""
    members = {FALLBACK_ITEM, item_name(_local_name(element.tag), parent)}
    return all(_local_name(child.tag) in members for child in element)


def _xml_to_data(root: ET.Element) -> object:
    """Convert an element tree to plain data, iteratively (no recursion on depth)."""
    root_path = "/" + _local_name(root.tag)
    top = _xml_shape(root, root_path, None)
    if top is None:
        return {}  # <request/> is an empty object
    stack: list[tuple[ET.Element, object, str]] = [(root, top, root_path)]
    while stack:
        element, container, path = stack.pop()
        filled: list[tuple[ET.Element, object, str]] = []
        own = _local_name(element.tag)
        if isinstance(container, list):
            for index, child in enumerate(element):
                child_path = f"{path}/{_local_name(child.tag)}[{index + 1}]"
                value = _xml_shape(child, child_path, own)
                container.append(value)
                filled.append((child, value, child_path))
        elif isinstance(container, dict):
            attributes = {_local_name(name): value for name, value in element.attrib.items()}
            if len(attributes) != len(element.attrib):
                raise CodecError(f"XML element {path} has two attributes with the same name")
            container.update(attributes)
            counts = Counter(_local_name(child.tag) for child in element)
            for child in element:
                key = _local_name(child.tag)
                if key in attributes:
                    raise CodecError(
                        f"XML element {path} has both an attribute and a child named {key!r}"
                    )
                child_path = f"{path}/{key}"
                value = _xml_shape(child, child_path, own)
                if counts[key] > 1:
                    container.setdefault(key, []).append(value)
                else:
                    container[key] = value
                filled.append((child, value, child_path))
        stack.extend(entry for entry in filled if isinstance(entry[1], dict | list))
    return top


class _BoundedBuilder(ET.TreeBuilder):
    """A tree builder that stops expat at the first element past the limits.

    Without it expat builds every element of a huge document (100,000 nested
    ones cost over a second of event loop) before the limits are checked.
    """

    def __init__(self, limits: Limits) -> None:
        super().__init__()
        self.limits = limits
        self.elements = 0
        self.depth = 0

    def start(self, tag: str, attrs: dict[str, str]) -> ET.Element:
        self.elements += 1
        self.depth += 1
        # An element holding text is a scalar one level below the deepest
        # container; the exact check on the data follows (enforce_limits).
        if self.depth > self.limits.max_depth + 1:
            raise depth_error(self.limits)
        if self.elements > self.limits.max_items:
            raise CodecError(
                f"the body has more than max_items={self.limits.max_items} XML elements"
            )
        return super().start(tag, attrs)

    def end(self, tag: str) -> ET.Element:
        self.depth -= 1
        return super().end(tag)


def decode_xml(body: bytes, limits: Limits) -> object:
    """Decode an XML document into plain data (see the codec docstring for the mapping)."""
    utf8(body)  # expat would say "invalid token"; say what is wrong instead
    declared = _XML_DECLARED_ENCODING.match(body)
    if declared and declared.group(1).decode("ascii", "replace").lower() not in CHARSETS:
        raise CodecError(
            f"the XML declaration names encoding {declared.group(1).decode('ascii', 'replace')!r}"
            "; the body must be UTF-8"
        )
    try:
        parser = DefusedXMLParser(
            target=_BoundedBuilder(limits),
            forbid_dtd=True,
            forbid_entities=True,
            forbid_external=True,
        )
        parser.feed(body)
        root = parser.close()
    except (DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden):
        raise CodecError("XML entities/DTDs are not accepted") from None
    except ET.ParseError as exc:
        # expat's message already ends with ": line L, column C".
        raise CodecError(f"invalid XML: {exc}") from None
    return _xml_to_data(root)


def _xml_name(name: str) -> str:
    if not _XML_NAME.match(name):
        raise ValueError(f"{name[:40]!r} cannot be written as an XML element name")
    return name


def _xml_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return _XML_ILLEGAL.sub("\ufffd", str(value))


def encode_xml(data: object, root: str) -> bytes:
    """Encode plain data as an XML document whose root element is named ``root``."""
    root_element = ET.Element(_xml_name(root))
    # Children are created when their parent is visited, so document order
    # is kept even though the stack pops in reverse.
    stack: list[tuple[ET.Element, object, str | None]] = [(root_element, data, None)]
    while stack:
        element, value, parent = stack.pop()
        if isinstance(value, dict):
            for key, member in value.items():
                if member is None:
                    continue
                if is_attribute(key, member, element.tag):
                    element.set(_xml_name(key), _xml_text(member))
                else:
                    stack.append((ET.SubElement(element, _xml_name(key)), member, element.tag))
        elif isinstance(value, list):
            # A None member stays as an empty element to keep positions.
            name = item_name(element.tag, parent)
            stack.extend((ET.SubElement(element, name), member, element.tag) for member in value)
        elif value is not None:
            element.text = _xml_text(value)
    body: bytes = ET.tostring(root_element, encoding="utf-8", xml_declaration=True)
    return body
