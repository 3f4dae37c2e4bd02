"""Calendar arithmetic: time in whole slots, and the usage of a platform over slots.

A platform's calendar is a step function of change points (:class:`Steps`):
the cores and GiB in use change only where a hold or booking begins or ends.
Holding, accepting, releasing and resizing touch the points inside the
window, so their cost grows with the bookings that overlap it and never with
its length. Time is counted in whole slots, bookings rounded outwards. Pure
code: the stores keep the points, this module does the sums.

The offers of one offer set are alternatives (at most one is ever accepted),
so their holds on a platform count together as their envelope
(:func:`envelope_change`, :meth:`Steps.reshape`): per slot the most cores and,
apart, the most memory any of them holds, never the sum. Bookings count alone.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from itertools import pairwise


@dataclass(frozen=True, slots=True)
class Slots:
    """Converts between instants and slot numbers (slots since the epoch)."""

    seconds: int

    def floor(self, instant: datetime) -> int:
        """The slot containing ``instant``."""
        return math.floor(instant.timestamp() / self.seconds)

    def ceil(self, instant: datetime) -> int:
        """The first slot starting at or after ``instant``."""
        return math.ceil(instant.timestamp() / self.seconds)

    def start(self, slot: int) -> datetime:
        """The instant ``slot`` begins."""
        return datetime.fromtimestamp(slot * self.seconds, UTC)

    @property
    def length(self) -> timedelta:
        """How long one slot lasts."""
        return timedelta(seconds=self.seconds)


@dataclass(frozen=True, slots=True)
class Entry:
    """A hold or booking of ``cores`` and ``memory`` over slots [first, last).

    ``offerset`` names the offer set of a hold: the holds of one set count as
    their envelope. It is empty for bookings, and for holds written before
    sets were recorded (each of those counts alone, as it was counted).
    """

    platform: str
    first: int
    last: int
    cores: int
    memory: int
    offerset: str = ""

    def encode(self, state: str) -> str:
        """The compact form the Redis calendar keeps: ``state|first|last|cores|memory``,
        then ``|offerset`` when there is one (``lua/common.lua`` reads the same)."""
        text = f"{state}|{self.first}|{self.last}|{self.cores}|{self.memory}"
        return f"{text}|{self.offerset}" if self.offerset else text

    @classmethod
    def decode(cls, platform: str, text: str) -> tuple[str, Entry]:
        """The state and entry of an encoded calendar entry (with or without its set)."""
        state, first, last, cores, memory, *offerset = text.split("|")
        entry = cls(platform, int(first), int(last), int(cores), int(memory), *offerset)
        return state, entry


def _most(entries: Sequence[Entry], slot: int) -> tuple[int, int]:
    """The most cores and, apart, the most memory any of ``entries`` holds in ``slot``."""
    cores = memory = 0
    for entry in entries:
        if entry.first <= slot < entry.last:
            cores, memory = max(cores, entry.cores), max(memory, entry.memory)
    return cores, memory


def envelope_change(before: Sequence[Entry], after: Sequence[Entry]) -> list[Entry]:
    """Where the envelope of ``after`` differs from the envelope of ``before``, and by
    how much: stretches in slot order whose cores and memory are signed differences.

    The envelope of an offer set's holds is, per slot, the most cores and the
    most memory (each on its own, which may be more than any one offer, never
    less) that any of them holds: what the set may ever need at once, since at
    most one of its offers is accepted. It has a point where some hold begins
    or ends, so this costs the square of a few offers, not the slots.
    ``lua/common.lua`` (``envelope_change``) computes the same.
    """
    bounds = sorted({slot for entry in (*before, *after) for slot in (entry.first, entry.last)})
    stretches: list[Entry] = []
    for start, end in pairwise(bounds):
        was, now = _most(before, start), _most(after, start)
        if now == was:
            continue
        cores, memory = now[0] - was[0], now[1] - was[1]
        last = stretches[-1] if stretches else None
        if last is not None and last.last == start and (last.cores, last.memory) == (cores, memory):
            stretches[-1] = replace(last, last=end)
        else:
            stretches.append(Entry("", start, end, cores, memory))
    return stretches


class Steps:
    """Cores and memory in use over time, as a step function of change points.

    ``points[i]`` is a slot from which ``cores[i]`` and ``memory[i]`` are in
    use until the next point; before the first point nothing is. Adding or
    removing a booking touches only the points inside it (two new ones at
    most), so its cost grows with the bookings it overlaps, never with its
    length: a thirty-day session costs what a ten-minute one does. The Redis
    store keeps the same points in a sorted set (``lua/common.lua``).
    """

    __slots__ = ("cores", "memory", "points")

    def __init__(
        self,
        points: list[int] | None = None,
        cores: list[int] | None = None,
        memory: list[int] | None = None,
    ) -> None:
        self.points = points or []
        self.cores = cores or []
        self.memory = memory or []

    @classmethod
    def empty(cls) -> Steps:
        """Nothing in use at any time."""
        return cls()

    def copy(self) -> Steps:
        """An independent copy (the planner adds its own offers to one)."""
        return Steps(list(self.points), list(self.cores), list(self.memory))

    def level(self, slot: int) -> tuple[int, int]:
        """Cores and memory in use during ``slot``."""
        index = bisect.bisect_right(self.points, slot) - 1
        return (self.cores[index], self.memory[index]) if index >= 0 else (0, 0)

    def segments(self, first: int, last: int) -> Iterator[tuple[int, int, int, int]]:
        """``(start, end, cores, memory)`` for each constant stretch of [first, last)."""
        if first >= last:
            return
        index = bisect.bisect_right(self.points, first) - 1
        start = first
        while start < last:
            cores, memory = (self.cores[index], self.memory[index]) if index >= 0 else (0, 0)
            following = index + 1
            end = self.points[following] if following < len(self.points) else last
            end = min(end, last)
            yield start, end, cores, memory
            start, index = end, following

    def peak(self, first: int, last: int) -> tuple[int, int]:
        """Most cores and most memory in use in any slot of [first, last)."""
        cores = memory = 0
        for _, _, used_cores, used_memory in self.segments(first, last):
            cores, memory = max(cores, used_cores), max(memory, used_memory)
        return cores, memory

    def fits(self, entry: Entry, capacity: tuple[int, int]) -> bool:
        """Whether ``entry`` fits under ``capacity`` on top of what is in use."""
        cores, memory = self.peak(entry.first, entry.last)
        return cores + entry.cores <= capacity[0] and memory + entry.memory <= capacity[1]

    def add(self, entry: Entry, sign: int = 1) -> None:
        """Count ``entry`` in (``sign`` 1) or out (-1)."""
        first, last = entry.first, entry.last
        if first >= last:
            return
        start = self._split(first)
        end = self._split(last)
        for index in range(start, end):
            self.cores[index] += sign * entry.cores
            self.memory[index] += sign * entry.memory
        # Only the two ends can have become redundant: inside, neighbours moved together.
        self._tidy(end)
        self._tidy(start)

    def reshape(
        self,
        before: Sequence[Entry],
        after: Sequence[Entry],
        capacity: tuple[int, int] | None = None,
    ) -> bool:
        """Count the envelope of ``after`` instead of the envelope of ``before``
        (one offer set's holds, before and after a change; see :func:`envelope_change`).

        With ``capacity``, only when every stretch where it grows has room
        there (False, nothing changed, when one has not). A hold leaving its
        set never makes the envelope grow, so it needs no room.
        """
        stretches = envelope_change(before, after)
        if capacity is not None:
            for stretch in stretches:
                grows = replace(stretch, cores=max(stretch.cores, 0), memory=max(stretch.memory, 0))
                if (grows.cores or grows.memory) and not self.fits(grows, capacity):
                    return False
        for stretch in stretches:
            self.add(stretch)
        return True

    def _split(self, slot: int) -> int:
        """Make sure a point starts at ``slot``; its index."""
        index = bisect.bisect_left(self.points, slot)
        if index < len(self.points) and self.points[index] == slot:
            return index
        cores, memory = (self.cores[index - 1], self.memory[index - 1]) if index else (0, 0)
        self.points.insert(index, slot)
        self.cores.insert(index, cores)
        self.memory.insert(index, memory)
        return index

    def _tidy(self, index: int) -> None:
        """Drop point ``index`` when it changes nothing from the one before it."""
        if index >= len(self.points):
            return
        before = (self.cores[index - 1], self.memory[index - 1]) if index else (0, 0)
        if (self.cores[index], self.memory[index]) == before:
            del self.points[index], self.cores[index], self.memory[index]

    def window(self, first: int, last: int, most: int | None = None) -> Steps:
        """The part over [first, last): the level at ``first`` and the points after
        it, at most ``most`` of them (the head of the window: see :func:`known_until`)."""
        view = Steps()
        for start, _, cores, memory in self.segments(first, last):
            if most is not None and len(view.points) > most:
                break
            view.points.append(start)
            view.cores.append(cores)
            view.memory.append(memory)
        return view

    def extend(self, later: Steps) -> None:
        """Append ``later``, read from this one's last point on (its first point repeats it)."""
        skip = 1 if self.points and later.points and later.points[0] == self.points[-1] else 0
        self.points += later.points[skip:]
        self.cores += later.cores[skip:]
        self.memory += later.memory[skip:]

    def per_slot(self, first: int, last: int) -> tuple[list[int], list[int]]:
        """Cores and memory slot by slot over [first, last) (for tests and tools only:
        its cost is the number of slots)."""
        cores = [self.level(slot)[0] for slot in range(first, last)]
        memory = [self.level(slot)[1] for slot in range(first, last)]
        return cores, memory


#: What the stores return for a range of a calendar: the same step function.
Usage = Steps


def known_until(head: Steps, last: int, most: int) -> int:
    """Up to which slot ``head``, read over [first, last) with at most ``most``
    change points after ``first``, knows the levels: ``last`` when the read got
    every point, else the last point read (where the next, unread, may follow)."""
    if len(head.points) - 1 < most:
        return last
    return head.points[-1]
