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
    Parsed with defusedxml; DTDs and entity declarations are refused.  Names
    follow the community schema's XML hints, kept in one table
    (:mod:`talicada.schema._xml_names`).  The mapping from elements to data is:

    * the root element's name is ignored; the root must become an object
      (an empty root element is an empty object);
    * an element with attributes or child elements becomes a dict: each
      attribute and each child element is a key;
    * repeated sibling elements with the same name become a list;
    * an element without attributes whose children are all named for one
      member of it becomes a list: ``<offers><execution/></offers>``,
      ``<messages><message/></messages>``, ``<volumes><volume/></volumes>``
      (the member's name is the table's, by the list's parent and then by the
      list's name, else the singular of the list's name, else ``item``);
      ``<item>`` children, which this broker wrote before it followed the
      reference, are read as members of any list;
    * an element with only text becomes that text, whitespace-stripped;
    * an element with no text, no attributes and no children becomes
      ``None`` (so empty strings, lists and objects all read back as ``None``);
    * text next to attributes or child elements (mixed content) is refused;
    * namespaces are dropped from element and attribute names
      (``{urn:x}tag`` becomes ``tag``);
    * every scalar is a string; the model converts it with lax typing.

    :func:`encode` writes the same convention: the root element is named by
    its ``root`` argument, a dict key becomes a child element except ``kind``,
    which is an attribute (``<execution kind="…">``; a message's or a
    connector's ``kind`` stays an element, as in the reference), a list
    becomes one element per member named as above, ``None`` values of dict
    keys are omitted, booleans are ``true``/``false``.  So a dict whose only
    keys are ``item`` or its own member name (a ``values`` map holding just
    ``value``) reads back as a list; nothing this broker answers has one.

The work is split by concern into private modules whose public names this
module re-exports: ``_negotiation`` (media types), ``_limits`` (errors and
bounds), ``_yaml`` and ``_xml``; JSON, being one msgspec call, stays here.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from talicada.schema import _limits, _xml, _yaml
from talicada.schema._limits import CodecError, Limits
from talicada.schema._negotiation import (
    MediaType,
    NotAcceptable,
    UnsupportedMediaType,
    content_type_header,
    media_type_for_content_type,
    negotiate,
)

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

# Every loader and dumper available in this process, fastest last.  Looked up
# here at each call rather than in _yaml, so that tests can run each one by
# replacing these attributes of this module.
_YAML_LOADERS: Final = _yaml.LOADERS
_YAML_DUMPERS: Final = _yaml.DUMPERS


# --------------------------------------------------------------------------- JSON

_JSON_DECODER: Final = msgspec.json.Decoder()
_JSON_ENCODER: Final = msgspec.json.Encoder()


def _decode_json(body: bytes, limits: Limits) -> object:
    try:
        return _JSON_DECODER.decode(body)
    except UnicodeDecodeError as exc:  # msgspec validates UTF-8 inside strings
        raise _limits.utf8_error(exc) from None
    except msgspec.DecodeError as exc:
        raise CodecError(f"invalid JSON: {exc}") from None
    except RecursionError:
        raise _limits.depth_error(limits) from None


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
        data = _yaml.decode_yaml(body, limits, _YAML_LOADERS[-1])
    else:
        data = _xml.decode_xml(body, limits)
    _limits.require_object(data)
    _limits.enforce_limits(data, limits)
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
        return _yaml.encode_yaml(_plain(data), _YAML_DUMPERS[-1])
    return _xml.encode_xml(_plain(data), root)
