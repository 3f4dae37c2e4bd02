"""Calendar arithmetic: time in whole slots, and the usage of a platform over slots.

A platform's calendar is two counters per slot (cores and GiB in use). A hold
or booking adds its size to every slot it touches, rounded outwards, so
checking a window costs one look per slot whatever the number of bookings.
Pure code: the stores keep the counters, this module does the sums.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta


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
    """A hold or booking of ``cores`` and ``memory`` over slots [first, last)."""

    platform: str
    first: int
    last: int
    cores: int
    memory: int

    def encode(self, state: str) -> str:
        """The compact form the Redis calendar keeps: ``state|first|last|cores|memory``."""
        return f"{state}|{self.first}|{self.last}|{self.cores}|{self.memory}"

    @classmethod
    def decode(cls, platform: str, text: str) -> tuple[str, Entry]:
        """The state and entry of an encoded calendar entry."""
        state, first, last, cores, memory = text.split("|")
        return state, cls(platform, int(first), int(last), int(cores), int(memory))


class Usage:
    """Cores and memory in use per slot over [first, last); zero outside that range."""

    __slots__ = ("cores", "first", "last", "memory")

    def __init__(self, first: int, cores: list[int], memory: list[int]) -> None:
        self.first = first
        self.last = first + len(cores)
        self.cores = cores
        self.memory = memory

    @classmethod
    def empty(cls, first: int, last: int) -> Usage:
        """No use at all over [first, last)."""
        return cls(first, [0] * (last - first), [0] * (last - first))

    def add(self, entry: Entry) -> None:
        """Count ``entry`` in this view (the planner does this for its own offers)."""
        for slot in range(max(entry.first, self.first), min(entry.last, self.last)):
            self.cores[slot - self.first] += entry.cores
            self.memory[slot - self.first] += entry.memory

    def peak(self, first: int, last: int) -> tuple[int, int]:
        """Most cores and most memory in use in any slot of [first, last)."""
        low, high = max(first, self.first) - self.first, min(last, self.last) - self.first
        if low >= high:
            return 0, 0
        return max(self.cores[low:high]), max(self.memory[low:high])
