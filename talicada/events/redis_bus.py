"""The production bus: Redis Streams with consumer groups (Redis 7.0 commands only).

* ``publish`` is ``XADD … MAXLEN ~``: memory stays bounded, trimming whole nodes.
* ``receive`` runs the reclaim script (due retries, then ``XAUTOCLAIM`` of
  messages held past the idle time by dead consumers, with their delivery counts
  from ``XPENDING``), then ``XREADGROUP >`` for new messages, blocking only when
  nothing was reclaimed. New messages are always on their first delivery, so
  they need no ``XPENDING``. A blocked read notices due retries when it returns,
  so a retry is at most ``block_ms`` late.
* ``retry_later``, ``dead_letter`` and the reclaim pass are Lua scripts (see
  :mod:`talicada.events._lua` for why retries use a sorted set rather than
  ``XCLAIM … TIME``).

Each message is one stream entry with one field, ``event``, holding the JSON
envelope; dead letters carry ``event``, ``reason``, ``stream``, ``group``,
``message_id``, ``deliveries`` and ``failed``. A stream, its retry sets and the
dead-letter stream are touched by one script, so they must live on one node
(standalone or Sentinel, not Cluster), like the store's keys.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from talicada import constants
from talicada.events import _lua
from talicada.events.bus import DeadLetter, Delivery, decode_or_reason
from talicada.events.envelope import Event, encode
from talicada.redisconn import PoolOptions
from talicada.redisconn import client as redis_client
from talicada.schema.iso8601 import format_instant

__all__ = ["RedisBus"]

_FIELD = constants.STREAM_FIELD.encode()
_Found = tuple[str, dict[bytes, bytes], int]  # id, fields, delivery count


def _bytes(value: Any) -> bytes:
    # Tolerate clients made with decode_responses=True: they hand back str.
    return value if isinstance(value, bytes) else str(value).encode()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _fields(raw: Mapping[Any, Any] | Sequence[Any]) -> dict[bytes, bytes]:
    """Entry fields from redis-py (a dict) or from a script (a flat list)."""
    if isinstance(raw, Mapping):
        return {_bytes(k): _bytes(v) for k, v in raw.items()}
    return {_bytes(raw[i]): _bytes(raw[i + 1]) for i in range(0, len(raw) - 1, 2)}


def _payload(fields: dict[bytes, bytes]) -> bytes:
    """The envelope bytes, or all fields as JSON when the entry is not one of ours."""
    if _FIELD in fields:
        return fields[_FIELD]
    as_text = {k.decode(errors="replace"): v.decode(errors="replace") for k, v in fields.items()}
    return msgspec.json.encode(as_text)


def _batches(reply: Any) -> list[tuple[Any, list[Any]]]:
    """``(key, entries)`` pairs of an XREAD/XREADGROUP reply, RESP2 or RESP3."""
    if not reply:
        return []
    if isinstance(reply, Mapping):  # RESP3: {key: [entries]}
        return [(key, value[0] if value else []) for key, value in reply.items()]
    return [(key, entries) for key, entries in reply]


class RedisBus:
    """The :class:`~talicada.events.bus.Bus` on Redis Streams (see module docstring).

    Args:
        client: The connection pool to use; :meth:`close` closes it. Blocking
            reads hold a connection each, so size the pool for the consumers.
        prefix: First element of every key (``<prefix>:stream:<role>``).
        maxlen: Approximate length cap of every stream, dead letters included.
        reclaim_idle_ms: How long a consumer may hold a message unacked before
            another consumer may take it.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = "talicada",
        maxlen: int = constants.STREAM_MAXLEN,
        reclaim_idle_ms: int = int(constants.RECLAIM_IDLE.total_seconds() * 1000),
    ) -> None:
        self.client = client
        self.keys = constants.Keys(prefix)
        self.maxlen = maxlen
        self.reclaim_idle_ms = reclaim_idle_ms
        self._reclaim = client.register_script(_lua.RECLAIM)
        self._retry = client.register_script(_lua.RETRY)
        self._dead_letter = client.register_script(_lua.DEAD_LETTER)
        # XAUTOCLAIM cursor per (stream, group): each pass resumes where the last
        # stopped, so a long pending list is covered in turn, not just its head.
        self._cursors: dict[tuple[str, str], str] = {}

    @classmethod
    async def connect(
        cls, url: str, *, pool: PoolOptions | None = None, **options: Any
    ) -> RedisBus:
        """A bus on the Redis at ``url``; fails fast when it does not answer.

        ``pool`` bounds the connection pool (:mod:`talicada.redisconn`).
        """
        client = redis_client(url, pool)
        await client.ping()
        return cls(client, **options)

    # -- producing ----------------------------------------------------------

    async def publish(self, stream: str, event: Event) -> str:
        """Append ``event`` to ``stream``; return its id."""
        return await self.publish_raw(stream, encode(event))

    async def publish_raw(self, stream: str, payload: bytes) -> str:
        """Append a payload as it is (re-driving dead letters; testing bad input)."""
        message_id = await self.client.xadd(
            self.keys.stream(stream), {_FIELD: payload}, maxlen=self.maxlen, approximate=True
        )
        return _text(message_id)

    # -- consuming ----------------------------------------------------------

    async def ensure_group(self, stream: str, group: str) -> None:
        """Create ``group`` on ``stream`` (and the stream) unless it exists."""
        try:
            await self.client.xgroup_create(self.keys.stream(stream), group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def receive(
        self, stream: str, group: str, consumer: str, *, count: int = 10, block_ms: int = 0
    ) -> list[Delivery]:
        """Reclaimable messages first, then new ones; wait up to ``block_ms`` for any."""
        if count <= 0:
            return []
        key = self.keys.stream(stream)
        cursor = self._cursors.get((stream, group), "0-0")
        reply = await self._reclaim(
            keys=[key, self.keys.stream_retries(stream, group)],
            args=[group, consumer, count, self.reclaim_idle_ms, cursor],
        )
        self._cursors[(stream, group)] = _text(reply[0])
        found: list[_Found] = [(_text(i), _fields(f), int(n)) for i, f, n in reply[1]]
        if len(found) < count:
            found += await self._read_new(key, group, consumer, count - len(found), block_ms)
        return await self._deliveries(stream, group, found)

    async def _read_new(
        self, key: str, group: str, consumer: str, count: int, block_ms: int
    ) -> list[_Found]:
        # BLOCK 0 would wait forever; no BLOCK at all returns at once.
        block = block_ms if block_ms > 0 else None
        reply: Any = await self.client.xreadgroup(
            group, consumer, {key: ">"}, count=count, block=block
        )
        return [(_text(i), _fields(f), 1) for _, entries in _batches(reply) for i, f in entries]

    async def _deliveries(self, stream: str, group: str, found: list[_Found]) -> list[Delivery]:
        deliveries = []
        for message_id, fields, count in found:
            payload = _payload(fields)
            event = decode_or_reason(payload)
            if isinstance(event, str):  # not an event: no consumer could handle it
                await self._bury(stream, group, message_id, count, event, payload)
            else:
                deliveries.append(Delivery(stream, message_id, event, count))
        return deliveries

    async def tail(
        self, stream: str, after: str = "$", *, count: int = 100, block_ms: int = 0
    ) -> tuple[str, list[Event]]:
        """Events after id ``after`` (``$``: after the newest now), without a group."""
        key = self.keys.stream(stream)
        if after == "$":
            # Pin "$" to a real id, so entries added before the next call are not
            # skipped the way a second XREAD "$" would skip them.
            newest: Any = await self.client.xrevrange(key, count=1)
            after = _text(newest[0][0]) if newest else "0-0"
        block = block_ms if block_ms > 0 else None
        reply: Any = await self.client.xread({key: after}, count=count, block=block)
        events: list[Event] = []
        for _, entries in _batches(reply):
            for entry_id, fields in entries:
                after = _text(entry_id)
                event = decode_or_reason(_payload(_fields(fields)))
                if isinstance(event, Event):
                    events.append(event)
        return after, events

    # -- settling -----------------------------------------------------------

    async def ack(self, delivery: Delivery, group: str) -> None:
        """Forget the message for ``group``: it will not be delivered again."""
        await self.client.xack(self.keys.stream(delivery.stream), group, delivery.message_id)

    async def touch(self, delivery: Delivery, group: str, consumer: str) -> None:
        """Restart the message's idle time: its handler is still working on it."""
        # JUSTID: reset the idle time without counting another delivery.
        await self.client.xclaim(
            self.keys.stream(delivery.stream),
            group,
            consumer,
            0,
            [delivery.message_id],
            justid=True,
        )

    async def retry_later(self, delivery: Delivery, group: str, delay_ms: int) -> None:
        """Hide the pending message for ``delay_ms``; it is then receivable again."""
        await self._retry(
            keys=[
                self.keys.stream(delivery.stream),
                self.keys.stream_retries(delivery.stream, group),
            ],
            args=[group, delivery.message_id, max(int(delay_ms), 0)],
        )

    async def dead_letter(self, delivery: Delivery, group: str, reason: str) -> None:
        """Move the message to the dead letters (only while it is still pending)."""
        await self._bury(
            delivery.stream,
            group,
            delivery.message_id,
            delivery.deliveries,
            reason,
            encode(delivery.event),
        )

    async def _bury(
        self, stream: str, group: str, message_id: str, deliveries: int, reason: str, payload: bytes
    ) -> None:
        letter: dict[str, bytes | str | int] = {
            "event": payload,
            "reason": reason,
            "stream": stream,
            "group": group,
            "message_id": message_id,
            "deliveries": deliveries,
            "failed": format_instant(datetime.now(UTC)),
        }
        args: list[bytes | str | int] = [group, message_id, self.maxlen]
        for name, value in letter.items():
            args += [name, value]
        await self._dead_letter(
            keys=[
                self.keys.stream(stream),
                self.keys.stream_retries(stream, group),
                self.keys.dead_letters(),
            ],
            args=args,
        )

    # -- inspecting ---------------------------------------------------------

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """The newest ``limit`` dead letters, oldest first."""
        if limit <= 0:
            return []
        entries: Any = await self.client.xrevrange(self.keys.dead_letters(), count=limit)
        letters = []
        for entry_id, raw in reversed(entries):
            fields = {k.decode(): v for k, v in _fields(raw).items()}
            payload = fields.get("event", b"")
            event = decode_or_reason(payload)
            letters.append(
                DeadLetter(
                    id=_text(entry_id),
                    stream=_text(fields.get("stream", b"")),
                    group=_text(fields.get("group", b"")),
                    message_id=_text(fields.get("message_id", b"")),
                    deliveries=int(fields.get("deliveries", b"0")),
                    reason=_text(fields.get("reason", b"")),
                    failed=_text(fields.get("failed", b"")),
                    event=event if isinstance(event, Event) else None,
                    payload=payload,
                )
            )
        return letters

    async def pending(self, stream: str, group: str) -> int:
        """How many messages of ``group`` are delivered but not yet acked (0: no group)."""
        try:
            summary = await self.client.xpending(self.keys.stream(stream), group)
        except ResponseError as error:
            if "NOGROUP" in str(error):
                return 0
            raise
        return int(summary["pending"])

    async def dead_letter_count(self) -> int:
        """How many dead letters are kept."""
        return int(await self.client.xlen(self.keys.dead_letters()))

    async def stream_length(self, stream: str) -> int:
        """How many entries ``stream`` holds (0 when it does not exist)."""
        return int(await self.client.xlen(self.keys.stream(stream)))

    async def close(self) -> None:
        """Close the client's connections."""
        await self.client.aclose()
