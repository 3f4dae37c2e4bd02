"""The in-memory store for embedded mode and fast tests. Not durable.

Same behaviour as the Redis store. Every method does all its checks and
changes without awaiting in between, so on one event loop each is atomic.
"""

from __future__ import annotations

import bisect
import heapq
import time
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace
from typing import Generic, TypeVar, cast

import msgspec

from talicada import constants
from talicada.broker.calendar import Entry, Steps, Usage
from talicada.broker.engine import Change, Rebook, lifecycle_event
from talicada.broker.records import (
    LiveSession,
    OfferSetRecord,
    Outcome,
    SessionRecord,
    Transition,
)
from talicada.broker.store import EVERYONE, OVER_CAP, Held, held_shares
from talicada.broker.store.paging import Cursor
from talicada.events.bus import Bus
from talicada.events.envelope import Event, ForgottenBody, SessionForgotten
from talicada.events.memory_bus import MemoryBus
from talicada.events.streams import LIFECYCLE
from talicada.schema.model import SessionPhase

R = TypeVar("R", SessionRecord, OfferSetRecord)
_ENCODER = msgspec.msgpack.Encoder()
_RETENTION_MS = int(constants.SESSION_RETENTION.total_seconds() * 1000)


class _Encoded(Generic[R]):
    """Records by uuid, kept encoded (msgpack) and decoded on every read.

    An embedded broker holds every offer it made for the retention period.
    Kept as objects, each record is dozens of objects the cyclic garbage
    collector walks on every full collection: with 100,000 sessions those
    walks stalled requests for up to a second (docs/PERFORMANCE.md). Encoded,
    a record is one bytes object the collector never looks at, a third of
    the memory, and reads get a fresh copy as they do from Redis.
    """

    __slots__ = ("_decoder", "_docs")

    def __init__(self, kind: type[R]) -> None:
        self._decoder: msgspec.msgpack.Decoder[R] = msgspec.msgpack.Decoder(kind)
        self._docs: dict[str, bytes] = {}

    def __contains__(self, uuid: object) -> bool:
        return uuid in self._docs

    def __getitem__(self, uuid: str) -> R:
        return self._decoder.decode(self._docs[uuid])

    def __setitem__(self, uuid: str, record: R) -> None:
        self._docs[uuid] = _ENCODER.encode(record)

    def __delitem__(self, uuid: str) -> None:
        del self._docs[uuid]

    def get(self, uuid: str) -> R | None:
        doc = self._docs.get(uuid)
        return None if doc is None else self._decoder.decode(doc)

    def pop(self, uuid: str) -> R | None:
        doc = self._docs.pop(uuid, None)
        return None if doc is None else self._decoder.decode(doc)


