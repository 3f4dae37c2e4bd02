"""An in-process bus with the semantics of the Redis Streams bus.

For embedded mode (``talicada serve --embedded``) and tests: nothing survives the
process, but everything a worker can observe behaves as with Redis — consumer
groups starting at the beginning of the stream, ids ``<ms>-<seq>``, pending
entries with owner and delivery count, reclaim after the idle time,
``retry_later``, dead letters, approximate trimming. The same test-suite runs
against both.

Times come from an injectable ``clock`` (seconds, monotonic), so tests can move
time by hand; waiting in ``receive(block_ms=…)`` uses the event loop's real time.
"""

from __future__ import annotations

import asyncio
import time
from bisect import bisect_right
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime

from talicada import constants
from talicada.events.bus import DeadLetter, Delivery, decode_or_reason
from talicada.events.envelope import Event, encode
from talicada.schema.iso8601 import format_instant

__all__ = ["MemoryBus"]

_Id = tuple[int, int]  # (milliseconds, sequence), ordered like Redis stream ids

#: Entries a stream may exceed its maxlen by before it is trimmed. Like Redis's
#: ``MAXLEN ~`` (which frees whole nodes), trimming in batches keeps it cheap.
_TRIM_SLACK = 100


def _text(message_id: _Id) -> str:
    return f"{message_id[0]}-{message_id[1]}"


def _parse(message_id: str) -> _Id:
    ms, _, seq = message_id.partition("-")
    return int(ms), int(seq or 0)


@dataclass(slots=True)
class _Pending:
    consumer: str
    deliveries: int
    visible_at: float  # clock time from which another receive may take it


@dataclass(slots=True)
class _Group:
    last: _Id = (0, 0)  # last id delivered as new; groups start at the beginning
    # Keyed by id; insertion order is id order because only new reads insert.
    pending: dict[_Id, _Pending] = field(default_factory=dict)


@dataclass(slots=True)
class _Stream:
    ids: list[_Id] = field(default_factory=list)
    payloads: dict[_Id, bytes] = field(default_factory=dict)
    groups: dict[str, _Group] = field(default_factory=dict)


