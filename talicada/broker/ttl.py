"""How long an offer-set answer stays valid (docs/ARCHITECTURE.md §4.7). Pure code.

Every answer, YES or NO, carries a TTL in its body (``ttl``) and in
``Cache-Control: max-age``, so a client or an aggregating broker can reuse it
instead of asking again. A YES is valid until its offers expire. A NO is
valid as long as the same request would get the same NO: the shortest of the
TTLs of its reasons, where a reason from configuration (a kind the platform
never runs) lasts long and a reason from the calendar (no capacity now) lasts
briefly.
"""

from __future__ import annotations

from collections.abc import Iterable

from talicada.schema import messages as msg
from talicada.schema.messages import MessageItem
from talicada.settings import AnswerTtl

_URN = "urn:talicada:"

#: Reasons that only a change of configuration (a restart) can lift.
FIXED: frozenset[str] = frozenset(
    _URN + entry[0]
    for entry in (
        msg.UNSUPPORTED_KIND,
        msg.RESOURCE_LIMIT,
        msg.DURATION_LIMIT,
        msg.UNREACHABLE_DATA,
        msg.COST_LIMIT,
    )
)
#: Reasons a back end's service gave; true while its catalogue is.
ADVICE: frozenset[str] = frozenset({_URN + msg.PLATFORM_REFUSES[0]})


def reason_ttl(kind: str, ttl: AnswerTtl) -> float:
    """Seconds a NO for a reason of ``kind`` stays true; unknown reasons count as short."""
    if kind in FIXED:
        return ttl.fixed
    if kind in ADVICE:
        return ttl.advice
    return ttl.capacity


def no_ttl(reasons: Iterable[MessageItem], ttl: AnswerTtl) -> float:
    """Seconds a NO with these reasons stays true: the first of them that may change."""
    return min((reason_ttl(reason.kind, ttl) for reason in reasons), default=ttl.capacity)


def remaining(valid_until_ms: int, now_ms: int) -> int:
    """Whole seconds from ``now_ms`` to ``valid_until_ms`` (the nearest), never negative.

    A fresh answer says its full TTL though a few milliseconds passed making it.
    """
    return max(0, round((valid_until_ms - now_ms) / 1000))


def cache_control(seconds: int) -> str:
    """The ``Cache-Control`` value of an answer valid for ``seconds``.

    ``private``: an offer set belongs to the caller who asked for it.
    """
    return f"private, max-age={seconds}"
