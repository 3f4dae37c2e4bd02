"""The broker's use cases: make offers, read them, apply client updates, expire.

This is the seam between HTTP and state: handlers decode and render, the
:class:`Broker` decides, the store applies atomically. Nothing here imports
aiohttp or redis.
"""

from __future__ import annotations

import asyncio
import functools
import random
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import msgspec
import structlog

from talicada import constants
from talicada.broker import engine, fairness, lifecycle, platforms, ttl, updates
from talicada.broker.advice import NO_ADVICE, Advice, Advisor, legal_floor, legal_range
from talicada.broker.calendar import Slots
from talicada.broker.driver import Driver
from talicada.broker.engine import Change, Rebook
from talicada.broker.estimates import Quote
from talicada.broker.estimator import Estimator
from talicada.broker.fenced import fenced_data
from talicada.broker.offers import NewId, build_offer, new_uuid
from talicada.broker.planner import Demand, Window, plan_reading
from talicada.broker.quoting import quoted_offer
from talicada.broker.records import (
    Booking,
    LiveSession,
    OfferSetRecord,
    Outcome,
    SessionRecord,
    Transition,
)
from talicada.broker.store import EVERYONE, Store
from talicada.broker.store.samples import MemorySamples, SampleStore
from talicada.schema import messages as msg
from talicada.schema.iso8601 import format_stamp
from talicada.schema.messages import Conflict, MessageItem, NotFound
from talicada.schema.model import AnyUpdate, SessionPhase
from talicada.schema.validation import ValidRequest
from talicada.security.fence import OfferTimeResolver, platform_fence
from talicada.settings import PlatformSettings, Settings

log = structlog.get_logger("talicada.broker")

Clock = Callable[[], datetime]

#: The furthest ahead of the earliest start that offers are looked for.
PLAN_HORIZON = timedelta(days=31)

