"""The one way Talicada opens Redis: a bounded pool that waits briefly, and retries once.

* **Bounded pool** (``BlockingConnectionPool``): at most ``pool_size``
  connections per process. A command that finds none free waits up to
  ``pool_timeout`` seconds for one, then fails with ``ConnectionError("No
  connection available.")``, which the HTTP layer answers 503 with
  ``Retry-After`` (:mod:`talicada.broker.http`). redis-py's default pool
  instead fails at once past 100 connections, which under load was a 500.
* **One retry on a fresh connection**: a command that fails with a
  connection error or timeout is retried once, after a short jittered pause,
  on a new connection. A connection that Redis closed (a restart) is thus
  replaced transparently instead of failing the request it was lent to.
  ``health_check_interval`` also pings a connection idle that long before
  lending it, so most stale ones are found before a command is sent.
* **Socket timeouts**: connecting gives up after ``connect_timeout`` and a
  reply after ``socket_timeout``, so an unreachable Redis (a partition, a
  failover) turns into an error in seconds, never a hang.

Blocking stream reads (``XREADGROUP … BLOCK``) hold a connection each for at
most :data:`talicada.constants.STREAM_BLOCK`, well under ``socket_timeout``.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import EqualJitterBackoff
from redis.exceptions import TryAgainError

from talicada.redis_packing import fast_packing

#: Redis errors that mean "Redis is away or failing over", not "a bug": no
#: connection (Sentinel's MasterNotFoundError is one), a timeout, a replica
#: still loading, or read-only or asking to try again during a failover.
UNAVAILABLE: tuple[type[Exception], ...] = (
    aioredis.ConnectionError,
    aioredis.TimeoutError,
    aioredis.BusyLoadingError,
    aioredis.ReadOnlyError,
    TryAgainError,
)


@dataclass(frozen=True, slots=True)
class PoolOptions:
    """How many connections, and how long to wait for one and for Redis (seconds)."""

    pool_size: int = 64
    pool_timeout: float = 2.0
    connect_timeout: float = 2.0
    socket_timeout: float = 10.0
    health_check_interval: float = 15.0


def client(url: str, options: PoolOptions | None = None) -> aioredis.Redis:
    """A Redis client on ``url`` with the bounded pool and retry described above."""
    options = options or PoolOptions()
    retry = Retry(EqualJitterBackoff(cap=0.5, base=0.05), retries=1)
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=options.pool_size,
        timeout=options.pool_timeout,
        decode_responses=False,
        socket_connect_timeout=options.connect_timeout,
        socket_timeout=options.socket_timeout,
        socket_keepalive=True,
        health_check_interval=options.health_check_interval,
        retry=retry,
    )
    return fast_packing(aioredis.Redis(connection_pool=pool, retry=retry))


#: Error replies that say "not now" rather than "wrong": out of memory, no
#: master, loading, read-only replica, failover in progress, too few replicas.
_TRANSIENT_REPLIES = ("OOM", "MASTERDOWN", "LOADING", "READONLY", "TRYAGAIN", "NOREPLICAS")


def is_unavailable(error: BaseException) -> bool:
    """Whether ``error`` means Redis is unreachable or failing (answer 503, retry later)."""
    if isinstance(error, UNAVAILABLE):
        return True
    return isinstance(error, aioredis.ResponseError) and str(error).startswith(_TRANSIENT_REPLIES)
