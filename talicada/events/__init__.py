"""Lifecycle events: the envelope, the Bus protocol, Redis Streams and in-memory buses.

One module per concept: :mod:`.envelope` (the :class:`Event` and its framing),
:mod:`.bus` (the :class:`Bus` protocol, :class:`Delivery`, :class:`DeadLetter`,
:func:`backoff`), :mod:`.redis_bus` and :mod:`.memory_bus` (its two
implementations, held to one behavioural test-suite) and :mod:`.consumer` (the
consume loop every worker runs, with its one acknowledgement point).
"""

from talicada.events.bus import Bus, DeadLetter, Delivery, backoff
from talicada.events.consumer import Consumer, ConsumerStats
from talicada.events.envelope import Event, decode, encode
from talicada.events.memory_bus import MemoryBus
from talicada.events.redis_bus import RedisBus

__all__ = [
    "Bus",
    "Consumer",
    "ConsumerStats",
    "DeadLetter",
    "Delivery",
    "Event",
    "MemoryBus",
    "RedisBus",
    "backoff",
    "decode",
    "encode",
]