#: Phases in which a client may still change how long the window lasts.
RESIZABLE: frozenset[SessionPhase] = frozenset(
    {"OFFERED", "ACCEPTED", "WAITING", "PREPARING", "AVAILABLE", "RUNNING"}
)


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def _ms(instant: datetime) -> int:
    return int(instant.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class _Candidate:
    platform: PlatformSettings
    window: Window
    quote: Quote


@dataclass(frozen=True, slots=True)
class _Runnable:
    """A platform that can run the request, what it needs there, and its back end's advice."""

    platform: PlatformSettings
    demand: Demand
    advice: Advice
    quote: Quote


@dataclass(frozen=True, slots=True)
class OfferSetView:
    """An offer set with its offers' live state, ready to render."""

    record: OfferSetRecord
    offers: list[LiveSession]


class Broker:
    """Offers, sessions and updates over one store.

    ``clock`` and ``new_id`` are seams for tests; production uses the defaults.
    """

    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        clock: Clock = utc_now,
        new_id: NewId = new_uuid,
        advisors: dict[str, Advisor] | None = None,
        samples: SampleStore | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        #: Preparation estimates from the history of finished steps (``samples``).
        self.estimator = Estimator(samples or MemorySamples(), settings.estimates)
        #: Offer-time advice by platform name, for platforms whose back end gives it.
        self.advisors = advisors or {}
        self.clock = clock
        self.new_id = new_id
        self.slots = Slots(settings.slot)
        self.platforms = {platform.name: platform for platform in settings.platforms}
        #: Cores and GiB of each platform, as the store's hold checks them.
        self.capacities = {name: (p.cores, p.memory) for name, p in self.platforms.items()}
        #: Cores and GiB one owner's pending offers may hold on each platform.
        self.owner_caps = fairness.caps(settings.platforms)
        self.driver = Driver(store, clock, self.platforms, self.estimator.record)
        #: Serialises this replica's plan-and-hold steps (see :meth:`request`).
        self._planning = asyncio.Lock()
        self.fences = {p.name: platform_fence(settings, p) for p in settings.platforms}
        self.resolver = OfferTimeResolver()

    # -- offers -----------------------------------------------------------

    async def request(
        self, valid: ValidRequest, owner: str, *, max_offers: int | None = None
    ) -> OfferSetView:
        """Plan, hold and save offers for ``valid``; a NO answer says why not.

        ``max_offers`` lowers the configured most offers (``Prefer: offers=N``).
        """
        now = self.clock()
        limit = min(max_offers or self.settings.max_offers, self.settings.max_offers)
        # With authentication off every caller is one 'anonymous' owner (embedded
        # mode, one person's machine): a cap among owners has no one to protect.
        authenticated = bool(self.settings.auth_tokens_file or self.settings.oidc)
        reasons: list[MessageItem] = []
        wanted: list[_Runnable] = []
        feasible = []
        for platform in self.settings.platforms:
            problems = platforms.feasibility(platform, valid) or await fenced_data(
                platform, self.fences[platform.name], self.resolver, valid
            )
            if problems:
                reasons.extend(problems)
            else:
                feasible.append(platform)
        advice = await self._advise_all(feasible, valid, owner)
        quotes = await self.estimator.quotes(feasible, valid) if feasible else {}
        for platform, said in zip(feasible, advice, strict=True):
            quote = quotes[platform.name]
            demand = self._demand(platform, valid, now, said, quote.planned)
            if said.reasons or demand is None:
                reasons.extend(said.reasons or [self._no_legal_size(platform, valid, said)])
                continue
            wanted.append(_Runnable(platform, demand, said, quote))
        owner_caps = self.owner_caps if authenticated else None
        offerset_id = self.new_id()
        deadline = time.monotonic() + constants.PLAN_DEADLINE.total_seconds()
        attempt = 0
        while True:
            # Within the owner's cap as it stands now (read again on each attempt:
            # a hold refused for the cap means another request of the owner won).
            runnable, over_cap = (
                await self._within_caps(wanted, owner, now) if authenticated else (wanted, [])
            )
            # Plan and hold under this replica's lock: its own requests never
            # race each other for the same free window (they would all read the
            # same calendar and all but one clash). Other replicas can still
            # take capacity in between; then the hold clashes, nothing is
            # written, and planning starts again from the new state.
            async with self._planning:
                view = await self._plan_and_hold(
                    valid, runnable, reasons + over_cap, offerset_id, owner, now, limit, owner_caps
                )
            if view is not None:
                return view
            attempt += 1
            if time.monotonic() >= deadline:
                break
            # Jittered so that replicas contending for one window drift apart.
            await asyncio.sleep(random.uniform(0, min(0.05 * attempt, 0.5)))  # noqa: S311
        raise msg.Unavailable(
            [
                msg.make(
                    msg.UNAVAILABLE,
                    reason=f"other requests kept taking the free capacity for "
                    f"{constants.PLAN_DEADLINE.total_seconds():g} seconds",
                    retry=1,
                )
            ],
            retry_after=1,
        )

    async def _within_caps(
        self, wanted: list[_Runnable], owner: str, now: datetime
    ) -> tuple[list[_Runnable], list[MessageItem]]:
        """``wanted`` narrowed to what ``owner`` may still hold, and the NO reasons
        of the platforms where its pending offers leave no room at all."""
        # Running sums kept by the store: one read, whatever the owner's history.
        held = await self.store.held(owner, _ms(now))
        runnable: list[_Runnable] = []
        over: list[MessageItem] = []
        for each in wanted:
            room = held.get(each.platform.name, (0, 0, 0))
            demand, reason = fairness.within_cap(each.platform, each.demand, room)
            if demand is None:
                assert reason is not None
                over.append(reason)
            else:
                runnable.append(replace(each, demand=demand))
        return runnable, over

    async def _plan_and_hold(
        self,
        valid: ValidRequest,
        runnable: list[_Runnable],
        reasons: list[MessageItem],
        offerset_id: str,
        owner: str,
        now: datetime,
        limit: int,
        owner_caps: dict[str, tuple[int, int]] | None,
    ) -> OfferSetView | None:
        """Plan offers from the calendar as it is and hold them; None if they clashed
        (with other holds, or with the owner's cap)."""
        expires = now + timedelta(seconds=self.settings.offer_ttl)
        name = valid.request.meta.name if valid.request.meta else None
        candidates = await self._plan(runnable, limit)
        offers = [
            self._record(valid, c, index, offerset_id, owner, now, expires)
            for index, c in enumerate(candidates)
        ]
        record = OfferSetRecord(
            uuid=offerset_id,
            owner=owner,
            dialect=valid.dialect.value,
            created=_ms(now),
            expires=_ms(expires),
            result="YES" if offers else "NO",
            offers=[offer.uuid for offer in offers],
            messages=list(reasons) if not offers else [],
            name=name,
        )
        if not offers:
            record.messages.extend(await self._no_capacity(runnable, now))
            lasting = ttl.no_ttl(record.messages, self.settings.answer_ttl)
            record.valid_until = _ms(now + timedelta(seconds=lasting))
        else:
            record.valid_until = record.expires
        first = Transition(
            time=format_stamp(now),
            source="INITIAL",
            target="OFFERED",
            cause="request",
        )
        clash = await self.store.hold(
            record, offers, self.capacities, [first] * len(offers), owner_caps
        )
        if clash is not None:
            log.info("offer.contended", offerset=offerset_id, index=clash)
            return None
        log.info("offerset.created", offerset=offerset_id, result=record.result, offers=len(offers))
        return OfferSetView(
            record, [LiveSession(record=offer, phase="OFFERED") for offer in offers]
        )

    async def _advise_all(
        self, feasible: list[PlatformSettings], valid: ValidRequest, owner: str
    ) -> list[Advice]:
        if not any(platform.name in self.advisors for platform in feasible):
            # No back end to ask: no tasks to start and gather (most requests).
            return [NO_ADVICE] * len(feasible)
        return list(await asyncio.gather(*(self._advise(p, valid, owner) for p in feasible)))

    async def _advise(self, platform: PlatformSettings, valid: ValidRequest, owner: str) -> Advice:
        advisor = self.advisors.get(platform.name)
        return NO_ADVICE if advisor is None else await advisor.advise(platform, valid, owner)

    def _no_legal_size(
        self, platform: PlatformSettings, valid: ValidRequest, advice: Advice
    ) -> MessageItem:
        asked = (
            f"{valid.cores[0]}-{valid.cores[1]} cores and {valid.memory[0]}-{valid.memory[1]} GiB"
        )
        legal = f"cores {list(advice.cores or [])}, GiB {list(advice.memory or [])}"
        return msg.make(
            msg.PLATFORM_REFUSES,
            platform=platform.name,
            reason=f"it accepts only these sizes ({legal}), none within {asked}",
        )

    def _demand(
        self,
        platform: PlatformSettings,
        valid: ValidRequest,
        now: datetime,
        advice: Advice,
        preparation: timedelta,
    ) -> Demand | None:
        """What ``valid`` needs of ``platform``; None when no size it asks for is legal there.

        ``preparation`` is the pessimistic estimate: no window starts before it allows.
        """
        cores = legal_range(
            (valid.cores[0], min(valid.cores[1], platform.session_cores)), advice.cores
        )
        memory = legal_range(
            (valid.memory[0], min(valid.memory[1], platform.session_memory)), advice.memory
        )
        if cores is None or memory is None:
            return None
        duration = valid.duration or timedelta(seconds=self.settings.default_duration)
        earliest = now + preparation
        latest = now + timedelta(seconds=self.settings.default_start_window)
        if advice.earliest is not None:
            # The service's own quote: no window may start before it says it can.
            earliest = max(earliest, advice.earliest)
        if valid.start is not None:
            earliest = max(earliest, valid.start.start)
            # Planning looks no further than the horizon, however wide the
            # interval asked for, so no request can make the broker read a year.
            latest = min(valid.start.end, earliest + PLAN_HORIZON)
        return Demand(
            cores=cores,
            memory=memory,
            duration=duration,
            preparation=preparation,
            release=platforms.release(platform),
            earliest=earliest,
            latest=latest,
        )

    async def _plan(self, runnable: list[_Runnable], limit: int) -> list[_Candidate]:
        if len(runnable) == 1:
            # One platform: plan it directly rather than through a task.
            found = [await self._plan_platform(runnable[0], limit)]
        else:
            found = list(await asyncio.gather(*(self._plan_platform(r, limit) for r in runnable)))
        candidates = [candidate for windows in found for candidate in windows]
        # Earliest start first, then the largest offer.
        candidates.sort(
            key=lambda c: (c.window.available, -c.window.entry.cores, -c.window.entry.memory)
        )
        return candidates[:limit]

    async def _plan_platform(self, runnable: _Runnable, limit: int) -> list[_Candidate]:
        """Windows on one platform, from as much of its calendar as they need
        (:func:`~talicada.broker.planner.plan_reading`)."""
        platform, demand, advice = runnable.platform, runnable.demand, runnable.advice
        read = functools.partial(self.store.usage, platform.name)
        capacity = (platform.cores, platform.memory)
        windows = await plan_reading(read, demand, capacity, self.slots, platform.name, limit)
        # Offer only sizes the platform's service accepts: round down to a legal
        # one (never below the minimum: the demand starts at a legal one).
        windows = [
            replace(
                window,
                entry=replace(
                    window.entry,
                    cores=legal_floor(window.entry.cores, advice.cores),
                    memory=legal_floor(window.entry.memory, advice.memory),
                ),
            )
            for window in windows
        ]
        return [_Candidate(platform, window, runnable.quote) for window in windows]

    def _record(
        self,
        valid: ValidRequest,
        candidate: _Candidate,
        index: int,
        offerset: str,
        owner: str,
        now: datetime,
        expires: datetime,
    ) -> SessionRecord:
        session = build_offer(
            valid,
            candidate.window,
            candidate.platform,
            index=index,
            now=now,
            expires=expires,
            new_id=self.new_id,
        )
        session, quotes = quoted_offer(session, candidate.quote, candidate.window.preparing)
        entry = candidate.window.entry
        assert session.meta.uuid is not None
        return SessionRecord(
            uuid=session.meta.uuid,
            owner=owner,
            offerset=offerset,
            platform=candidate.platform.name,
            dialect=valid.dialect.value,
            created=_ms(now),
            expires=_ms(expires),
            booking=Booking(entry.first, entry.last, entry.cores, entry.memory),
            session=session,
            quotes=quotes,
        )

    async def _no_capacity(self, runnable: list[_Runnable], now: datetime) -> list[MessageItem]:
        """Why each runnable platform had no window: booked, or only held by offers."""
        reasons = []
        for each in runnable:
            if await fairness.held_not_booked(self.store, each.platform, each.demand, self.slots):
                expires_by = fairness.expiry_bound(now, self.settings.offer_ttl)
                reasons.append(fairness.no_capacity_held(each.platform, each.demand, expires_by))
            else:
                reasons.extend(self._booked([each]))
        return reasons

    def _booked(self, runnable: list[_Runnable]) -> list[MessageItem]:
        return [
            msg.make(
                msg.NO_CAPACITY,
                platform=each.platform.name,
                duration=each.demand.duration,
                cores=each.demand.cores[0],
                memory=each.demand.memory[0],
                start=each.demand.earliest,
                end=each.demand.latest,
            )
            for each in runnable
        ]

    async def direct(self, valid: ValidRequest, owner: str) -> OfferSetView | LiveSession:
        """Offers for ``valid`` with the best accepted at once; the NO answer if none."""
        view = await self.request(valid, owner)
        if not view.offers:
            return view
        return await self.update_phase(view.offers[0].record.uuid, owner, "ACCEPTED", "direct")

    # -- reading ----------------------------------------------------------

    async def offerset(self, uuid: str, owner: str | None) -> OfferSetView:
        """The caller's offer set with live offers, or NotFound (``owner`` None: anyone's)."""
        record = await self.store.offerset(uuid)
        if record is None or (owner is not None and record.owner != owner):
            raise NotFound([msg.make(msg.NOT_FOUND, what="offer set", uuid=uuid)])
        offers = await self.store.sessions(record.offers)
        return OfferSetView(record, [offer for offer in offers if offer is not None])

    async def session(self, uuid: str, owner: str | None) -> LiveSession:
        """The caller's session, or NotFound (``owner`` None: anyone's, for operators)."""
        (found,) = await self.store.sessions([uuid])
        if found is None or (owner is not None and found.record.owner != owner):
            raise NotFound([msg.make(msg.NOT_FOUND, what="session", uuid=uuid)])
        return found

    async def history(self, uuid: str, owner: str | None) -> list[Transition]:
        """The caller's session's transitions, oldest first."""
        await self.session(uuid, owner)
        return await self.store.history(uuid)

    async def list_sessions(
        self,
        owner: str | None,
        *,
        phases: Collection[SessionPhase] = (),
        since: datetime | None = None,
        until: datetime | None = None,
        cursor: str | None = None,
        limit: int = 50,
    ) -> tuple[list[LiveSession], str | None]:
        """A page of the caller's sessions (``owner`` None: everyone's), newest first."""
        return await self.store.list_sessions(
            EVERYONE if owner is None else owner,
            phases=phases,
            since=_ms(since) if since else None,
            until=_ms(until) if until else None,
            cursor=cursor,
            limit=limit,
        )

    # -- updates ----------------------------------------------------------

    async def update(self, uuid: str, owner: str | None, update: AnyUpdate) -> LiveSession:
        """Apply a client's update; RequestInvalid (400) or Conflict (409) otherwise."""
        await self.session(uuid, owner)
        intent = updates.interpret(update)
        if isinstance(intent, updates.PhaseChange):
            return await self.update_phase(uuid, owner, intent.target, "client")
        return await self.resize(uuid, owner, intent)

    async def resize(self, uuid: str, owner: str | None, change: updates.Resize) -> LiveSession:
        """Make the caller's session's available window longer or shorter."""
        await self.session(uuid, owner)
        platform: PlatformSettings | None = None

        def step(record: SessionRecord, phase: SessionPhase, now: datetime) -> Change:
            nonlocal platform
            schedule = record.session.schedule
            if phase not in RESIZABLE or schedule is None:
                raise Conflict([msg.make(msg.SCHEDULE_FIXED, uuid=uuid, phase=phase)])
            platform = self.platforms[record.platform]
            resized = updates.resized(record, schedule, change, now, self.slots, platform)
            result = Change(
                record=resized,
                phase=phase,
                rebook=Rebook(resized.booking.last, (platform.cores, platform.memory)),
            )
            if phase in ("PREPARING", "AVAILABLE", "RUNNING"):
                # The booked end moved, so the timer that enforces it moves too…
                end = engine.window_end(resized)
                result.add_timers[constants.timer("window-end", uuid)] = _ms(end)
            # …and the launcher hears of it (Skaha renews the session).
            extension = engine.extension(resized, phase)
            if extension is not None:
                result.events.append(extension)
            return result

        if await self.driver.advance(uuid, step) == "full":
            assert platform is not None
            raise Conflict([msg.make(msg.NO_ROOM, platform=platform.name, uuid=uuid)])
        log.info("session.resized", session=uuid)
        return await self.session(uuid, owner)

    async def update_phase(
        self, uuid: str, owner: str | None, target: SessionPhase, cause: str
    ) -> LiveSession:
        """Move the caller's session to ``target`` as a client asked."""
        now = self.clock()
        current = await self.session(uuid, owner)
        record = Transition(
            time=format_stamp(now),
            source=current.phase,
            target=target,
            cause=cause,
        )
        if target == "CANCELLED":
            if await self.driver.cancel(uuid, cause) != "ok":
                outcome = Outcome("phase", current.phase)
                raise Conflict([self._refusal(uuid, current, target, outcome)])
            log.info("session.updated", session=uuid, phase=target, cause=cause)
            return await self.session(uuid, owner)
        if target == "ACCEPTED":
            outcome = await self.store.accept(uuid, _ms(now), record)
        else:
            outcome = await self.store.finish(uuid, lifecycle.sources(target), record)
        if not outcome.ok:
            raise Conflict([self._refusal(uuid, current, target, outcome)])
        log.info("session.updated", session=uuid, phase=target, cause=cause)
        # What this update did: the lifecycle may move the session on at once
        # (an accepted session's 'start' timer is already due), but the client
        # is told the phase its update made.
        accepted = await self.session(uuid, owner)
        return msgspec.structs.replace(accepted, phase=outcome.phase or target)

    async def forget(self, current: LiveSession) -> None:
        """Delete a final session now (UWS DELETE of a finished job); ``current`` is
        the caller's session as just read (:meth:`session` checked whose it is).

        NotFound when it has gone meanwhile; Conflict, as a guard, when it is not final.
        """
        uuid = current.record.uuid
        outcome = await self.store.forget(uuid, lifecycle.FINAL, owner=current.record.owner)
        if outcome.status == "missing":
            raise NotFound([msg.make(msg.NOT_FOUND, what="session", uuid=uuid)])
        if not outcome.ok:
            phase = outcome.phase or current.phase
            raise Conflict([msg.make(msg.NOT_FINAL, uuid=uuid, phase=phase)])
        log.info("session.forgotten", session=uuid, phase=outcome.phase)

    def _refusal(
        self, uuid: str, current: LiveSession, target: SessionPhase, outcome: Outcome
    ) -> MessageItem:
        if outcome.status == "expired":
            return msg.make(
                msg.OFFER_EXPIRED,
                uuid=uuid,
                expires=datetime.fromtimestamp(current.record.expires / 1000, UTC),
            )
        if outcome.status == "taken":
            return msg.make(
                msg.OFFER_TAKEN, offerset=current.record.offerset, accepted=outcome.detail
            )
        return msg.make(
            msg.ILLEGAL_TRANSITION, uuid=uuid, phase=outcome.phase or current.phase, target=target
        )
