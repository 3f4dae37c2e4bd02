"""The Bus protocol: durable streams with consumer groups, at-least-once.

Two implementations share it and one behavioural test-suite
(``tests/test_events.py``): :class:`~talicada.events.redis_bus.RedisBus` on
Redis Streams for production and
:class:`~talicada.events.memory_bus.MemoryBus` for embedded mode and tests.

The life of a message, for one consumer group::

    publish ──▶ receive (deliveries=1) ──▶ handler ──▶ ack            (done)
                   ▲                         │
                   │                         ├─▶ retry_later(delay)   (hidden,
                   │                         │     then received again, +1)
                   │                         └─▶ dead_letter(reason)  (done, parked
                   │                                                   for operators)
                   └── reclaimed (+1) when its consumer holds it longer than the
                       reclaim idle time without acking: that consumer died.

A received message is *pending* until acked or dead-lettered; only pending
messages can be retried, reclaimed or dead-lettered. Groups start at the
beginning of the stream, so events published before a worker first started are
not lost. A message whose payload is not a valid :class:`Event` is never handed
to a consumer: the bus dead-letters it on receipt.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

import msgspec

from talicada import constants
from talicada.events.envelope import Event, decode

__all__ = ["Bus", "DeadLetter", "Delivery", "backoff", "decode_or_reason", "jittered"]


@dataclass(frozen=True, slots=True)
class Delivery:
    """One delivery of one message to one consumer.

    Attributes:
        stream: Role name of the stream (``launch``), not the Redis key.
        message_id: The stream entry id (``<ms>-<seq>``).
        event: The decoded event.
        deliveries: How many times the message has been delivered to its group,
            this delivery included (1 on the first).
    """

    stream: str
    message_id: str
    event: Event
    deliveries: int


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message that was given up on, as kept on the dead-letter stream.

    Attributes:
        id: Entry id on the dead-letter stream.
        stream: Role name of the stream it came from.
        group: Consumer group that gave up on it.
        message_id: Its entry id on the source stream.
        deliveries: How many times it had been delivered.
        reason: Why it was given up on (the last error, or why it did not decode).
        failed: When, ISO 8601 UTC instant.
        event: The event, or None when the payload was not a valid event.
        payload: The original payload bytes, for inspection and re-publishing.
    """

    id: str
    stream: str
    group: str
    message_id: str
    deliveries: int
    reason: str
    failed: str
    event: Event | None
    payload: bytes


class Bus(Protocol):
    """Streams of events consumed by groups (see the module docstring)."""

    async def publish(self, stream: str, event: Event) -> str:
        """Append ``event`` to ``stream`` (trimming it to about maxlen); return its id."""
        ...

    async def ensure_group(self, stream: str, group: str) -> None:
        """Create ``group`` on ``stream`` (and the stream) unless it exists."""
        ...

    async def receive(
        self, stream: str, group: str, consumer: str, *, count: int = 10, block_ms: int = 0
    ) -> list[Delivery]:
        """Up to ``count`` deliveries for ``consumer``.

        First the group's reclaimable messages (due retries, and messages a
        consumer has held longer than the reclaim idle time), then new ones.
        Waits up to ``block_ms`` for new messages when there is nothing at all
        (0: do not wait).
        """
        ...

    async def tail(
        self, stream: str, after: str = "$", *, count: int = 100, block_ms: int = 0
    ) -> tuple[str, list[Event]]:
        """Events after id ``after`` (``$``: after the newest now), without a group.

        For observers that must not take messages from workers (notifications,
        ``talicada events tail``). Returns the id to pass next time and the
        events, waiting up to ``block_ms`` when there are none; entries that are
        not valid events are skipped.
        """
        ...

    async def ack(self, delivery: Delivery, group: str) -> None:
        """The acknowledgement point: call only once the effect is recorded."""
        ...

    async def touch(self, delivery: Delivery, group: str, consumer: str) -> None:
        """Restart the message's idle time, so no one reclaims it while it is handled."""
        ...

    async def retry_later(self, delivery: Delivery, group: str, delay_ms: int) -> None:
        """Keep the message pending, hidden for ``delay_ms``, then receivable again."""
        ...

    async def dead_letter(self, delivery: Delivery, group: str, reason: str) -> None:
        """Atomically record the message on the dead-letter stream and ack it."""
        ...

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """The newest ``limit`` dead letters, oldest first."""
        ...

    async def pending(self, stream: str, group: str) -> int:
        """How many messages of ``group`` are delivered but not yet acked."""
        ...

    async def dead_letter_count(self) -> int:
        """How many dead letters are kept."""
        ...

    async def stream_length(self, stream: str) -> int:
        """How many entries ``stream`` holds (0 when it does not exist)."""
        ...

    async def close(self) -> None:
        """Release the bus's resources; it must not be used afterwards."""
        ...


def backoff(
    deliveries: int,
    base: timedelta = constants.RETRY_BASE,
    cap: timedelta = constants.RETRY_MAX,
) -> timedelta:
    """Delay before retrying after the ``deliveries``-th delivery failed.

    ``base * 2**(deliveries - 1)``, never more than ``cap``: 1 s, 2 s, 4 s … with
    the defaults.
    """
    exponent = max(deliveries, 1) - 1
    # Compare as floats first: a huge delivery count would overflow timedelta.
    if base.total_seconds() * 2.0 ** min(exponent, 1000) >= cap.total_seconds():
        return cap
    return base * (1 << exponent)


def jittered(seconds: float) -> float:
    """``seconds`` spread at random over its upper half (Dramatiq's "equal jitter").

    Many consumers failing at once on the same outage would otherwise retry in
    lock-step and meet the recovering service together; half the delay stays,
    so the backoff still grows.
    """
    return seconds / 2 + random.uniform(0, seconds / 2)  # noqa: S311 - not for secrets


def decode_or_reason(payload: bytes) -> Event | str:
    """The event in ``payload``, or why it is not one (the dead-letter reason).

    Shared by the bus implementations so both give the same reason.
    """
    try:
        return decode(payload)
    except msgspec.DecodeError as exc:
        return f"undecodable event: {exc}"
