"""What every body format shares: the base error, the bounds, and the checks.

Part of :mod:`talicada.schema.codec`, which re-exports :class:`CodecError` and
:class:`Limits`; import them from there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class CodecError(ValueError):
    """A body that cannot be decoded; the message says why (and where, when known)."""


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


def require_object(value: object) -> dict[str, Any]:
    """``value`` itself, if it is an object; otherwise a :class:`CodecError`."""
    if not isinstance(value, dict):
        raise CodecError(f"the body must be an object, not {_describe(value)}")
    return value


def enforce_limits(data: object, limits: Limits) -> None:
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
            raise depth_error(limits)
        count += len(members)
        if count > limits.max_items:
            raise CodecError(f"the body has more than max_items={limits.max_items} items")
        stack.extend((member, depth) for member in members)


def depth_error(limits: Limits) -> CodecError:
    """The error for a body nested deeper than ``limits`` allow."""
    return CodecError(f"the body nests deeper than max_depth={limits.max_depth} levels")


def utf8_error(exc: UnicodeDecodeError) -> CodecError:
    """The error for a body that is not UTF-8, naming the first bad byte."""
    return CodecError(f"the body is not valid UTF-8: {exc.reason} at byte {exc.start}")


def utf8(body: bytes) -> str:
    """``body`` decoded as UTF-8, or a :class:`CodecError` saying where it is not."""
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise utf8_error(exc) from None