class _Calendar:
    """One platform: its step function of use, and the entries that make it up.

    The holds of one offer set count as their envelope (``calendar.py``): an
    entry that joins or leaves a set's holds, or changes, reshapes the set's
    envelope; a booking, or a hold without a set, counts alone.
    """

    def __init__(self) -> None:
        self.steps = Steps()
        self.entries: dict[str, tuple[str, Entry]] = {}
        #: Offer set → the uuids of its holds here (those its envelope is made of).
        self.sets: defaultdict[str, set[str]] = defaultdict(set)

    def counted_with(self, uuid: str) -> list[str]:
        """The entries counted together with ``uuid``'s (itself included): its set's holds."""
        state, entry = self.entries[uuid]
        if state != "H" or not entry.offerset:
            return [uuid]
        return sorted(self.sets.get(entry.offerset, {uuid}))

    def _change(self, uuid: str, moved: Entry | None, capacity: tuple[int, int] | None) -> bool:
        """Replace ``uuid``'s entry by ``moved`` (None: drop it) in what is counted."""
        together = self.counted_with(uuid)
        before = [self.entries[each][1] for each in together]
        after = [moved if each == uuid else self.entries[each][1] for each in together]
        return self.steps.reshape(before, [entry for entry in after if entry is not None], capacity)

    def hold(self, holds: Mapping[str, Entry]) -> None:
        """Count one offer set's holds here: their envelope (each fits: see ``hold``)."""
        for uuid, entry in holds.items():
            self.entries[uuid] = ("H", entry)
            self.sets[entry.offerset].add(uuid)
        self.steps.reshape([], list(holds.values()))

    def book(self, uuid: str) -> None:
        """Turn a hold into a booking: it leaves its set's envelope and counts alone
        (it is part of the envelope, so it fits where the envelope did)."""
        entry = self.entries[uuid][1]
        self._change(uuid, None, None)
        self._leave_set(uuid, entry)
        booked = replace(entry, offerset="")
        self.entries[uuid] = ("B", booked)
        self.steps.add(booked)

    def free(self, uuid: str) -> None:
        if uuid not in self.entries:
            return
        self._change(uuid, None, None)
        self._leave_set(uuid, self.entries.pop(uuid)[1])

    def rebook(self, uuid: str, last: int, capacity: tuple[int, int]) -> bool:
        """Move the end of ``uuid``'s entry to ``last``; False (nothing changed) without room."""
        state, entry = self.entries[uuid]
        moved = replace(entry, last=last)
        if not self._change(uuid, moved, capacity):
            return False
        self.entries[uuid] = (state, moved)
        return True

    def _leave_set(self, uuid: str, entry: Entry) -> None:
        holds = self.sets.get(entry.offerset)
        if holds is not None:
            holds.discard(uuid)
            if not holds:
                del self.sets[entry.offerset]


