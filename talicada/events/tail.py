"""``talicada events tail``: follow the event streams, for operators (docs/ARCHITECTURE.md §9).

Prints one JSON line per event (stream id, stream, and the event), filtered by
session and type. ``--dead-letters`` lists the dead-letter stream instead.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import TextIO

import msgspec

from talicada.events.bus import Bus

_json = msgspec.json.Encoder()

#: Where lines go when not to a text stream (the broker's ``GET /events``).
Emit = Callable[[str], Awaitable[object]]


async def _write(line: str, out: TextIO, emit: Emit | None) -> None:
    if emit is not None:
        await emit(line)
        return
    out.write(line)
    out.flush()


async def follow(
    bus: Bus,
    streams: Sequence[str],
    *,
    session: str | None = None,
    types: Sequence[str] = (),
    from_start: bool = False,
    count: int | None = None,
    out: TextIO = sys.stdout,
    stop: asyncio.Event | None = None,
    emit: Emit | None = None,
) -> int:
    """Print matching events until ``count`` were printed or ``stop`` is set."""
    cursors = dict.fromkeys(streams, "0-0" if from_start else "$")
    printed = 0
    while (stop is None or not stop.is_set()) and (count is None or printed < count):
        for stream in streams:
            block = 1000 if len(streams) == 1 else 100
            cursors[stream], events = await bus.tail(stream, cursors[stream], block_ms=block)
            for event in events:
                if session and event.session != session:
                    continue
                if types and event.type not in types:
                    continue
                line = {"stream": stream, "event": event}
                await _write(_json.encode(line).decode() + "\n", out, emit)
                printed += 1
                if count is not None and printed >= count:
                    return printed
    return printed


async def dead_letters(
    bus: Bus, limit: int, out: TextIO = sys.stdout, emit: Emit | None = None
) -> int:
    """Print the newest ``limit`` dead letters, oldest first."""
    letters = await bus.dead_letters(limit=limit)
    for letter in letters:
        line = {
            "stream": letter.stream,
            "group": letter.group,
            "deliveries": letter.deliveries,
            "reason": letter.reason,
            "failed": letter.failed,
            "event": letter.event,
        }
        await _write(_json.encode(line).decode() + "\n", out, emit)
    return len(letters)
