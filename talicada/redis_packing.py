"""Pack Redis commands with hiredis's C packer instead of redis-py's Python one.

redis-py's asyncio connections build every command in Python, argument by
argument; the hold script of one offer set has about eighty, and packing them
was the broker's single largest own-time cost under load (docs/PERFORMANCE.md).
redis-py's synchronous client already packs with hiredis when it is installed;
this gives the asyncio client the same, for every connection a client's pool
makes. Arguments hiredis does not take fall back to redis-py's packer, so its
errors stay the same.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import redis.asyncio as aioredis
from redis.utils import HIREDIS_AVAILABLE

if HIREDIS_AVAILABLE:
    import hiredis


@cache
def _packing(base: type[Any]) -> type[Any]:
    class HiredisPacking(base):  # type: ignore[misc]
        def pack_command(self, *args: Any) -> list[bytes]:
            first = args[0]
            # Literal words in the command name ('CONFIG GET') go separately.
            if isinstance(first, str):
                if " " in first:
                    return super().pack_command(*args)  # type: ignore[no-any-return]
            elif not isinstance(first, bytes) or b" " in first:
                return super().pack_command(*args)  # type: ignore[no-any-return]
            for arg in args:
                # redis-py refuses these with its own message; hiredis would not.
                if arg is None or isinstance(arg, bool | bytearray | memoryview):
                    return super().pack_command(*args)  # type: ignore[no-any-return]
            try:
                return [hiredis.pack_command(args)]
            except TypeError:
                return super().pack_command(*args)  # type: ignore[no-any-return]

    HiredisPacking.__name__ = HiredisPacking.__qualname__ = f"Hiredis{base.__name__}"
    return HiredisPacking


def fast_packing(client: aioredis.Redis) -> aioredis.Redis:
    """``client`` with its pool making connections that pack with hiredis (when installed)."""
    pool = client.connection_pool
    base = getattr(pool, "connection_class", None)
    if HIREDIS_AVAILABLE and base is not None and not base.__name__.startswith("Hiredis"):
        pool.connection_class = _packing(base)
    return client
