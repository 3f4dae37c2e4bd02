"""YAML framing: a strict YAML 1.2 core-schema loader and a cautious dumper.

Part of :mod:`talicada.schema.codec`; the rules (no aliases, YAML 1.2 scalars,
core tags only, unique string keys) are set out in its docstring.  The loader
and dumper to use are passed in, so the codec chooses one (the fastest here)
and tests can run each.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable
from typing import Any, Final, Protocol

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode

from talicada.schema._limits import CodecError, Limits, depth_error, utf8

_CORE: Final = "tag:yaml.org,2002:"
_STR_TAG: Final = _CORE + "str"
_INT_TAG: Final = _CORE + "int"
_FLOAT_TAG: Final = _CORE + "float"
_BOOL_TAG: Final = _CORE + "bool"
_NULL_TAG: Final = _CORE + "null"

_TRUE: Final = frozenset({"true", "True", "TRUE"})
_FALSE: Final = frozenset({"false", "False", "FALSE"})
_NULLS: Final = frozenset({"~", "null", "Null", "NULL", ""})
# Implicit integers: no leading zeros (see the talicada.schema.codec docstring).
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


class YamlLoader(Protocol):
    """What :func:`decode_yaml` needs of a loader (PyYAML's loaders have no common base)."""

    def check_node(self) -> bool: ...
    def get_node(self) -> Node | None: ...
    def construct_document(self, node: Node) -> Any: ...
    def dispose(self) -> None: ...


# Every strict loader available in this process, fastest last (the one codec uses).
LOADERS: Final[list[Callable[[str], YamlLoader]]] = [_PyYamlLoader]

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


DUMPERS: Final[list[type[yaml.SafeDumper] | type[yaml.CSafeDumper]]] = [_PyYamlDumper]

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

    LOADERS.append(_CYamlLoader)
    DUMPERS.append(_CYamlDumper)


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


def _within_limits(text: str, limits: Limits, new_loader: Callable[[str], YamlLoader]) -> None:
    """Refuse a body with too many nodes, too deep, or with aliases, from its parse events.

    Composing builds a node per key and value before anything could count
    them, which for 60,000 keys costs the event loop about a second. The
    events come first and one at a time, so this pass stops at the first
    node past the limit; only a body within it is composed (a second parse,
    bounded by the limits).
    """
    loader: Any = new_loader(text)
    nodes, depth = 0, 0
    anchors: dict[str, Any] = {}  # anchor → where its node starts
    # Keys are nodes here but not items in Limits, so allow one key per item.
    most = 2 * limits.max_items + 1
    try:
        while loader.check_event():
            event: Any = loader.get_event()
            if isinstance(event, yaml.AliasEvent):
                # Point at the anchored node, as the constructor's check does.
                alias: Any = event
                mark: Any = anchors.get(alias.anchor, alias.start_mark)
                raise _RefusedYamlError(None, None, "YAML aliases are not accepted", mark)
            if isinstance(event, yaml.NodeEvent) and event.anchor is not None:
                anchors[event.anchor] = event.start_mark
            if isinstance(event, yaml.ScalarEvent | yaml.CollectionStartEvent):
                nodes += 1
                if nodes > most:
                    raise CodecError(
                        f"the body has more than max_items={limits.max_items} keys and values"
                    )
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > limits.max_depth:
                    raise depth_error(limits)
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
    finally:
        loader.dispose()


def _load_single_document(text: str, new_loader: Callable[[str], YamlLoader]) -> object:
    # The pure-Python reader checks the text as soon as the loader is built,
    # so the loader is created inside the caller's error handling.
    loader = new_loader(text)
    try:
        # Compose first and look for a second document before constructing,
        # so a multi-document body is refused without building anything.
        node = loader.get_node() if loader.check_node() else None
        if node is not None and loader.check_node():
            raise CodecError("the body must be a single YAML document, not several")
        return None if node is None else loader.construct_document(node)
    finally:
        loader.dispose()


def decode_yaml(body: bytes, limits: Limits, loader: Callable[[str], YamlLoader]) -> object:
    """Decode one YAML document with ``loader`` (one of :data:`LOADERS`)."""
    text = utf8(body)
    try:
        _within_limits(text, limits, loader)
        return _load_single_document(text, loader)
    except yaml.YAMLError as exc:
        raise CodecError(_yaml_error_message(exc)) from None
    except RecursionError:  # the pure-Python composer recurses per nesting level
        raise depth_error(limits) from None


def encode_yaml(data: object, dumper: type[yaml.SafeDumper] | type[yaml.CSafeDumper]) -> bytes:
    """Encode plain data with ``dumper`` (one of :data:`DUMPERS`), keeping key order."""
    text: str = yaml.dump(
        data,
        Dumper=dumper,
        sort_keys=False,
        allow_unicode=True,
        default_flow_style=False,
    )
    return text.encode("utf-8")
