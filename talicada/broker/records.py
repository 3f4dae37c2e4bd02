"""What the broker stores about offer sets and sessions.

Stored records outlive deploys, so msgspec's schema-evolution rules apply:
new fields get defaults, no field is ever retyped. The live phase of a
session is kept beside its record (so one atomic script can check and change
it) and is the only authority on it; ``session.phase`` in the record is what
it was when the record was written.
"""

from __future__ import annotations

import msgspec

from talicada.broker.calendar import Entry
from talicada.events.envelope import Handle
from talicada.schema.messages import MessageItem
from talicada.schema.model import ExecutionSession, SessionPhase


class Transition(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One recorded phase change: when, from what, to what, and why."""

    time: str
    #: Session phases, or component phases when ``component`` names one.
    source: str = msgspec.field(name="from")
    target: str = msgspec.field(name="to")
    cause: str
    component: str | None = None


class Booking(msgspec.Struct, array_like=True):
    """Where a session sits in its platform's calendar (slots [first, last))."""

    first: int
    last: int
    cores: int
    memory: int

    def entry(self, platform: str) -> Entry:
        """The calendar entry of this booking on ``platform``."""
        return Entry(platform, self.first, self.last, self.cores, self.memory)


class StepQuote(msgspec.Struct, array_like=True):
    """What an offer quoted for one preparation step (talicada/broker/quoting.py).

    ``component`` is the component's uuid ("" for the whole preparation);
    ``expected`` and ``planned`` are milliseconds; ``basis`` is history, model
    or default, from ``samples`` samples. Stored as an array: a few dozen bytes.
    """

    component: str
    step: str
    expected: int
    planned: int
    basis: str
    samples: int


class SessionRecord(msgspec.Struct, kw_only=True):
    """An offer and the session it becomes. Times are epoch milliseconds."""

    uuid: str
    owner: str
    offerset: str
    platform: str
    dialect: str
    created: int
    expires: int
    booking: Booking
    session: ExecutionSession
    #: The tail of the executable's stdout and stderr, as the launcher kept it.
    output: dict[str, str] = msgspec.field(default_factory=dict)
    #: What the back ends' outside services gave each component (by uuid).
    handles: dict[str, Handle] = msgspec.field(default_factory=dict)
    #: What the platform said about the session besides its output (Skaha's
    #: scheduling events, say), by source.
    logs: dict[str, str] = msgspec.field(default_factory=dict)
    #: When each component now preparing began (epoch ms), to time its step
    #: (talicada/broker/history.py); dropped when it finishes.
    started: dict[str, int] = msgspec.field(default_factory=dict)
    #: What the offer quoted for each preparation step.
    quotes: list[StepQuote] = msgspec.field(default_factory=list)


class OfferSetRecord(msgspec.Struct, kw_only=True):
    """The answer to one request: its offers (uuids) or why there are none."""

    uuid: str
    owner: str
    dialect: str
    created: int
    expires: int
    result: str
    offers: list[str] = msgspec.field(default_factory=list)
    messages: list[MessageItem] = msgspec.field(default_factory=list)
    name: str | None = None
    #: Until when (epoch ms) the answer stays true: ``expires`` for YES, the
    #: shortest-lived reason for NO (talicada/broker/ttl.py). 0 in records made
    #: before it existed, which then fall back on ``expires``.
    valid_until: int = 0

    def valid_until_ms(self) -> int:
        """Until when the answer stays true (epoch ms)."""
        return self.valid_until or self.expires


class Outcome(msgspec.Struct, frozen=True):
    """The result of a phase change attempted in a store.

    ``status`` is ``ok``, ``phase`` (the current phase does not allow it),
    ``expired`` (the offer's time ran out), ``taken`` (a sibling was accepted
    first) or ``missing`` (no such session). ``phase`` is the phase now.
    """

    status: str
    phase: SessionPhase | None = None
    detail: str | None = None

    @property
    def ok(self) -> bool:
        """True when the change was applied."""
        return self.status == "ok"


class LiveSession(msgspec.Struct, frozen=True):
    """A stored session with its authoritative phase."""

    record: SessionRecord
    phase: SessionPhase
