"""Session state and the booking calendar: one protocol, two implementations.

:class:`~talicada.broker.store.redis.RedisStore` is production: every
operation that changes state is one Lua script, so any number of broker
replicas can share one Redis. :class:`~talicada.broker.store.memory.MemoryStore`
is embedded mode: the same operations on dictionaries, atomic because no
operation awaits half-way. One behavioural test suite runs against both.

Each phase-changing operation takes the phases it may start from (from the
lifecycle table), so the rule lives in one place and the store only applies it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Protocol

from talicada.broker.calendar import Entry, Usage
from talicada.broker.engine import Change
from talicada.broker.records import (
    LiveSession,
    OfferSetRecord,
    Outcome,
    SessionRecord,
    Transition,
)
from talicada.events.bus import Bus
from talicada.schema.model import SessionPhase

#: The owner whose index lists every session (an operator's view); no
#: principal may be called this.
EVERYONE = "*"

#: What :meth:`Store.hold` answers when the owner's pending offers would hold
#: more than its cap (``owner_caps``): nothing was saved.
OVER_CAP = -1

#: Per platform: cores and GiB an owner's pending offer sets hold there, and
#: the latest expiry among them (epoch ms).
Held = dict[str, tuple[int, int, int]]


def held_shares(offers: Sequence[SessionRecord]) -> dict[str, tuple[int, int]]:
    """What one offer set holds toward its owner's cap, per platform: its
    largest offer there (siblings are alternatives: at most one is accepted)."""
    shares: dict[str, tuple[int, int]] = {}
    for offer in offers:
        cores, memory = shares.get(offer.platform, (0, 0))
        shares[offer.platform] = (
            max(cores, offer.booking.cores),
            max(memory, offer.booking.memory),
        )
    return shares


class Store(Protocol):
    """What the broker needs from its state store."""

    #: The event bus the store's changes publish to (the outbox's other end).
    bus: Bus

    async def usage(self, platform: str, first: int, last: int, most: int | None = None) -> Usage:
        """Cores and memory in use on ``platform`` over [first, last): the level at
        ``first`` and the change points after it, no more than ``most`` of them
        when given (``calendar.known_until`` says how far such a head reaches)."""

    async def hold(
        self,
        offerset: OfferSetRecord,
        offers: Sequence[SessionRecord],
        capacity: Mapping[str, tuple[int, int]],
        history: Sequence[Transition],
        owner_caps: Mapping[str, tuple[int, int]] | None = None,
    ) -> int | None:
        """Save an offer set and hold its offers' capacity, all or nothing.

        The offers are alternatives (at most one is ever accepted), so on each
        platform the set holds their envelope: per slot the most cores and,
        apart, the most memory any of them holds (``calendar.envelope_change``).
        An offer leaving the set (rejected, expired, resized, accepted and so
        booked alone) reshapes the envelope of the rest.

        Returns None when saved, the index of the first offer that does not
        fit on what is in use (someone else took the capacity since the
        planner looked), or :data:`OVER_CAP` when, with ``owner_caps`` (cores
        and GiB per platform), the owner's pending offer sets and this one
        would hold more than that; then nothing is saved. ``history[i]`` is
        the first transition of offer i. The set's share (:func:`held_shares`)
        counts toward :meth:`held` until it stops pending.
        """

    async def held(self, owner: str, now: int) -> Held:
        """What ``owner``'s pending offer sets hold, per platform (only those
        holding something at ``now``, epoch ms); a read of running sums, whatever
        the owner's history. Sums whose every set has expired count nothing and
        restart at the next hold, so a share whose release was lost (a failover,
        a replica of an older version) cannot keep an owner capped."""

    async def offerset(self, uuid: str) -> OfferSetRecord | None:
        """The stored offer set, or None."""

    async def sessions(self, uuids: Sequence[str]) -> list[LiveSession | None]:
        """The stored sessions with their live phases, in the order asked."""

    async def accept(self, uuid: str, now: int, record: Transition) -> Outcome:
        """OFFERED → ACCEPTED: the hold becomes a booking, OFFERED siblings REJECTED."""

    async def finish(
        self,
        uuid: str,
        sources: Collection[SessionPhase],
        record: Transition,
        *,
        due: int | None = None,
    ) -> Outcome:
        """Move to ``record.target`` from one of ``sources`` and free the capacity.

        For REJECTED, EXPIRED, CANCELLED, FAILED and COMPLETED. With ``due``,
        only when the offer's expiry is at or before ``due`` (epoch ms).
        """

    async def load(self, uuid: str) -> tuple[LiveSession, int] | None:
        """A session with its version, for a later :meth:`commit`."""

    async def commit(self, uuid: str, version: int, change: Change, delivery: str | None) -> str:
        """Apply a lifecycle change atomically, with its events and timers (the outbox).

        Returns ``ok``; ``stale`` when the session changed since ``version`` was
        read (load again and recompute); ``duplicate`` when ``delivery`` was
        already applied; ``full`` when ``change.rebook`` needs room the calendar
        does not have (nothing written); ``missing``. A final phase frees the booking.
        """

    async def history(self, uuid: str, start: int = 0) -> list[Transition]:
        """The recorded transitions of a session from number ``start`` on, oldest first."""

    async def claim_due(self, now: int, lease: int, limit: int) -> list[str]:
        """Up to ``limit`` due timers; each is hidden for ``lease`` ms while applied.

        A timer is removed by the operation it triggers (``finish`` removes
        ``expire:<uuid>``), so a replica that dies mid-way leaves it to be
        claimed again when the lease ends.
        """

    async def forget(
        self, uuid: str, final: Collection[SessionPhase], *, owner: str | None = None
    ) -> Outcome:
        """Delete a session in one of the ``final`` phases now (UWS DELETE), as the
        retention period would later: its record, history and index entries go,
        and a ``session.forgotten`` event tells observers (MQTT clears its
        retained message). ``phase`` when it is not final, ``missing`` when gone.
        ``owner``, when the caller knows it, saves reading the record again."""

    async def drop_timer(self, name: str) -> None:
        """Forget a timer that has nothing left to do."""

    async def list_sessions(
        self,
        owner: str,
        *,
        phases: Collection[SessionPhase],
        since: int | None,
        until: int | None,
        cursor: str | None,
        limit: int,
    ) -> tuple[list[LiveSession], str | None]:
        """The owner's sessions (every one for :data:`EVERYONE`), newest first, and the
        cursor of the next page."""

    async def entries(self, platform: str) -> list[tuple[str, str, Entry]]:
        """Every calendar entry of ``platform`` as (session uuid, state H|B, entry);
        a hold's entry names its offer set (``Entry.offerset``)."""

    async def ping(self) -> bool:
        """Whether the store answers (readiness)."""

    async def close(self) -> None:
        """Release connections."""