class MemoryBus:
    """The :class:`~talicada.events.bus.Bus` in one process (see module docstring).

    Args:
        maxlen: Approximate length cap of every stream, dead letters included.
        reclaim_idle_ms: How long a consumer may hold a message unacked before
            another consumer may take it.
        clock: Monotonic time in seconds; inject a fake one to control time.
    """

    def __init__(
        self,
        *,
        maxlen: int = constants.STREAM_MAXLEN,
        reclaim_idle_ms: int = int(constants.RECLAIM_IDLE.total_seconds() * 1000),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.maxlen = maxlen
        self.reclaim_idle_ms = reclaim_idle_ms
        self._clock = clock
        self._streams: dict[str, _Stream] = {}
        self._dead: list[DeadLetter] = []
        self._last_id: _Id = (0, 0)
        # Replaced on every publish: waiters hold the old one, which is set.
        self._wakeup = asyncio.Event()

    # -- producing ----------------------------------------------------------

    async def publish(self, stream: str, event: Event) -> str:
        """Append ``event`` to ``stream``; return its id."""
        return await self.publish_raw(stream, encode(event))

    async def publish_raw(self, stream: str, payload: bytes) -> str:
        """Append a payload as it is (re-driving dead letters; testing bad input)."""
        entries = self._streams.setdefault(stream, _Stream())
        message_id = self._next_id()
        entries.ids.append(message_id)
        entries.payloads[message_id] = payload
        if len(entries.ids) > self.maxlen + _TRIM_SLACK:
            for old in entries.ids[: -self.maxlen]:
                del entries.payloads[old]
            del entries.ids[: -self.maxlen]
        self._wakeup.set()
        self._wakeup = asyncio.Event()
        return _text(message_id)

    def _next_id(self) -> _Id:
        ms = int(self._clock() * 1000)
        last_ms, last_seq = self._last_id
        self._last_id = (ms, 0) if ms > last_ms else (last_ms, last_seq + 1)
        return self._last_id

    # -- consuming ----------------------------------------------------------

    async def ensure_group(self, stream: str, group: str) -> None:
        """Create ``group`` on ``stream`` (and the stream) unless it exists."""
        self._streams.setdefault(stream, _Stream()).groups.setdefault(group, _Group())

    async def receive(
        self, stream: str, group: str, consumer: str, *, count: int = 10, block_ms: int = 0
    ) -> list[Delivery]:
        """Reclaimable messages first, then new ones; wait up to ``block_ms`` for any."""
        entries, state = self._group(stream, group)
        if count <= 0:
            return []
        loop = asyncio.get_running_loop()
        give_up = loop.time() + block_ms / 1000
        while True:
            found = self._reclaim(entries, state, consumer, count)
            found += self._read_new(entries, state, consumer, count - len(found))
            deliveries = self._deliveries(stream, group, state, found)
            if deliveries:
                return deliveries
            timeout = give_up - loop.time()
            if timeout <= 0:
                return []
            # Wake for a publish, or when a hidden message becomes receivable.
            visible = [p.visible_at for p in state.pending.values()]
            if visible:
                timeout = min(timeout, max(min(visible) - self._clock(), 0.001))
            with suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout)

    async def tail(
        self, stream: str, after: str = "$", *, count: int = 100, block_ms: int = 0
    ) -> tuple[str, list[Event]]:
        """Events after id ``after`` (``$``: after the newest now), without a group."""
        entries = self._streams.setdefault(stream, _Stream())
        last = (entries.ids[-1] if entries.ids else (0, 0)) if after == "$" else _parse(after)
        loop = asyncio.get_running_loop()
        give_up = loop.time() + block_ms / 1000
        while True:
            start = bisect_right(entries.ids, last)
            found = entries.ids[start : start + count]
            timeout = give_up - loop.time()
            if found or timeout <= 0:
                break
            with suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout)
        events = []
        for message_id in found:
            event = decode_or_reason(entries.payloads[message_id])
            if isinstance(event, Event):  # observers skip what workers dead-letter
                events.append(event)
        return _text(found[-1] if found else last), events

    def _group(self, stream: str, group: str) -> tuple[_Stream, _Group]:
        entries = self._streams.get(stream)
        if entries is None or group not in entries.groups:
            raise LookupError(f"no consumer group {group!r} on stream {stream!r}")
        return entries, entries.groups[group]

    def _reclaim(
        self, entries: _Stream, state: _Group, consumer: str, count: int
    ) -> list[tuple[_Id, bytes, int]]:
        now = self._clock()
        found: list[tuple[_Id, bytes, int]] = []
        for message_id, pending in list(state.pending.items()):
            if len(found) >= count:
                break
            if pending.visible_at > now:
                continue
            payload = entries.payloads.get(message_id)
            if payload is None:  # trimmed while pending: nothing left to deliver
                del state.pending[message_id]
                continue
            pending.consumer = consumer
            pending.deliveries += 1
            pending.visible_at = now + self.reclaim_idle_ms / 1000
            found.append((message_id, payload, pending.deliveries))
        return found

    def _read_new(
        self, entries: _Stream, state: _Group, consumer: str, count: int
    ) -> list[tuple[_Id, bytes, int]]:
        if count <= 0:
            return []
        start = bisect_right(entries.ids, state.last)
        visible_at = self._clock() + self.reclaim_idle_ms / 1000
        found = []
        for message_id in entries.ids[start : start + count]:
            state.pending[message_id] = _Pending(consumer, 1, visible_at)
            state.last = message_id
            found.append((message_id, entries.payloads[message_id], 1))
        return found

    def _deliveries(
        self, stream: str, group: str, state: _Group, found: list[tuple[_Id, bytes, int]]
    ) -> list[Delivery]:
        deliveries = []
        for message_id, payload, count in found:
            event = decode_or_reason(payload)
            if isinstance(event, str):  # not an event: no consumer could handle it
                del state.pending[message_id]
                self._add_dead(stream, group, _text(message_id), count, event, payload)
            else:
                deliveries.append(Delivery(stream, _text(message_id), event, count))
        return deliveries

    # -- settling -----------------------------------------------------------

    async def ack(self, delivery: Delivery, group: str) -> None:
        """Forget the message for ``group``: it will not be delivered again."""
        _, state = self._group(delivery.stream, group)
        state.pending.pop(_parse(delivery.message_id), None)

    async def touch(self, delivery: Delivery, group: str, consumer: str) -> None:
        """Restart the message's idle time: its handler is still working on it."""
        _, state = self._group(delivery.stream, group)
        pending = state.pending.get(_parse(delivery.message_id))
        if pending is not None:
            pending.consumer = consumer
            pending.visible_at = self._clock() + self.reclaim_idle_ms / 1000

    async def retry_later(self, delivery: Delivery, group: str, delay_ms: int) -> None:
        """Hide the pending message for ``delay_ms``; it is then receivable again."""
        _, state = self._group(delivery.stream, group)
        pending = state.pending.get(_parse(delivery.message_id))
        if pending is not None:
            pending.visible_at = self._clock() + delay_ms / 1000

    async def dead_letter(self, delivery: Delivery, group: str, reason: str) -> None:
        """Move the message to the dead letters (only while it is still pending)."""
        entries, state = self._group(delivery.stream, group)
        message_id = _parse(delivery.message_id)
        if state.pending.pop(message_id, None) is None:
            return  # acked or dead-lettered by another consumer meanwhile
        payload = entries.payloads.get(message_id) or encode(delivery.event)
        self._add_dead(
            delivery.stream, group, delivery.message_id, delivery.deliveries, reason, payload
        )

    def _add_dead(
        self, stream: str, group: str, message_id: str, deliveries: int, reason: str, payload: bytes
    ) -> None:
        event = decode_or_reason(payload)
        self._dead.append(
            DeadLetter(
                id=_text(self._next_id()),
                stream=stream,
                group=group,
                message_id=message_id,
                deliveries=deliveries,
                reason=reason,
                failed=format_instant(datetime.now(UTC)),
                event=event if isinstance(event, Event) else None,
                payload=payload,
            )
        )
        if len(self._dead) > self.maxlen + _TRIM_SLACK:
            del self._dead[: -self.maxlen]

    # -- inspecting ---------------------------------------------------------

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """The newest ``limit`` dead letters, oldest first."""
        return self._dead[-limit:] if limit > 0 else []

    async def pending(self, stream: str, group: str) -> int:
        """How many messages of ``group`` are delivered but not yet acked (0: no group)."""
        entries = self._streams.get(stream)
        if entries is None or group not in entries.groups:
            return 0
        return len(entries.groups[group].pending)

    async def dead_letter_count(self) -> int:
        """How many dead letters are kept."""
        return len(self._dead)

    async def stream_length(self, stream: str) -> int:
        """How many entries ``stream`` holds (0 when it does not exist)."""
        entries = self._streams.get(stream)
        return len(entries.ids) if entries else 0

    async def close(self) -> None:
        """Drop everything; waiting receivers return at their timeout."""
        self._streams.clear()
        self._dead.clear()
