"""Media types: reading Content-Type and negotiating Accept (RFC 9110).

Part of :mod:`talicada.schema.codec`, which re-exports the public names here;
import them from there.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Final

from talicada.schema._limits import CodecError


class MediaType(enum.Enum):
    """The media types Talicada reads and writes."""

    JSON = "application/json"
    YAML = "application/yaml"
    XML = "application/xml"


class UnsupportedMediaType(CodecError):
    """A Content-Type (or charset) that Talicada cannot read; maps to HTTP 415."""


class NotAcceptable(CodecError):
    """No media type acceptable to the client can be produced; maps to HTTP 406."""


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

#: The charsets a body may declare: UTF-8, or its subset US-ASCII.
CHARSETS: Final = frozenset({"utf-8", "utf8", "us-ascii"})
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
            if charset not in CHARSETS:
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
    """The Content-Type header value for a body produced by :func:`~.codec.encode`."""
    # RFC 8259 defines no charset parameter for JSON (it is always UTF-8).
    if media is MediaType.JSON:
        return "application/json"
    return f"{media.value}; charset=utf-8"
