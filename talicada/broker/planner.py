"""The offer planner: free windows in a platform's calendar (docs/ARCHITECTURE.md §4.4). Pure
code: no I/O of its own (:func:`plan_reading` is handed the store's read).

Given what the request needs, what the platform can hold and what is already
in use, find up to N windows, earliest first, each with at least the minimum
cores and memory free for the whole booking (preparation, the available
window and release), offering as much as is free up to the maximum.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from talicada.broker.calendar import Entry, Slots, Steps, known_until
from talicada.constants import BOOKING_POINTS, USAGE_HEAD


@dataclass(frozen=True, slots=True)
class Demand:
    """What one request asks of one platform, in absolute times.

    ``earliest`` and ``latest`` bound when the available window may start.
    """

    cores: tuple[int, int]
    memory: tuple[int, int]
    duration: timedelta
    preparation: timedelta
    release: timedelta
    earliest: datetime
    latest: datetime


@dataclass(frozen=True, slots=True)
class Window:
    """One offer's place in the calendar."""

    preparing: datetime
    available: datetime
    releasing: datetime
    done: datetime
    entry: Entry


def search_range(demand: Demand, slots: Slots) -> tuple[int, int]:
    """The slots the planner may look at for ``demand``: read this much usage."""
    first = slots.floor(demand.earliest - demand.preparation)
    last = slots.ceil(demand.latest + demand.duration + demand.release) + 1
    return first, last


def plan(
    demand: Demand,
    usage: Steps,
    capacity: tuple[int, int],
    slots: Slots,
    platform: str,
    limit: int,
) -> list[Window]:
    """Up to ``limit`` windows for ``demand``, from a calendar read whole."""
    return plan_known(demand, usage, capacity, slots, platform, limit, known=None)[0]


async def plan_reading(
    read: Callable[[int, int, int], Awaitable[Steps]],
    demand: Demand,
    capacity: tuple[int, int],
    slots: Slots,
    platform: str,
    limit: int,
) -> list[Window]:
    """What :func:`plan` finds, reading only as much calendar as the windows need.

    ``read(start, last, most)`` returns the calendar over slots [start, last)
    with at most ``most`` change points after ``start`` (a store's ``usage``
    for one platform). Reading costs change points, so rather than the
    whole search range (every booking of the next day, on a busy platform)
    this reads a head of it, plans, and reads on, each read four times the
    last, only while a window reaches past what has been read.
    """
    first, last = search_range(demand, slots)
    most = USAGE_HEAD
    usage = await read(first, last, most)
    known = known_until(usage, last, most)
    while True:
        windows, complete = plan_known(demand, usage, capacity, slots, platform, limit, known)
        if complete or known >= last:
            return windows
        most *= 4
        more = await read(known, last, most)
        usage.extend(more)
        known = known_until(more, last, most)


def plan_known(
    demand: Demand,
    usage: Steps,
    capacity: tuple[int, int],
    slots: Slots,
    platform: str,
    limit: int,
    known: int | None,
) -> tuple[list[Window], bool]:
    """Up to ``limit`` windows for ``demand``; each later one starts after the last ends.

    Offers are spaced by the requested duration so they are real alternatives
    (now, or after that, …) rather than near-copies holding the same capacity.
    Each is planned on ``usage`` alone, never on top of its siblings: the
    offers of one set are alternatives, held as their envelope (per slot the
    most any of them holds, ``calendar.envelope_change``), and that fits
    exactly when each offer does. ``usage`` is not changed.

    ``usage`` may be only the head of the calendar: levels are known for the
    slots before ``known`` (None: the whole search range was read). The
    windows returned are then the first ones the whole calendar would give,
    and the flag says whether they are all of them; when it is False the
    search stopped at a window reaching past what is known, and a longer read
    must decide. So the planner reads as much calendar as its windows need,
    not the whole start interval (``service._plan_platform``).
    """
    windows: list[Window] = []
    start = demand.earliest
    while len(windows) < limit and start <= demand.latest:
        found = _first_fit(demand, usage, capacity, start, slots, known)
        if found is _UNKNOWN:
            return windows, False
        if found is None:
            break
        available, cores, memory = found
        first, last = booking(available, demand.preparation, demand.duration, demand.release, slots)
        entry = Entry(platform, first, last, cores, memory)
        windows.append(
            Window(
                preparing=available - demand.preparation,
                available=available,
                releasing=available + demand.duration,
                done=available + demand.duration + demand.release,
                entry=entry,
            )
        )
        start = available + max(demand.duration, slots.length)
    return windows, True


def booking(
    available: datetime,
    preparation: timedelta,
    duration: timedelta,
    release: timedelta,
    slots: Slots,
) -> tuple[int, int]:
    """The slots [first, last) a window starting at ``available`` books, rounded outwards."""
    return slots.floor(available - preparation), slots.ceil(available + duration + release)


#: What :func:`_first_fit` answers when the next candidate reaches past the calendar read.
_UNKNOWN: Final = (datetime.min, 0, 0)


def _first_fit(
    demand: Demand,
    usage: Steps,
    capacity: tuple[int, int],
    start: datetime,
    slots: Slots,
    known: int | None = None,
) -> tuple[datetime, int, int] | None:
    """The earliest start from ``start`` whose booking fits, and the size that fits there.

    Candidates are ``start`` itself (so the first offer begins as soon as
    preparation allows) and then slot boundaries. Rather than trying each
    boundary, a candidate that does not fit jumps past the last stretch of
    the calendar that blocked it: every start before that would overlap it
    too. So the search costs the stretches it passes, not the minutes.

    A booking may span at most ``constants.BOOKING_POINTS`` change points
    (holding it costs one store operation per point): a window spanning more
    is blocked up to the end of the stretch after which it would span few
    enough.

    A candidate whose booking reaches past ``known`` cannot be
    decided from the part of the calendar read: the answer is ``_UNKNOWN``.
    """
    room = (capacity[0] - demand.cores[0], capacity[1] - demand.memory[0])
    candidate = start
    while candidate <= demand.latest:
        low, high = booking(candidate, demand.preparation, demand.duration, demand.release, slots)
        if known is not None and high > known:
            return _UNKNOWN
        blocked_until: int | None = None
        peak_cores = peak_memory = 0
        segments = list(usage.segments(low, high))
        spanned = len(segments) - 1  # change points strictly inside the booking
        if spanned > BOOKING_POINTS:
            # Any start before this stretch ends keeps BOOKING_POINTS + 1 points.
            blocked_until = segments[spanned - BOOKING_POINTS - 1][1]
        for _, end, cores, memory in segments:
            if cores > room[0] or memory > room[1]:
                blocked_until = max(end, blocked_until or end)
            peak_cores, peak_memory = max(peak_cores, cores), max(peak_memory, memory)
        if blocked_until is None:
            return (
                candidate,
                min(capacity[0] - peak_cores, demand.cores[1]),
                min(capacity[1] - peak_memory, demand.memory[1]),
            )
        # The first slot boundary whose booking begins at or after the blockage.
        candidate = slots.start(slots.ceil(slots.start(blocked_until) + demand.preparation))
    return None
