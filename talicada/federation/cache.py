"""Answers kept for as long as their sender said they stay true. Pure code.

A site's capabilities are kept for their ``Cache-Control: max-age`` (at most
``[federation] capabilities_ttl``), and each NO a site gave for its ``ttl``,
so a request a site can never meet is not sent to it again until the answer
may have changed. Time comes from the broker's clock, so tests move it.
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Generic, TypeVar

from talicada.schema import iso8601

T = TypeVar("T")
Clock = Callable[[], datetime]

#: Entries one cache keeps; the oldest go first, so memory stays bounded.
MAX_ENTRIES = 10_000

_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?([0-9]{1,9})\"?\s*(?:,|$)", re.IGNORECASE)


class TtlCache(Generic[T]):
    """Values that each expire after their own number of seconds."""

    def __init__(self, clock: Clock, *, limit: int = MAX_ENTRIES) -> None:
        self.clock = clock
        self.limit = limit
        self._entries: OrderedDict[str, tuple[float, T]] = OrderedDict()

    def _now(self) -> float:
        return self.clock().timestamp()

    def get(self, key: str) -> T | None:
        """The value under ``key`` while it is fresh, else None."""
        found = self._entries.get(key)
        if found is None:
            return None
        until, value = found
        if self._now() >= until:
            del self._entries[key]
            return None
        return value

    def remaining(self, key: str) -> float:
        """Seconds ``key`` stays fresh (0 when absent or stale)."""
        found = self._entries.get(key)
        return max(0.0, found[0] - self._now()) if found else 0.0

    def put(self, key: str, value: T, seconds: float) -> None:
        """Keep ``value`` for ``seconds`` (not at all when 0 or less)."""
        if seconds <= 0:
            self._entries.pop(key, None)
            return
        self._entries[key] = (self._now() + seconds, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.limit:
            self._entries.popitem(last=False)


def max_age(headers: Mapping[str, str]) -> float | None:
    """The ``max-age`` of a ``Cache-Control`` header, in seconds, or None."""
    found = _MAX_AGE.search(headers.get("Cache-Control", ""))
    return float(found.group(1)) if found else None


def answer_ttl(doc: Mapping[str, object], headers: Mapping[str, str]) -> float | None:
    """How long an answer stays true: its body's ``ttl`` (ISO 8601), else ``max-age``."""
    text = doc.get("ttl")
    if isinstance(text, str):
        try:
            return iso8601.parse_duration(text).total_seconds()
        except iso8601.Iso8601Error:
            pass
    return max_age(headers)


def request_key(*parts: str | bytes) -> str:
    """A key for "the same request": a digest of everything the answer depends on."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
        digest.update(b"\0")
    return digest.hexdigest()
