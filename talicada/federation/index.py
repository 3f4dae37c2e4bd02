"""Which site owns each offer an aggregator handed out, and each of its offer sets.

The records are small and written once; they let any replica of an
aggregator forward a call on an offer to the site that made it, and make
"one accepted offer per offer set" hold across sites (:meth:`Index.claim`).
Redis when the broker has Redis, process memory when embedded. Records
follow msgspec's schema-evolution rules: new fields get defaults.
"""

from __future__ import annotations

from typing import Protocol

import msgspec
import redis.asyncio as aioredis

from talicada.constants import Keys
from talicada.schema.messages import MessageItem

#: How long the records are kept, seconds: longer than any session lasts.
RECORD_TTL = 40 * 24 * 3600


class RemoteOfferSet(msgspec.Struct, kw_only=True):
    """An aggregator's offer set: where its offers came from and what was said.

    ``sites`` maps each site asked to the uuid of its own offer set; ``local``
    is this broker's own offer set when it also has local platforms. Times are
    epoch milliseconds; ``ttl`` is how long a NO stays true (seconds).
    """

    uuid: str
    owner: str
    dialect: str
    created: int
    expires: int
    result: str
    offers: list[str] = msgspec.field(default_factory=list)
    messages: list[MessageItem] = msgspec.field(default_factory=list)
    sites: dict[str, str] = msgspec.field(default_factory=dict)
    local: str | None = None
    ttl: float = 0.0


class RemoteSession(msgspec.Struct, kw_only=True):
    """An offer (and the session it becomes) that ``site`` owns under the same uuid.

    ``site`` is None for an offer of this broker's own platforms in a merged set.
    """

    uuid: str
    site: str | None
    offerset: str
    owner: str
    dialect: str


class Index(Protocol):
    """Where an aggregator keeps its records."""

    async def put_offerset(self, record: RemoteOfferSet) -> None:
        """Save an offer set record."""

    async def offerset(self, uuid: str) -> RemoteOfferSet | None:
        """The offer set record, if this broker made it."""

    async def add_sessions(self, records: list[RemoteSession]) -> list[bool]:
        """Save each record unless its uuid is taken; True for each one saved."""

    async def session(self, uuid: str) -> RemoteSession | None:
        """The record of an offer handed out by this aggregator, if it is one."""

    async def claim(self, offerset: str, offer: str) -> str:
        """Mark ``offer`` accepted in ``offerset`` unless another one is; the one that is."""

    async def unclaim(self, offerset: str, offer: str) -> None:
        """Undo :meth:`claim` of ``offer`` (its site refused the acceptance)."""


_ENCODER = msgspec.msgpack.Encoder()
_OFFERSET = msgspec.msgpack.Decoder(RemoteOfferSet)
_SESSION = msgspec.msgpack.Decoder(RemoteSession)


class MemoryIndex:
    """The index in process memory (embedded mode; lost on restart)."""

    def __init__(self) -> None:
        self._offersets: dict[str, bytes] = {}
        self._sessions: dict[str, bytes] = {}
        self._claims: dict[str, str] = {}

    async def put_offerset(self, record: RemoteOfferSet) -> None:
        """Save an offer set record."""
        self._offersets[record.uuid] = _ENCODER.encode(record)

    async def offerset(self, uuid: str) -> RemoteOfferSet | None:
        """The offer set record, if this broker made it."""
        raw = self._offersets.get(uuid)
        return _OFFERSET.decode(raw) if raw is not None else None

    async def add_sessions(self, records: list[RemoteSession]) -> list[bool]:
        """Save each record unless its uuid is taken; True for each one saved."""
        added = []
        for record in records:
            fresh = record.uuid not in self._sessions
            if fresh:
                self._sessions[record.uuid] = _ENCODER.encode(record)
            added.append(fresh)
        return added

    async def session(self, uuid: str) -> RemoteSession | None:
        """The record of an offer handed out by this aggregator, if it is one."""
        raw = self._sessions.get(uuid)
        return _SESSION.decode(raw) if raw is not None else None

    async def claim(self, offerset: str, offer: str) -> str:
        """Mark ``offer`` accepted in ``offerset`` unless another one is; the one that is."""
        return self._claims.setdefault(offerset, offer)

    async def unclaim(self, offerset: str, offer: str) -> None:
        """Undo :meth:`claim` of ``offer``."""
        if self._claims.get(offerset) == offer:
            del self._claims[offerset]


def _bytes(value: bytes | str | None) -> bytes | None:
    return value.encode() if isinstance(value, str) else value


class RedisIndex:
    """The index in Redis, shared by every replica (one string per record)."""

    def __init__(self, client: aioredis.Redis, prefix: str) -> None:
        self.client = client
        self.keys = Keys(prefix)

    async def put_offerset(self, record: RemoteOfferSet) -> None:
        """Save an offer set record."""
        key = self.keys.federation("offerset", record.uuid)
        await self.client.set(key, _ENCODER.encode(record), ex=RECORD_TTL)

    async def offerset(self, uuid: str) -> RemoteOfferSet | None:
        """The offer set record, if this broker made it."""
        raw = _bytes(await self.client.get(self.keys.federation("offerset", uuid)))
        return _OFFERSET.decode(raw) if raw is not None else None

    async def add_sessions(self, records: list[RemoteSession]) -> list[bool]:
        """Save each record unless its uuid is taken; True for each one saved."""
        async with self.client.pipeline(transaction=False) as pipe:
            for record in records:
                key = self.keys.federation("session", record.uuid)
                pipe.set(key, _ENCODER.encode(record), nx=True, ex=RECORD_TTL)
            replies = await pipe.execute()
        return [bool(reply) for reply in replies]

    async def session(self, uuid: str) -> RemoteSession | None:
        """The record of an offer handed out by this aggregator, if it is one."""
        raw = _bytes(await self.client.get(self.keys.federation("session", uuid)))
        return _SESSION.decode(raw) if raw is not None else None

    async def claim(self, offerset: str, offer: str) -> str:
        """Mark ``offer`` accepted in ``offerset`` unless another one is; the one that is."""
        key = self.keys.federation("accepted", offerset)
        # SET NX GET is Redis 7.0: set when absent, and say what was there.
        previous = await self.client.set(key, offer, nx=True, get=True, ex=RECORD_TTL)
        if previous is None:
            return offer
        return previous.decode() if isinstance(previous, bytes) else str(previous)

    async def unclaim(self, offerset: str, offer: str) -> None:
        """Undo :meth:`claim` of ``offer`` (only if it is still the claimed one)."""
        key = self.keys.federation("accepted", offerset)
        held = await self.client.get(key)
        if held is not None and (held.decode() if isinstance(held, bytes) else held) == offer:
            await self.client.delete(key)