class MemoryStore:
    """Sessions, offer sets, calendars and timers in dictionaries.

    Events are handed to ``bus`` (the in-memory bus of embedded mode) right
    after the change that causes them, with nothing awaited in between.
    """

    def __init__(self, bus: Bus | None = None) -> None:
        self.bus: Bus = bus or MemoryBus()
        self._outbox: list[tuple[str, Event]] = []
        self._versions: defaultdict[str, int] = defaultdict(int)
        self._applied: defaultdict[str, set[str]] = defaultdict(set)
        self._calendars: defaultdict[str, _Calendar] = defaultdict(_Calendar)
        self._sessions = _Encoded(SessionRecord)
        self._phases: dict[str, SessionPhase] = {}
        self._history: defaultdict[str, list[Transition]] = defaultdict(list)
        self._offersets = _Encoded(OfferSetRecord)
        self._accepted: dict[str, str] = {}
        # Timers by name, and a heap of (due, name) to find the due ones without
        # a scan; heap entries whose time no longer matches are skipped.
        self._timers: dict[str, int] = {}
        self._due: list[tuple[int, str]] = []
        #: The latest time the broker has told us of (ms): purges are timed from it.
        self._now = int(time.time() * 1000)
        # owner → sorted [(created, uuid)] so listing is a bisect, not a scan.
        self._owned: defaultdict[str, list[tuple[int, str]]] = defaultdict(list)
        # owner → platform → [cores, GiB, latest expiry] its pending offer sets hold;
        # offer set → (owner, its share per platform, offers still OFFERED).
        self._held: defaultdict[str, dict[str, list[int]]] = defaultdict(dict)
        self._shares: dict[str, tuple[str, dict[str, tuple[int, int, int]], int]] = {}
        # (owner, platform) → generation of those sums (see _held_generation).
        self._generations: defaultdict[tuple[str, str], int] = defaultdict(int)

    async def usage(self, platform: str, first: int, last: int, most: int | None = None) -> Usage:
        return self._calendars[platform].steps.window(first, last, most)

    async def hold(
        self,
        offerset: OfferSetRecord,
        offers: Sequence[SessionRecord],
        capacity: Mapping[str, tuple[int, int]],
        history: Sequence[Transition],
        owner_caps: Mapping[str, tuple[int, int]] | None = None,
    ) -> int | None:
        shares = held_shares(offers)
        owner_held = self._held[offerset.owner]
        now = offers[0].created if offers else 0
        generations = {p: self._held_generation(offerset.owner, p, now) for p in shares}
        for platform, (cores, memory) in shares.items():
            cap_cores, cap_memory = (owner_caps or {}).get(platform, (0, 0))
            held_cores, held_memory, _ = owner_held.get(platform, (0, 0, 0))
            if (cap_cores and held_cores + cores > cap_cores) or (
                cap_memory and held_memory + memory > cap_memory
            ):
                return OVER_CAP
        # Each offer must fit on top of what is in use; then so does the set's
        # envelope on each platform: in every slot its cores are one offer's
        # cores and its memory one offer's memory, and each of those fits.
        for index, offer in enumerate(offers):
            steps = self._calendars[offer.platform].steps
            if not steps.fits(offer.booking.entry(offer.platform), capacity[offer.platform]):
                return index
        holds: defaultdict[str, dict[str, Entry]] = defaultdict(dict)
        for offer in offers:
            entry = replace(offer.booking.entry(offer.platform), offerset=offerset.uuid)
            holds[offer.platform][offer.uuid] = entry
        for platform, held in holds.items():
            self._calendars[platform].hold(held)
        self._offersets[offerset.uuid] = offerset
        for offer, first in zip(offers, history, strict=True):
            self._sessions[offer.uuid] = offer
            self._phases[offer.uuid] = "OFFERED"
            self._history[offer.uuid].append(first)
            self._set_timer(constants.timer("expire", offer.uuid), offer.expires)
            bisect.insort(self._owned[offer.owner], (offer.created, offer.uuid))
            bisect.insort(self._owned[EVERYONE], (offer.created, offer.uuid))
            self._outbox.append((LIFECYCLE, lifecycle_event(offer.uuid, first)))
        if offers:
            for platform, (cores, memory) in shares.items():
                sums = owner_held.setdefault(platform, [0, 0, 0])
                sums[0] += cores
                sums[1] += memory
                sums[2] = max(sums[2], offerset.expires)
            tagged = {p: (c, m, generations[p]) for p, (c, m) in shares.items()}
            self._shares[offerset.uuid] = (offerset.owner, tagged, len(offers))
        await self._flush()
        return None

    async def held(self, owner: str, now: int) -> Held:
        return {
            platform: (sums[0], sums[1], sums[2])
            for platform, sums in self._held.get(owner, {}).items()
            if sums[0] > 0 and sums[2] > now
        }

    def _held_generation(self, owner: str, platform: str, now: int) -> int:
        """As ``held_generation`` in common.lua: restart sums whose every set expired."""
        sums = self._held.get(owner, {}).get(platform)
        if sums is not None and sums[2] <= now:
            del self._held[owner][platform]
            self._generations[owner, platform] += 1
        return self._generations[owner, platform]

    def _release_share(self, offerset: str, *, whole: bool) -> None:
        """One offer of ``offerset`` stopped pending (or, ``whole``, all did):
        once none pends, take the set's share off its owner's held sums."""
        found = self._shares.get(offerset)
        if found is None:
            return
        owner, shares, pending = found
        pending = 0 if whole else pending - 1
        if pending > 0:
            self._shares[offerset] = (owner, shares, pending)
            return
        del self._shares[offerset]
        held = self._held[owner]
        for platform, (cores, memory, generation) in shares.items():
            sums = held.get(platform)
            if sums is None or generation != self._generations[owner, platform]:
                continue  # wiped when the sums restarted
            sums[0] -= cores
            sums[1] -= memory
            if sums[0] <= 0:
                del held[platform]
        if not held:
            del self._held[owner]

    async def offerset(self, uuid: str) -> OfferSetRecord | None:
        return self._offersets.get(uuid)

    async def sessions(self, uuids: Sequence[str]) -> list[LiveSession | None]:
        found: list[LiveSession | None] = []
        for uuid in uuids:
            record = self._sessions.get(uuid)
            found.append(None if record is None else LiveSession(record, self._phases[uuid]))
        return found

    async def accept(self, uuid: str, now: int, record: Transition) -> Outcome:
        self._now = max(self._now, now)
        offer = self._sessions.get(uuid)
        if offer is None:
            return Outcome("missing")
        phase = self._phases[uuid]
        if phase != "OFFERED":
            return Outcome("phase", phase)
        if offer.expires <= now:
            return Outcome("expired", phase)
        taken = self._accepted.get(offer.offerset)
        if taken is not None:
            return Outcome("taken", phase, taken)
        self._accepted[offer.offerset] = uuid
        self._set(uuid, record)
        self._timers.pop(constants.timer("expire", uuid), None)
        self._set_timer(constants.timer("start", uuid), now)
        self._calendars[offer.platform].book(uuid)
        self._release_share(offer.offerset, whole=True)
        offerset = self._offersets.get(offer.offerset)
        for sibling in offerset.offers if offerset else []:
            if sibling != uuid and self._phases.get(sibling) == "OFFERED":
                rejected = Transition(
                    time=record.time,
                    source="OFFERED",
                    target="REJECTED",
                    cause=f"sibling {uuid} accepted",
                )
                self._release(sibling, rejected)
        await self._flush()
        return Outcome("ok", "ACCEPTED")

    async def finish(
        self,
        uuid: str,
        sources: Collection[SessionPhase],
        record: Transition,
        *,
        due: int | None = None,
    ) -> Outcome:
        offer = self._sessions.get(uuid)
        if offer is None:
            return Outcome("missing")
        phase = self._phases[uuid]
        if phase not in sources:
            return Outcome("phase", phase)
        if due is not None and offer.expires > due:
            return Outcome("phase", phase, "not due")
        self._release(uuid, record)
        await self._flush()
        return Outcome("ok", cast(SessionPhase, record.target))

    def _set(self, uuid: str, record: Transition) -> None:
        self._phases[uuid] = cast(SessionPhase, record.target)
        self._history[uuid].append(record)
        self._versions[uuid] += 1
        self._outbox.append((LIFECYCLE, lifecycle_event(uuid, record)))

    async def _flush(self) -> None:
        """Hand the events of the change just made to the bus."""
        outbox, self._outbox = self._outbox, []
        for role, event in outbox:
            await self.bus.publish(role, event)

    def _release(self, uuid: str, record: Transition) -> None:
        if self._phases[uuid] == "OFFERED":
            self._release_share(self._sessions[uuid].offerset, whole=False)
        self._set(uuid, record)
        self._timers.pop(constants.timer("expire", uuid), None)
        self._calendars[self._sessions[uuid].platform].free(uuid)
        self._forget_later(uuid)

    def _rebook(self, uuid: str, rebook: Rebook) -> bool:
        """Move the end of the booking; False (nothing changed) when there is no room."""
        calendar = self._calendars[self._sessions[uuid].platform]
        if uuid not in calendar.entries:
            return True
        return calendar.rebook(uuid, rebook.last, rebook.capacity)

    async def load(self, uuid: str) -> tuple[LiveSession, int] | None:
        record = self._sessions.get(uuid)
        if record is None:
            return None
        return LiveSession(record=record, phase=self._phases[uuid]), self._versions[uuid]

    async def commit(self, uuid: str, version: int, change: Change, delivery: str | None) -> str:
        if uuid not in self._sessions:
            return "missing"
        if delivery is not None and delivery in self._applied[uuid]:
            return "duplicate"
        if self._versions[uuid] != version:
            return "stale"
        if change.rebook is not None and not self._rebook(uuid, change.rebook):
            return "full"
        self._sessions[uuid] = change.record
        self._phases[uuid] = change.phase
        self._history[uuid].extend(change.history)
        self._versions[uuid] += 1
        for name in change.drop_timers:
            self._timers.pop(name, None)
        for name, due in change.add_timers.items():
            self._set_timer(name, due)
        if delivery is not None:
            self._applied[uuid].add(delivery)
        if change.final:
            self._calendars[change.record.platform].free(uuid)
            self._forget_later(uuid)
        self._outbox.extend(change.events)
        await self._flush()
        return "ok"

    async def history(self, uuid: str, start: int = 0) -> list[Transition]:
        return list(self._history.get(uuid, [])[start:])

    def _set_timer(self, name: str, due: int) -> None:
        self._timers[name] = due
        heapq.heappush(self._due, (due, name))

    async def claim_due(self, now: int, lease: int, limit: int) -> list[str]:
        self._now = max(self._now, now)
        claimed: list[str] = []
        while self._due and self._due[0][0] <= now and len(claimed) < limit:
            due, name = heapq.heappop(self._due)
            if self._timers.get(name) != due:
                continue  # dropped or moved since it was pushed
            if name.startswith("purge:"):
                del self._timers[name]
                self._purge(name.removeprefix("purge:"))
                continue
            self._set_timer(name, now + lease)
            claimed.append(name)
        return claimed

    async def forget(
        self, uuid: str, final: Collection[SessionPhase], *, owner: str | None = None
    ) -> Outcome:
        record = self._sessions.get(uuid)
        if record is None:
            return Outcome("missing")
        phase = self._phases[uuid]
        if phase not in final:
            return Outcome("phase", phase)
        self._timers.pop(f"purge:{uuid}", None)
        self._purge(uuid)
        event = SessionForgotten.new(uuid, body=ForgottenBody(owner=record.owner))
        self._outbox.append((LIFECYCLE, event))
        await self._flush()
        return Outcome("ok", phase)

    def _forget_later(self, uuid: str) -> None:
        """Drop a finished session after the retention period, as Redis expires its keys."""
        # In the timers' own time base (the broker's clock), not the wall clock.
        self._set_timer(f"purge:{uuid}", self._now + _RETENTION_MS)

    def _purge(self, uuid: str) -> None:
        record = self._sessions.pop(uuid)
        if record is None:
            return
        for table in (self._phases, self._history, self._versions, self._applied):
            table.pop(uuid, None)
        for owner in (record.owner, EVERYONE):
            owned = self._owned.get(owner, [])
            index = bisect.bisect_left(owned, (record.created, uuid))
            if index < len(owned) and owned[index] == (record.created, uuid):
                del owned[index]
        offerset = self._offersets.get(record.offerset)
        if offerset is not None and not any(o in self._sessions for o in offerset.offers):
            del self._offersets[record.offerset]  # its last offer is gone
            self._accepted.pop(record.offerset, None)

    async def drop_timer(self, name: str) -> None:
        self._timers.pop(name, None)

    async def list_sessions(
        self,
        owner: str,
        *,
        phases: Collection[SessionPhase],
        since: int | None,
        until: int | None,
        cursor: str | None,
        limit: int,
    ) -> tuple[list[LiveSession], str | None]:
        owned = self._owned.get(owner, [])
        after = Cursor.decode(cursor) if cursor else None
        # Newest first: walk the sorted list backwards from the cursor.
        end = len(owned) if after is None else bisect.bisect_left(owned, after.key)
        found: list[LiveSession] = []
        index = end - 1
        while index >= 0 and len(found) < limit:
            created, uuid = owned[index]
            index -= 1
            if until is not None and created > until:
                continue
            if since is not None and created < since:
                break
            if not phases or self._phases[uuid] in phases:
                found.append(LiveSession(record=self._sessions[uuid], phase=self._phases[uuid]))
        more = index >= 0 and (since is None or owned[index][0] >= since)
        last = found[-1].record if found else None
        next_cursor = Cursor(last.created, last.uuid).encode() if more and last else None
        return found, next_cursor

    async def entries(self, platform: str) -> list[tuple[str, str, Entry]]:
        calendar = self._calendars[platform]
        return [(uuid, state, entry) for uuid, (state, entry) in calendar.entries.items()]

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        return None
