"""Every Redis key name and every timing default, in one place.

Keys of one session share the ``{<uuid>}`` hash tag and keys of one platform's
calendar share ``{cal:<platform>}``, so each group lands in one Redis Cluster
slot. The prefix is configurable (tests give every test its own) and is always
the first element of a key, so ``SCAN MATCH <prefix>:*`` finds everything a
deployment owns.
"""

from __future__ import annotations

from datetime import timedelta

# -- timing defaults ------------------------------------------------------

#: How long an offer holds its capacity before it expires (DESIGN §4.5).
OFFER_TTL = timedelta(minutes=5)
#: Offers per request unless configured otherwise (DESIGN §4.4).
MAX_OFFERS = 4
#: Session length when the request does not ask for one.
DEFAULT_DURATION = timedelta(hours=1)
#: How far ahead the planner looks when the request gives no start interval.
DEFAULT_START_WINDOW = timedelta(hours=24)
#: Calendar resolution. Bookings are rounded outwards to whole slots so the
#: calendar is a fixed number of counters per hour, whatever the booking count.
CALENDAR_SLOT = timedelta(minutes=1)
#: How long calendar counters are kept after their slot has passed (history
#: for operators; the planner never reads the past).
CALENDAR_RETENTION = timedelta(days=2)
#: How often each broker replica looks for due timers (offer expiry). An
#: expired offer becomes EXPIRED within this period plus one Redis round trip.
TIMER_POLL = timedelta(milliseconds=200)
#: A replica that claims a due timer has this long to apply it before another
#: replica may claim it again (covers a replica dying mid-way).
TIMER_LEASE = timedelta(seconds=30)
#: Longest a GET /sessions/{uuid}?wait=S long poll may wait.
MAX_LONG_POLL = timedelta(seconds=60)
#: Finished sessions are kept this long (their record is the provenance).
SESSION_RETENTION = timedelta(days=30)
#: How many times a request is re-planned when a concurrent client took the
#: capacity between reading the calendar and holding it.
PLAN_ATTEMPTS = 5

# -- Redis keys -----------------------------------------------------------


class Keys:
    """Builds every Redis key the broker uses, under one configurable prefix."""

    __slots__ = ("prefix",)

    def __init__(self, prefix: str = "talicada") -> None:
        self.prefix = prefix.rstrip(":")

    def session(self, uuid: str) -> str:
        """Hash: ``phase``, ``doc`` (msgpack record), ``owner``, ``created``…"""
        return f"{self.prefix}:session:{{{uuid}}}"

    def history(self, uuid: str) -> str:
        """List of JSON transition records of one session, oldest first."""
        return f"{self.prefix}:session:{{{uuid}}}:history"

    def offerset(self, uuid: str) -> str:
        """Hash: ``doc`` (msgpack OfferSet record), ``accepted`` (offer uuid)."""
        return f"{self.prefix}:offerset:{{{uuid}}}"

    def owner_index(self, owner: str) -> str:
        """Sorted set of one owner's session uuids scored by creation time (ms)."""
        return f"{self.prefix}:owner:{{{owner}}}:sessions"

    def calendar_usage(self, platform: str) -> str:
        """Hash: ``c<slot>`` and ``m<slot>`` → cores and GiB in use in that slot."""
        return f"{self.prefix}:calendar:{{cal:{platform}}}:usage"

    def calendar_entries(self, platform: str) -> str:
        """Hash: session uuid → ``state,first_slot,last_slot,cores,memory``."""
        return f"{self.prefix}:calendar:{{cal:{platform}}}:entries"

    def timers(self) -> str:
        """Sorted set of due-time events (``expire:<uuid>``) scored by due time (ms)."""
        return f"{self.prefix}:timers"
