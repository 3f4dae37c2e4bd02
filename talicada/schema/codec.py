"""Framing: request bodies to plain data and plain data to response bodies.

This module turns bytes into plain Python data (``dict``, ``list``, ``str``,
``int``, ``float``, ``bool``, ``None``) and back, in JSON, YAML or XML, and
implements HTTP content negotiation for those three media types.  It knows
nothing about the data model: the model validates and converts what comes out
of :func:`decode`, and hands plain data (or anything msgspec can encode) to
:func:`encode`.  It does not import aiohttp; the web layer maps
:class:`UnsupportedMediaType` to 415, :class:`NotAcceptable` to 406 and any
other :class:`CodecError` to 400.

Every decoded body must be an object (a JSON object, a YAML mapping, an XML
root element with children) and must fit the :class:`Limits`.

JSON
    Decoded with msgspec.  Duplicate keys follow msgspec (the last one wins).

YAML
    One document only, parsed with PyYAML's safe loader (libyaml when
    available) restricted to the YAML 1.2 core schema:

    * aliases are refused, so a "billion laughs" document costs nothing;
    * booleans are only ``true``/``True``/``TRUE``/``false``/``False``/``FALSE``
      (``yes``, ``no``, ``on``, ``off``, ``y``, ``n`` stay strings);
    * no timestamps: ISO 8601 instants stay strings for the model to parse;
    * integers are decimal, ``0o`` octal or ``0x`` hexadecimal; decimal
      numbers with leading zeros (``007``, ``0000``) stay strings because
      YAML 1.1 and 1.2 disagree on what they mean; no sexagesimal numbers and
      no ``_`` digit separators;
    * only the core tags (str, int, float, bool, null, seq, map) are
      accepted, so ``!!binary``, ``!!set``, ``!!timestamp`` and local tags are
      refused;
    * mapping keys must be strings and must be unique.

XML
    Parsed with defusedxml; DTDs and entity declarations are refused.  The
    mapping from elements to data is:

    * the root element's name is ignored; the root must become an object
      (an empty root element is an empty object);
    * an element with attributes or child elements becomes a dict: each
      attribute and each child element is a key;
    * repeated sibling elements with the same name become a list;
    * an element without attributes whose children are all named ``item``
      becomes a list, so a one-element list is ``<x><item>v</item></x>``;
    * an element with only text becomes that text, whitespace-stripped;
    * an element with no text, no attributes and no children becomes
      ``None`` (so empty strings, lists and objects all read back as ``None``);
    * text next to attributes or child elements (mixed content) is refused;
    * namespaces are dropped from element and attribute names
      (``{urn:x}tag`` becomes ``tag``);
    * every scalar is a string; the model converts it with lax typing.

    :func:`encode` writes the same convention: the root element is named by
    its ``root`` argument, a dict key becomes a child element, a list becomes
    one ``<item>`` per member, ``None`` values of dict keys are omitted,
    booleans are ``true``/``false``.  A dict whose only key is ``item`` reads
    back as a list.
"""

from __future__ import annotations

import enum
import re
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Final, Protocol

import msgspec
import yaml
from defusedxml.common import DTDForbidden, EntitiesForbidden, ExternalReferenceForbidden
from defusedxml.ElementTree import fromstring as defused_fromstring
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode

__all__ = [
    "CodecError",
    "Limits",
    "MediaType",
    "NotAcceptable",
    "UnsupportedMediaType",
    "content_type_header",
    "decode",
    "encode",
    "media_type_for_content_type",
    "negotiate",
]


class MediaType(enum.Enum):
    """The media types Talicada reads and writes."""

    JSON = "application/json"
    YAML = "application/yaml"
    XML = "application/xml"


class CodecError(ValueError):
    """A body that cannot be decoded; the message says why (and where, when known)."""


class UnsupportedMediaType(CodecError):
    """A Content-Type (or charset) that Talicada cannot read; maps to HTTP 415."""


class NotAcceptable(CodecError):
    """No media type acceptable to the client can be produced; maps to HTTP 406."""


