"""What a platform's back end says about a request at offer time. The seam, no I/O.

Most of what makes an offer is the broker's (kinds, sizes, the calendar), but
some facts belong to the service behind a platform: which images Skaha can
run, which core counts and RAM sizes it accepts, how many sessions the
account may run at once. A back end with such facts provides an
:class:`Advisor`; the broker asks it once per request and platform, offers
only sizes it calls legal, and answers ``NO`` with its reasons.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from talicada.schema.messages import MessageItem
from talicada.schema.validation import ValidRequest
from talicada.settings import PlatformSettings


@dataclass(frozen=True, slots=True)
class Advice:
    """A back end's word on one request.

    ``reasons`` say why the platform cannot run it (empty: it can);
    ``cores`` and ``memory`` list the only sizes it accepts (None: any);
    ``earliest`` is the soonest the service says the work could start (a
    batch scheduler's quote): no offer's window starts before it.
    """

    reasons: list[MessageItem] = field(default_factory=list)
    cores: tuple[int, ...] | None = None
    memory: tuple[int, ...] | None = None
    earliest: datetime | None = None


NO_ADVICE = Advice()


class Advisor(Protocol):
    """Offer-time facts of one platform's outside service."""

    async def advise(
        self, platform: PlatformSettings, valid: ValidRequest, owner: str | None = None
    ) -> Advice:
        """What the service says about ``valid`` for principal ``owner`` (never raises:
        problems are reasons)."""
        ...

    async def close(self) -> None:
        """Release what it holds (HTTP sessions)."""
        ...


def legal_range(wanted: tuple[int, int], legal: Sequence[int] | None) -> tuple[int, int] | None:
    """``wanted`` narrowed to the legal values it spans, or None when it spans none."""
    if legal is None:
        return wanted
    inside = [value for value in legal if wanted[0] <= value <= wanted[1]]
    return (min(inside), max(inside)) if inside else None


def legal_floor(value: int, legal: Sequence[int] | None) -> int:
    """The largest legal value not above ``value`` (``value`` itself when any is legal)."""
    if legal is None:
        return value
    below = [option for option in legal if option <= value]
    return max(below) if below else value
