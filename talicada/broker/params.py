"""Query parameters, parsed strictly: ASCII digits only, bounded, or a 400 naming the parameter.

``str.isdigit`` and ``int``/``float`` accept other scripts' digits (``²``, ``①``,
``٣``) and unbounded lengths; nothing a client sends may become a 500, so the
patterns here are ASCII and short.
"""

from __future__ import annotations

import re
import uuid as uuidlib
from typing import cast, get_args

from aiohttp import web

from talicada.schema import messages as msg
from talicada.schema.messages import RequestInvalid
from talicada.schema.model import SessionPhase

_WHOLE = re.compile(r"[0-9]{1,9}", re.ASCII)
_DECIMAL = re.compile(r"[0-9]{1,9}(?:\.[0-9]{1,6})?", re.ASCII)


def whole(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    """Parameter ``name`` as a whole number from ``low`` to ``high`` (``default`` if absent)."""
    text = request.query.get(name)
    if text is None:
        return default
    if _WHOLE.fullmatch(text) is None or not low <= int(text) <= high:
        raise RequestInvalid(
            [
                msg.make(
                    msg.INVALID_FIELD,
                    path=name,
                    reason=f"a whole number from {low} to {high} in ASCII digits",
                )
            ]
        )
    return int(text)


def seconds(request: web.Request, name: str, high: float | None) -> float | None:
    """Parameter ``name`` as seconds from 0 to ``high`` (None: no bound) in ASCII digits
    with optional decimals, or None when absent."""
    text = request.query.get(name)
    if text is None:
        return None
    if _DECIMAL.fullmatch(text) is None or (high is not None and float(text) > high):
        bound = "0 or more" if high is None else f"from 0 to {high:g}"
        raise RequestInvalid(
            [msg.make(msg.INVALID_FIELD, path=name, reason=f"seconds, {bound}, in ASCII digits")]
        )
    return float(text)


def flag(request: web.Request, name: str) -> bool:
    """A ``true``/``false`` (or ``1``/``0``) parameter; absent: false."""
    text = request.query.get(name, "false").lower()
    if text not in ("true", "false", "1", "0"):
        raise RequestInvalid([msg.make(msg.INVALID_FIELD, path=name, reason="true or false")])
    return text in ("true", "1")


def uuid(request: web.Request, name: str) -> str | None:
    """Parameter ``name`` as a uuid (normalised), or None when absent."""
    text = request.query.get(name)
    if text is None:
        return None
    try:
        return str(uuidlib.UUID(text))
    except ValueError:
        raise RequestInvalid([msg.make(msg.INVALID_FIELD, path=name, reason="a uuid")]) from None


#: Every phase a session can be in.
PHASES: frozenset[SessionPhase] = frozenset(get_args(SessionPhase))


def phase(request: web.Request, name: str = "phase") -> SessionPhase | None:
    """Parameter ``name`` as one session phase, or None when absent (or empty)."""
    found = [value for value in request.query.getall(name, []) if value]
    if not found:
        return None
    if len(found) > 1 or found[0] not in PHASES:
        reason = "one phase of " + ", ".join(sorted(PHASES))
        raise RequestInvalid([msg.make(msg.INVALID_FIELD, path=name, reason=reason)])
    return found[0]


def phases(request: web.Request, name: str = "phase") -> list[SessionPhase]:
    """Parameter ``name`` (repeatable, comma-separated) as session phases; a 400
    naming the first unknown one."""
    found = [p for value in request.query.getall(name, []) for p in value.split(",") if p]
    unknown = [phase for phase in found if phase not in PHASES]
    if unknown:
        reason = f"unknown phase {unknown[0]!r}; phases are " + ", ".join(sorted(PHASES))
        raise RequestInvalid([msg.make(msg.INVALID_FIELD, path=name, reason=reason)])
    return cast(list[SessionPhase], found)


def prefer_offers(request: web.Request) -> int | None:
    """``Prefer: offers=N`` (RFC 7240 style): at most N offers, N from 1 to 32; None if absent."""
    for preference in request.headers.getall("Prefer", []):
        for token in preference.split(","):
            name, _, value = token.strip().partition("=")
            if name.strip().lower() != "offers":
                continue
            value = value.strip().strip('"')
            if _WHOLE.fullmatch(value) is None or not 1 <= int(value) <= 32:
                raise RequestInvalid(
                    [
                        msg.make(
                            msg.INVALID_FIELD,
                            path="Prefer",
                            reason="offers=N takes a whole number from 1 to 32",
                        )
                    ]
                )
            return int(value)
    return None
