"""Every Redis key name and every timing default, in one place.

Keys of one session share the ``{<uuid>}`` hash tag and keys of one platform's
calendar share ``{cal:<platform>}``, so each group lands in one Redis Cluster
slot. The prefix is configurable (tests give every test its own) and is always
the first element of a key, so ``SCAN MATCH <prefix>:*`` finds everything a
deployment owns.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Literal, get_args

# -- timing defaults ------------------------------------------------------

#: How long an offer holds its capacity before it expires (docs/ARCHITECTURE.md §4.5).
OFFER_TTL = timedelta(minutes=5)
#: Offers per request unless configured otherwise (docs/ARCHITECTURE.md §4.4).
MAX_OFFERS = 4
#: Session length when the request does not ask for one.
DEFAULT_DURATION = timedelta(hours=1)
#: How far ahead the planner looks when the request gives no start interval.
DEFAULT_START_WINDOW = timedelta(hours=24)
#: Calendar resolution. Bookings are rounded outwards to whole slots so the
#: calendar is a fixed number of counters per hour, whatever the booking count.
CALENDAR_SLOT = timedelta(minutes=1)
#: How often each broker replica looks for due timers (offer expiry). An
#: expired offer becomes EXPIRED within this period plus one Redis round trip.
TIMER_POLL = timedelta(milliseconds=200)
#: A replica that claims a due timer has this long to apply it before another
#: replica may claim it again (covers a replica dying mid-way).
TIMER_LEASE = timedelta(seconds=30)
#: How long a release may take before the session is ended without it (its
#: live components FAILED), so a lost release can never hold a booking.
RELEASE_DEADLINE = timedelta(minutes=10)
#: Longest a GET /sessions/{uuid}?wait=S long poll may wait.
MAX_LONG_POLL = timedelta(seconds=60)
#: Long polls and event streams one broker replica serves at once; more get 503.
MAX_WATCHERS = 2000
#: Finished sessions are kept this long (their record is the provenance).
SESSION_RETENTION = timedelta(days=30)
#: How long a request keeps re-planning when another replica took the capacity
#: between its reading the calendar and holding it (each retry sees the new
#: state, so it only fails to settle under a sustained storm); then 503.
PLAN_DEADLINE = timedelta(seconds=10)
#: Most calendar change points (starts and ends of other bookings) one offer's
#: booking may span. Holding or growing a booking costs a Lua call per change
#: point it spans, and every replica and worker waits while a script runs:
#: this keeps each script to about a millisecond. The planner looks for
#: windows under this; the scripts refuse beyond twice it (their own safety net,
#: never reached by what the planner offers).
BOOKING_POINTS = 128
#: Most change points one read of a calendar returns (the store reads in pages).
USAGE_PAGE = 512
#: Change points the planner reads first; it reads on (four times as many each
#: time) only while a window it considers reaches past them. A bit more than
#: one booking may span, so a short request on a busy calendar needs one read.
USAGE_HEAD = 2 * BOOKING_POINTS
#: A history key nobody added a sample to for this long is dropped: its
#: platform, image or source is presumably gone, and its samples too old to trust.
HISTORY_RETENTION = timedelta(days=30)
#: History keys whose summaries one broker replica keeps in memory at most.
HISTORY_CACHE = 4096
#: Approximate length cap of every event stream (``XADD … MAXLEN ~``), entries.
#: Bounds Redis memory; a backlog longer than this would be trimmed unread (and
#: its pending entries dropped on reclaim), so it must exceed any plausible backlog.
STREAM_MAXLEN = 100_000
#: Deliveries of one message (first run included) before it is dead-lettered and
#: its component FAILED: enough for transient faults, few enough that a poison
#: message stops costing work within a minute (docs/ARCHITECTURE.md §6).
MAX_DELIVERIES = 5
#: First retry delay; the n-th delivery's retry waits ``RETRY_BASE * 2**(n-1)``
#: (exponential backoff, so a struggling dependency is not hammered).
RETRY_BASE = timedelta(seconds=1)
#: Longest retry delay, whatever the delivery count.
RETRY_MAX = timedelta(seconds=60)
#: How long a delivered, unacknowledged message may sit with a consumer before
#: another consumer may take it: that consumer is presumed dead. Longer than any
#: handler runs without finishing, shorter than an operator's patience.
RECLAIM_IDLE = timedelta(seconds=30)
#: Longest a consumer blocks waiting for new messages (``XREADGROUP BLOCK``);
#: also bounds how late it notices a due retry and how long a graceful stop waits
#: for the read in progress.
STREAM_BLOCK = timedelta(seconds=1)

#: Seconds a worker of each role may take over one event before it is given up
#: on and its components FAILED (``TimeLimits`` in talicada/settings.py): staging
#: and image pulls move gigabytes, launch and release only call a service.
TIME_LIMITS: dict[str, float] = {
    "prepare-data": 3600.0,
    "image-cache": 3600.0,
    "launch": 600.0,
    "release": 600.0,
}

#: The field of a stream entry that holds the encoded event.
STREAM_FIELD = "event"

# -- timers ---------------------------------------------------------------

#: What a due-time event does when it comes due (the driver maps each to a step).
TimerKind = Literal["expire", "start", "prepare", "window-end", "release-deadline"]
TIMER_KINDS: frozenset[str] = frozenset(get_args(TimerKind))


def timer(kind: TimerKind, session: str) -> str:
    """The name of a due-time event: ``window-end:<uuid>``. The only place one is made
    (the Lua scripts take the names they need as arguments)."""
    return f"{kind}:{session}"


def parse_timer(name: str) -> tuple[str, str]:
    """The kind and session of a timer name made by :func:`timer`."""
    kind, _, session = name.partition(":")
    return kind, session


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

    def applied(self, uuid: str) -> str:
        """Set of worker report delivery ids already applied to one session."""
        return f"{self.prefix}:session:{{{uuid}}}:applied"

    def offerset(self, uuid: str) -> str:
        """Hash: ``doc`` (msgpack OfferSet record), ``accepted`` (offer uuid)."""
        return f"{self.prefix}:offerset:{{{uuid}}}"

    def owner_index(self, owner: str) -> str:
        """Sorted set of one owner's session uuids scored by creation time (ms)."""
        return f"{self.prefix}:owner:{{{owner}}}:sessions"

    def owner_held(self, owner: str) -> str:
        """Hash of what one owner's pending offer sets hold, per platform: fields
        ``c:<platform>`` (cores), ``m:<platform>`` (GiB) and ``e:<platform>``
        (latest expiry, ms). Kept by the hold, accept and finish scripts."""
        return f"{self.prefix}:owner:{{{owner}}}:held"

    def calendar_points(self, platform: str) -> str:
        """Sorted set of change points ``slot|cores|memory`` scored by slot: from
        each, that much is in use until the next (the calendar's step function)."""
        return f"{self.prefix}:calendar:{{cal:{platform}}}:points"

    def calendar_usage(self, platform: str) -> str:
        """Hash of one counter per slot: the calendar before it was a step function.

        Read only to migrate it (:meth:`RedisStore.connect`), then deleted."""
        return f"{self.prefix}:calendar:{{cal:{platform}}}:usage"

    def calendar_entries(self, platform: str) -> str:
        """Hash: session uuid → ``state,first_slot,last_slot,cores,memory``."""
        return f"{self.prefix}:calendar:{{cal:{platform}}}:entries"

    def timers(self) -> str:
        """Sorted set of due-time events (``expire:<uuid>``) scored by due time (ms)."""
        return f"{self.prefix}:timers"

    def stream(self, role: str) -> str:
        """Stream of events for one consumer role (``launch``, ``prepare-data``…)."""
        return f"{self.prefix}:stream:{role}"

    def dead_letters(self) -> str:
        """Stream of messages that could not be processed, with the reason why."""
        return f"{self.prefix}:stream:dead-letter"

    def ledger(self, name: str) -> str:
        """Hash of what one back end follows on one platform (``skaha:canfar``)."""
        return f"{self.prefix}:ledger:{name}"

    def federation(self, kind: str, uuid: str) -> str:
        """String: an aggregator's record of an ``offerset`` or ``session`` it
        forwards to a site, or the ``accepted`` offer of one of its offer sets."""
        return f"{self.prefix}:federation:{kind}:{{{uuid}}}"

    def steps(self, key: str) -> str:
        """List of recent samples of one history key, newest first, msgpack
        (``image|<platform>|…``, talicada/broker/history.py); trimmed to the window."""
        return f"{self.prefix}:steps:{key}"

    def stream_retries(self, role: str, group: str) -> str:
        """Sorted set of one group's message ids awaiting a retry, scored by due time (ms)."""
        return f"{self.prefix}:stream:{role}:retry:{group}"