@dataclass(frozen=True)
class Limits:
    """Bounds on a decoded body, so one request cannot cost unbounded memory or CPU.

    ``max_items`` counts every container and every scalar value (not keys);
    ``max_string`` applies to keys and string values, in characters;
    ``max_bytes`` is checked before parsing, so the other limits never
    walk more than that much data.
    """

    max_depth: int = 32
    max_items: int = 10_000
    max_string: int = 65_536
    max_bytes: int = 1_048_576

    def __post_init__(self) -> None:
        """Refuse limits that would reject every body."""
        for name in ("max_depth", "max_items", "max_string", "max_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"Limits.{name} must be at least 1")


# --------------------------------------------------------------------------- media types

# Aliases seen in the wild: YAML had no registered type until RFC 9512, so
# clients still send x-yaml and text/yaml; text/xml is the older XML type.
_ALIASES: Final[dict[str, MediaType]] = {
    "application/json": MediaType.JSON,
    "application/yaml": MediaType.YAML,
    "application/x-yaml": MediaType.YAML,
    "text/yaml": MediaType.YAML,
    "text/x-yaml": MediaType.YAML,
    "application/xml": MediaType.XML,
    "text/xml": MediaType.XML,
}

# Structured syntax suffixes (RFC 6838): application/vnd.foo+json has JSON
# framing, which is all this layer cares about.  Only used for reading: we
# never claim to produce a vendor type in negotiation.
_SUFFIXES: Final[dict[str, MediaType]] = {
    "+json": MediaType.JSON,
    "+yaml": MediaType.YAML,
    "+xml": MediaType.XML,
}

_CHARSETS: Final = frozenset({"utf-8", "utf8", "us-ascii"})
_SUPPORTED: Final = ", ".join(m.value for m in MediaType)
_TOKEN: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_QVALUE: Final = re.compile(r"0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?")
# Headers are echoed in error messages; keep a hostile one from bloating them.
_ECHO_MAX: Final = 200


def _echo(text: str) -> str:
    return repr(text if len(text) <= _ECHO_MAX else text[:_ECHO_MAX] + "...")


def _split_unquoted(text: str, separator: str) -> list[str]:
    """Split on ``separator`` outside double-quoted strings (parameter values may quote)."""
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return parts


def media_type_for_content_type(header: str | None) -> MediaType:
    """Map a Content-Type header to the media type to decode the body with.

    A missing or empty header means JSON.  Parameters are ignored except
    ``charset``, which must be UTF-8 (or its subset US-ASCII).  Raises
    :class:`UnsupportedMediaType` for anything else.
    """
    if header is None or not header.strip():
        return MediaType.JSON
    first, *params = _split_unquoted(header, ";")
    essence = first.strip().lower()
    media = _ALIASES.get(essence)
    if media is None and essence.startswith("application/"):
        suffix = essence[essence.rfind("+") :] if "+" in essence else ""
        media = _SUFFIXES.get(suffix)
    if media is None:
        raise UnsupportedMediaType(
            f"unsupported media type {_echo(essence)}; supported: {_SUPPORTED} "
            "(also application/x-yaml, text/yaml, text/x-yaml, text/xml)"
        )
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            charset = value.strip().strip('"').lower()
            if charset not in _CHARSETS:
                raise UnsupportedMediaType(
                    f"unsupported charset {_echo(charset)}; send the body as UTF-8"
                )
    return media


@dataclass(frozen=True)
class _Range:
    """One media range of an Accept header."""

    type: str
    subtype: str
    q: float
    position: int

    def specificity(self, media_type: str) -> int:
        """How specifically this range names ``media_type``: 3 exact, 2 type/*, 1 */*, 0 not."""
        type_, _, subtype = media_type.partition("/")
        if self.type == "*":
            return 1
        if self.type != type_:
            return 0
        if self.subtype == "*":
            return 2
        return 3 if self.subtype == subtype else 0


def _parse_accept(accept: str) -> list[_Range]:
    ranges: list[_Range] = []
    for position, element in enumerate(_split_unquoted(accept, ",")):
        first, *params = _split_unquoted(element, ";")
        type_, slash, subtype = first.strip().lower().partition("/")
        if not (slash and _TOKEN.fullmatch(type_) and _TOKEN.fullmatch(subtype)):
            continue  # empty list elements are legal; junk is ignored
        if type_ == "*" and subtype != "*":
            continue
        q: float | None = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                # A malformed weight makes the client's intent unknown, so the
                # range is dropped rather than guessed at.  Parameters after q
                # are accept-extensions, which we ignore.
                value = value.strip()
                q = float(value) if _QVALUE.fullmatch(value) else None
                break
        if q is not None:
            ranges.append(_Range(type_, subtype, q, position))
    return ranges


def negotiate(accept: str | None, default: MediaType = MediaType.JSON) -> MediaType:
    """Choose the response media type from an Accept header (RFC 9110, section 12.5.1).

    A missing or empty header, or one without a single well-formed range,
    yields ``default``.  Each media type takes the weight of the most
    specific range naming it (an alias such as ``text/yaml`` counts as
    naming YAML); ``q=0`` excludes.  The highest weight wins; ties go to the
    more specific range, then to the range earlier in the header, then (for
    a wildcard matching several types) to ``default``.  Raises
    :class:`NotAcceptable` when no type has a positive weight.
    """
    if accept is None or not accept.strip():
        return default
    ranges = _parse_accept(accept)
    if not ranges:
        return default
    best: tuple[float, int, int, bool, int] | None = None
    chosen = default
    for order, media in enumerate(MediaType):
        aliases = [alias for alias, target in _ALIASES.items() if target is media]
        # (specificity, q, -position) of the range that decides this type's weight.
        deciding: tuple[int, float, int] | None = None
        for rng in ranges:
            specificity = max(rng.specificity(alias) for alias in aliases)
            if specificity:
                candidate = (specificity, rng.q, -rng.position)
                if deciding is None or candidate > deciding:
                    deciding = candidate
        if deciding is None or deciding[1] <= 0:
            continue
        specificity, q, neg_position = deciding
        key = (q, specificity, neg_position, media is default, -order)
        if best is None or key > best:
            best, chosen = key, media
    if best is None:
        raise NotAcceptable(
            f"none of the media types in Accept {_echo(accept)} can be produced; "
            f"available: {_SUPPORTED}"
        )
    return chosen


def content_type_header(media: MediaType) -> str:
    """The Content-Type header value for a body produced by :func:`encode`."""
    # RFC 8259 defines no charset parameter for JSON (it is always UTF-8).
    if media is MediaType.JSON:
        return "application/json"
    return f"{media.value}; charset=utf-8"


# --------------------------------------------------------------------------- limits


def _describe(value: object) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if value is None:
        return "empty (null)"
    return type(value).__name__


def _require_object(value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise CodecError(f"the body must be an object, not {_describe(value)}")
    return value


def _enforce_limits(data: object, limits: Limits) -> None:
    """Walk ``data`` without recursion, refusing it if it exceeds ``limits``."""
    # Items are counted when a container's members are pushed, so a huge flat
    # list is refused before the walk spends time on it.
    count = 1
    stack: list[tuple[object, int]] = [(data, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            if len(value) > limits.max_string:
                raise CodecError(
                    f"a string in the body is longer than max_string={limits.max_string} characters"
                )
            continue
        members: list[object]
        if isinstance(value, dict):
            for key in value:
                if isinstance(key, str) and len(key) > limits.max_string:
                    raise CodecError(
                        f"a key in the body is longer than max_string={limits.max_string} "
                        "characters"
                    )
            members = list(value.values())
        elif isinstance(value, list):
            members = value
        else:
            continue
        depth += 1
        if depth > limits.max_depth:
            raise _depth_error(limits)
        count += len(members)
        if count > limits.max_items:
            raise CodecError(f"the body has more than max_items={limits.max_items} items")
        stack.extend((member, depth) for member in members)


def _depth_error(limits: Limits) -> CodecError:
    return CodecError(f"the body nests deeper than max_depth={limits.max_depth} levels")


def _utf8_error(exc: UnicodeDecodeError) -> CodecError:
    return CodecError(f"the body is not valid UTF-8: {exc.reason} at byte {exc.start}")


def _utf8(body: bytes) -> str:
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _utf8_error(exc) from None


# --------------------------------------------------------------------------- JSON

_JSON_DECODER: Final = msgspec.json.Decoder()
_JSON_ENCODER: Final = msgspec.json.Encoder()


def _decode_json(body: bytes, limits: Limits) -> object:
    try:
        return _JSON_DECODER.decode(body)
    except UnicodeDecodeError as exc:  # msgspec validates UTF-8 inside strings
        raise _utf8_error(exc) from None
    except msgspec.DecodeError as exc:
        raise CodecError(f"invalid JSON: {exc}") from None
    except RecursionError:
        raise _depth_error(limits) from None


# --------------------------------------------------------------------------- YAML

_CORE: Final = "tag:yaml.org,2002:"
_STR_TAG: Final = _CORE + "str"
_INT_TAG: Final = _CORE + "int"
_FLOAT_TAG: Final = _CORE + "float"
_BOOL_TAG: Final = _CORE + "bool"
_NULL_TAG: Final = _CORE + "null"

_TRUE: Final = frozenset({"true", "True", "TRUE"})
_FALSE: Final = frozenset({"false", "False", "FALSE"})
_NULLS: Final = frozenset({"~", "null", "Null", "NULL", ""})
# Implicit integers: no leading zeros (see the module docstring).
_IMPLICIT_INT: Final = re.compile(r"[-+]?(?:0|[1-9][0-9]*)\Z|0o[0-7]+\Z|0x[0-9a-fA-F]+\Z")
# An explicit !!int may have leading zeros: the author has said it is a number.
_EXPLICIT_INT: Final = re.compile(r"[-+]?(?:[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)\Z")
# A float needs a point or an exponent, so that 007 is not read as 7.0.
_IMPLICIT_FLOAT: Final = re.compile(
    r"[-+]?(?:\.[0-9]+|[0-9]+\.[0-9]*)(?:[eE][-+]?[0-9]+)?\Z"
    r"|[-+]?[0-9]+[eE][-+]?[0-9]+\Z"
    r"|[-+]?\.(?:inf|Inf|INF)\Z"
    r"|\.(?:nan|NaN|NAN)\Z"
)
_EXPLICIT_FLOAT: Final = re.compile(_IMPLICIT_FLOAT.pattern + r"|[-+]?[0-9]+\Z")

_Resolvers = dict[str | None, list[tuple[str, re.Pattern[str]]]]


def _resolvers(*entries: tuple[str, re.Pattern[str], str | list[str]]) -> _Resolvers:
    """Build an implicit-resolver table, keyed by first character like PyYAML's."""
    table: _Resolvers = {}
    for tag, regexp, first in entries:
        for char in first:
            table.setdefault(char, []).append((tag, regexp))
    return table


# Order matters within a first character: an integer is tried before a float.
_LOADER_RESOLVERS: Final = _resolvers(
    (_BOOL_TAG, re.compile(r"(?:true|True|TRUE|false|False|FALSE)\Z"), "tTfF"),
    (_INT_TAG, _IMPLICIT_INT, "-+0123456789"),
    (_FLOAT_TAG, _IMPLICIT_FLOAT, "-+.0123456789"),
    (_NULL_TAG, re.compile(r"(?:~|null|Null|NULL|)\Z"), ["~", "n", "N", ""]),
)


class _RefusedYamlError(ConstructorError):
    """A well-formed YAML construct that Talicada does not accept."""


def _construct_int(loader: SafeConstructor, node: ScalarNode) -> int:
    value = loader.construct_scalar(node)
    if _EXPLICIT_INT.match(value):
        sign = -1 if value.startswith("-") else 1
        digits = value.lstrip("+-")
        try:
            if digits.startswith("0o"):
                return sign * int(digits[2:], 8)
            if digits.startswith("0x"):
                return sign * int(digits[2:], 16)
            return sign * int(digits, 10)
        except ValueError:  # e.g. more digits than sys.get_int_max_str_digits()
            pass
    raise _RefusedYamlError(None, None, f"{value[:40]!r} is not a valid integer", node.start_mark)


def _construct_float(loader: SafeConstructor, node: ScalarNode) -> float:
    value = loader.construct_scalar(node)
    if not _EXPLICIT_FLOAT.match(value):
        raise _RefusedYamlError(None, None, f"{value[:40]!r} is not a valid float", node.start_mark)
    lowered = value.lower()
    if lowered.endswith(".inf"):
        return float("-inf") if lowered.startswith("-") else float("inf")
    if lowered == ".nan":
        return float("nan")
    return float(value)


def _construct_bool(loader: SafeConstructor, node: ScalarNode) -> bool:
    value = loader.construct_scalar(node)
    if value in _TRUE or value in _FALSE:
        return value in _TRUE
    raise _RefusedYamlError(None, None, f"{value[:40]!r} is not a valid boolean", node.start_mark)


def _construct_null(loader: SafeConstructor, node: ScalarNode) -> None:
    value = loader.construct_scalar(node)
    if value not in _NULLS:
        raise _RefusedYamlError(None, None, f"{value[:40]!r} is not a valid null", node.start_mark)


def _construct_refused(loader: SafeConstructor, node: Node) -> None:
    raise _RefusedYamlError(
        None, None, f"the YAML tag {node.tag!r} is not accepted", node.start_mark
    )


class _StrictConstructor(SafeConstructor):
    """SafeConstructor limited to the core schema, without aliases or odd keys."""

    # Replacing the whole table (rather than add_constructor) both installs
    # the YAML 1.2 scalar rules and refuses every other tag, without touching
    # SafeConstructor's table that the rest of the process may rely on.
    yaml_constructors = {  # noqa: RUF012 - PyYAML's own mutable class table
        _STR_TAG: SafeConstructor.construct_yaml_str,
        _CORE + "seq": SafeConstructor.construct_yaml_seq,
        _CORE + "map": SafeConstructor.construct_yaml_map,
        _INT_TAG: _construct_int,
        _FLOAT_TAG: _construct_float,
        _BOOL_TAG: _construct_bool,
        _NULL_TAG: _construct_null,
        None: _construct_refused,
    }
    yaml_multi_constructors = {}  # noqa: RUF012 - as above

    def construct_object(self, node: Node, deep: bool = False) -> Any:
        """Construct one node, refusing a node reached a second time (an alias).

        libyaml composes nodes in C, so aliases cannot be caught while
        composing; but an alias is the same node object as its anchor, so
        reaching a node twice during construction is exactly alias use.  We
        stop at the first reuse, before any expansion has cost anything.  The
        error points at the anchored node, the only position the node keeps.
        """
        if node in self.constructed_objects or node in self.recursive_objects:
            raise _RefusedYamlError(None, None, "YAML aliases are not accepted", node.start_mark)
        return super().construct_object(node, deep=deep)

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        """Construct a mapping whose keys are unique strings (no merge keys)."""
        mapping: dict[Hashable, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode) or key_node.tag != _STR_TAG:
                raise _RefusedYamlError(
                    None, None, "mapping keys must be strings", key_node.start_mark
                )
            key = self.construct_object(key_node, deep=deep)
            if key in mapping:
                raise _RefusedYamlError(
                    None, None, f"duplicate key {key[:40]!r}", key_node.start_mark
                )
            mapping[key] = self.construct_object(value_node, deep=deep)
        return mapping


class _PyYamlLoader(_StrictConstructor, yaml.SafeLoader):
    """Pure-Python strict loader, used when PyYAML lacks libyaml."""

    yaml_implicit_resolvers = _LOADER_RESOLVERS


class _YamlLoader(Protocol):
    def check_node(self) -> bool: ...
    def get_node(self) -> Node | None: ...
    def construct_document(self, node: Node) -> Any: ...
    def dispose(self) -> None: ...


# Every strict loader available in this process, fastest last; tests run each.
_YAML_LOADERS: Final[list[Callable[[str], _YamlLoader]]] = [_PyYamlLoader]

# Strings that a YAML 1.1 reader resolves to a non-string but PyYAML's 1.1
# resolver does not: the spec's y/Y/n/N booleans.  Quoting them protects
# readers such as go-yaml v2.
_YAML11_EXTRA_RESOLVERS: Final = _resolvers(
    (_BOOL_TAG, re.compile(r"(?:y|Y|n|N)\Z"), "yYnN"),
)


def _merged_resolvers(*tables: _Resolvers) -> _Resolvers:
    merged: _Resolvers = {}
    for table in tables:
        for first, entries in table.items():
            merged.setdefault(first, []).extend(entries)
    return merged


# The dumper quotes every string that any of these resolvers would read as
# something else: PyYAML's YAML 1.1 rules (yes/no/on/off, timestamps,
# sexagesimal, 0-prefixed octal), the extra 1.1 booleans, and our own 1.2
# rules (for 0o17 and 1e3, which 1.1 reads as strings but we do not).
_DUMPER_RESOLVERS: Final = _merged_resolvers(
    yaml.resolver.Resolver.yaml_implicit_resolvers,
    _YAML11_EXTRA_RESOLVERS,
    _LOADER_RESOLVERS,
)


class _PyYamlDumper(yaml.SafeDumper):
    """Pure-Python dumper that quotes strings any YAML reader might misread."""

    yaml_implicit_resolvers = _DUMPER_RESOLVERS


_YAML_DUMPERS: Final[list[type[yaml.SafeDumper] | type[yaml.CSafeDumper]]] = [_PyYamlDumper]

try:
    from yaml import CSafeDumper, CSafeLoader
except ImportError:  # PyYAML built without libyaml: the pure-Python classes serve.
    pass
else:

    class _CYamlLoader(_StrictConstructor, CSafeLoader):
        """libyaml-backed strict loader."""

        yaml_implicit_resolvers = _LOADER_RESOLVERS

    class _CYamlDumper(CSafeDumper):
        """libyaml-backed dumper that quotes strings any YAML reader might misread."""

        yaml_implicit_resolvers = _DUMPER_RESOLVERS

    _YAML_LOADERS.append(_CYamlLoader)
    _YAML_DUMPERS.append(_CYamlDumper)


def _yaml_error_message(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        if isinstance(exc, _RefusedYamlError):
            return f"{exc.problem}{where}"
        what = ", ".join(part for part in (exc.context, exc.problem) if part)
        return f"invalid YAML: {what or 'syntax error'}{where}"
    # ReaderError and friends carry their position in the text; one line suffices.
    return "invalid YAML: " + " ".join(str(exc).split())


def _load_single_document(text: str) -> object:
    # The pure-Python reader checks the text as soon as the loader is built,
    # so the loader is created inside the caller's error handling.
    loader = _YAML_LOADERS[-1](text)
    try:
        # Compose first and look for a second document before constructing,
        # so a multi-document body is refused without building anything.
        node = loader.get_node() if loader.check_node() else None
        if node is not None and loader.check_node():
            raise CodecError("the body must be a single YAML document, not several")
        return None if node is None else loader.construct_document(node)
    finally:
        loader.dispose()


def _decode_yaml(body: bytes, limits: Limits) -> object:
    text = _utf8(body)
    try:
        return _load_single_document(text)
    except yaml.YAMLError as exc:
        raise CodecError(_yaml_error_message(exc)) from None
    except RecursionError:  # the pure-Python composer recurses per nesting level
        raise _depth_error(limits) from None


# --------------------------------------------------------------------------- XML

_XML_DECLARED_ENCODING: Final = re.compile(
    rb"<\?xml\s[^>]*?\bencoding\s*=\s*[\"']([^\"']*)[\"']", re.IGNORECASE
)
# Characters XML 1.0 cannot carry, even escaped.
_XML_ILLEGAL: Final = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
# Close to the XML Name production, minus colons (we write no namespaces).
_XML_NAME: Final = re.compile(r"[^\W\d][\w.\-]*\Z")


def _local_name(name: str) -> str:
    return name.rpartition("}")[2]


def _xml_shape(element: ET.Element, path: str) -> object:
    """The value of ``element``: its scalar, or an empty container to be filled later."""
    text = (element.text or "").strip()
    children = list(element)
    if not children and not element.attrib:
        return text or None
    if text or any((child.tail or "").strip() for child in children):
        raise CodecError(
            f"XML element {path} mixes text with attributes or child elements, "
            "which is not accepted"
        )
    if not element.attrib and all(_local_name(child.tag) == "item" for child in children):
        return []
    return {}


def _xml_to_data(root: ET.Element) -> object:
    """Convert an element tree to plain data, iteratively (no recursion on depth)."""
    root_path = "/" + _local_name(root.tag)
    top = _xml_shape(root, root_path)
    if top is None:
        return {}  # <request/> is an empty object
    stack: list[tuple[ET.Element, object, str]] = [(root, top, root_path)]
    while stack:
        element, container, path = stack.pop()
        filled: list[tuple[ET.Element, object, str]] = []
        if isinstance(container, list):
            for index, child in enumerate(element):
                child_path = f"{path}/item[{index + 1}]"
                value = _xml_shape(child, child_path)
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
                value = _xml_shape(child, child_path)
                if counts[key] > 1:
                    container.setdefault(key, []).append(value)
                else:
                    container[key] = value
                filled.append((child, value, child_path))
        stack.extend(entry for entry in filled if isinstance(entry[1], dict | list))
    return top


def _decode_xml(body: bytes) -> object:
    _utf8(body)  # expat would say "invalid token"; say what is wrong instead
    declared = _XML_DECLARED_ENCODING.match(body)
    if declared and declared.group(1).decode("ascii", "replace").lower() not in _CHARSETS:
        raise CodecError(
            f"the XML declaration names encoding {declared.group(1).decode('ascii', 'replace')!r}"
            "; the body must be UTF-8"
        )
    try:
        root = defused_fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
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


def _encode_xml(data: object, root: str) -> bytes:
    root_element = ET.Element(_xml_name(root))
    # Children are created when their parent is visited, so document order
    # is kept even though the stack pops in reverse.
    stack: list[tuple[ET.Element, object]] = [(root_element, data)]
    while stack:
        element, value = stack.pop()
        if isinstance(value, dict):
            for key, member in value.items():
                if member is not None:
                    stack.append((ET.SubElement(element, _xml_name(key)), member))
        elif isinstance(value, list):
            # A None member stays as an empty <item/> to keep positions.
            stack.extend((ET.SubElement(element, "item"), member) for member in value)
        elif value is not None:
            element.text = _xml_text(value)
    body: bytes = ET.tostring(root_element, encoding="utf-8", xml_declaration=True)
    return body


# --------------------------------------------------------------------------- public API

_BOM: Final = b"\xef\xbb\xbf"
_UTF16_BOMS: Final = (b"\xff\xfe", b"\xfe\xff")  # also the start of UTF-32 BOMs
_DEFAULT_LIMITS: Final = Limits()


def decode(body: bytes, media: MediaType, limits: Limits = _DEFAULT_LIMITS) -> object:
    """Decode a request body into plain data (a dict at the top level).

    Raises :class:`CodecError` when the body is not UTF-8, is malformed,
    uses a refused construct (YAML aliases, XML DTDs), is not an object, or
    exceeds ``limits``.
    """
    if len(body) > limits.max_bytes:
        raise CodecError(f"the body is larger than max_bytes={limits.max_bytes} bytes")
    # Some clients (notably on Windows) prefix UTF-8 with a byte order mark.
    body = body.removeprefix(_BOM)
    if body.startswith(_UTF16_BOMS):
        # msgspec would only say "invalid character"; name the actual problem.
        raise CodecError("the body is UTF-16 or UTF-32 encoded; it must be UTF-8")
    if not body.strip():
        raise CodecError(f"the body is empty; expected {media.value} containing an object")
    data: object
    if media is MediaType.JSON:
        data = _decode_json(body, limits)
    elif media is MediaType.YAML:
        data = _decode_yaml(body, limits)
    else:
        data = _decode_xml(body)
    _require_object(data)
    _enforce_limits(data, limits)
    return data


def _plain(data: object) -> Any:
    """Reduce ``data`` to what JSON would carry, so all three formats agree.

    datetimes become RFC 3339 strings, tuples and sets lists, Structs dicts,
    non-finite floats null, and non-string keys strings, exactly as in the
    JSON rendering.
    """
    return _JSON_DECODER.decode(_JSON_ENCODER.encode(data))


def encode(data: object, media: MediaType, *, root: str = "response") -> bytes:
    """Encode plain data (or anything msgspec can encode) as a response body.

    ``root`` names the XML root element and is ignored for JSON and YAML.
    Raises ``TypeError`` for values msgspec cannot encode and ``ValueError``
    for dict keys that cannot be XML element names.
    """
    if media is MediaType.JSON:
        return _JSON_ENCODER.encode(data)
    if media is MediaType.YAML:
        text: str = yaml.dump(
            _plain(data),
            Dumper=_YAML_DUMPERS[-1],
            sort_keys=False,
            allow_unicode=True,
            default_flow_style=False,
        )
        return text.encode("utf-8")
    return _encode_xml(_plain(data), root)
