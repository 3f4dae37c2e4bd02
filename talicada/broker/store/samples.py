"""Windows of recent step samples by history key: in memory, or in Redis (docs/ARCHITECTURE.md §10).

Each key keeps its newest ``window`` samples and nothing older, so history
costs a bounded amount per key however long the broker runs; a Redis key
unused for :data:`~talicada.constants.HISTORY_RETENTION` expires.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from talicada import constants
from talicada.broker.history import Sample, keys_for

if TYPE_CHECKING:
    from talicada.broker.store import Store

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Sample)


class SampleStore(Protocol):
    """Where the history of finished steps is kept."""

    async def append(self, samples: Sequence[Sample], window: int) -> None:
        """Add ``samples`` under each of their keys, keeping the newest ``window`` per key."""

    async def windows(self, keys: Sequence[str]) -> dict[str, list[Sample]]:
        """The window of each of ``keys``, newest first (empty for unknown keys)."""


class MemorySamples:
    """Sample windows in process memory (embedded mode)."""

    def __init__(self) -> None:
        self._windows: dict[str, deque[Sample]] = {}

    async def append(self, samples: Sequence[Sample], window: int) -> None:
        """See :meth:`SampleStore.append`."""
        for sample in samples:
            for key in keys_for(sample):
                kept = self._windows.get(key)
                if kept is None or kept.maxlen != window:
                    kept = self._windows[key] = deque(kept or (), maxlen=window)
                kept.appendleft(sample)

    async def windows(self, keys: Sequence[str]) -> dict[str, list[Sample]]:
        """See :meth:`SampleStore.windows`."""
        return {key: list(self._windows.get(key, ())) for key in keys}


class RedisSamples:
    """Sample windows as capped Redis lists, one per key; one round trip per call."""

    def __init__(self, client: Any, keys: constants.Keys) -> None:
        self.client = client
        self.keys = keys

    async def append(self, samples: Sequence[Sample], window: int) -> None:
        """See :meth:`SampleStore.append`."""
        ttl = int(constants.HISTORY_RETENTION.total_seconds())
        async with self.client.pipeline(transaction=False) as pipe:
            for sample in samples:
                encoded = _encoder.encode(sample)
                for key in keys_for(sample):
                    name = self.keys.steps(key)
                    pipe.lpush(name, encoded)
                    pipe.ltrim(name, 0, window - 1)
                    pipe.expire(name, ttl)
            await pipe.execute()

    async def windows(self, keys: Sequence[str]) -> dict[str, list[Sample]]:
        """See :meth:`SampleStore.windows`."""
        if not keys:
            return {}
        async with self.client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.lrange(self.keys.steps(key), 0, -1)
            found = await pipe.execute()
        return {
            key: [_decoder.decode(raw) for raw in entries]
            for key, entries in zip(keys, found, strict=True)
        }


def samples_for(store: Store) -> SampleStore:
    """The sample store beside ``store``: the same Redis, or process memory."""
    from talicada.broker.store.redis import RedisStore

    if isinstance(store, RedisStore):
        return RedisSamples(store.client, store.keys)
    return MemorySamples()
