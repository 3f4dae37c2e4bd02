"""The store contract, run against both implementations (memory and real Redis).

Driven through :class:`Broker` so the lifecycle table supplies the allowed
phases exactly as in production.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest

from talicada import constants
from talicada.broker import engine, lifecycle
from talicada.broker.records import Transition
from talicada.broker.service import Broker
from talicada.broker.store import Store
from talicada.broker.store.memory import MemoryStore
from talicada.broker.store.redis import RedisStore
from talicada.events.envelope import SessionForgotten
from talicada.events.report import Report
from talicada.events.streams import LIFECYCLE
from talicada.schema.iso8601 import format_instant, parse_interval
from talicada.schema.messages import Conflict, RequestInvalid
from talicada.schema.model import (
    AnyUpdate,
    EnumValueUpdate,
    IntegerDeltaUpdate,
    StringValueUpdate,
)
from talicada.schema.validation import ValidRequest, parse_request
from talicada.settings import PlatformSettings, load

SMALL = PlatformSettings(name="small", cores=4, memory=8, max_duration=100 * 86400)


class FakeClock:
    """A clock tests move by hand."""

    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def broker_on(
    store: Store, clock: FakeClock, platform: PlatformSettings = SMALL, **overrides: Any
) -> Broker:
    settings = msgspec.structs.replace(load(environ={}, **overrides), platforms=[platform])
    return Broker(settings, store, clock=clock)


#: The first transition of an offer made by hand (tests that call ``store.hold``).
OFFERED = Transition(time="2030-01-01T12:00:00Z", source="INITIAL", target="OFFERED", cause="t")


def ping(cores: tuple[int, int] = (1, 2), start: str | None = None) -> dict[str, object]:
    requested: dict[str, object] = {"duration": "PT10M"}
    if start:
        requested["start"] = start
    return {
        "executable": {"kind": "urn:talicada:kinds:executable:ping-1.0"},
        "compute": {"cores": {"min": cores[0], "max": cores[1]}},
        "schedule": {"requested": requested},
    }


def valid(doc: dict[str, object], clock: FakeClock) -> ValidRequest:
    return parse_request(doc, now=clock.now)


async def started_session(store: Store, clock: FakeClock) -> tuple[Broker, str]:
    """A broker over ``store`` and one of alice's sessions, accepted and started."""
    broker = broker_on(store, clock, max_offers=1)
    view = await broker.request(valid(ping(), clock), "alice")
    uuid = view.record.offers[0]
    await broker.update_phase(uuid, "alice", "ACCEPTED", "client")
    assert await broker.driver.start(uuid) == "ok"
    return broker, uuid


async def test_offers_hold_their_capacity_in_the_calendar(store: Store) -> None:
    clock = FakeClock()
    broker = broker_on(store, clock)
    view = await broker.request(valid(ping(), clock), "alice")
    assert view.record.result == "YES"
    entries = await store.entries("small")
    assert {uuid for uuid, _, _ in entries} == set(view.record.offers)
    assert all(state == "H" for _, state, _ in entries)
    first = view.offers[0].record.booking
    usage = await store.usage("small", first.first, first.last)
    assert usage.peak(first.first, first.last)[0] >= first.cores


async def test_hold_refuses_an_offer_that_no_longer_fits_and_writes_nothing(store: Store) -> None:
    clock = FakeClock()
    broker = broker_on(store, clock)
    # Given two planned offer sets for the only window, planned before either held
    doc = ping(cores=(4, 4), start="2030-01-01T12:05:00Z/PT1M")
    one = await broker.request(valid(doc, clock), "alice")
    assert one.record.result == "YES"
    record = one.offers[0].record
    clash = msgspec.structs.replace(record, uuid="00000000-0000-4000-8000-000000000001")
    offerset = msgspec.structs.replace(one.record, uuid="00000000-0000-4000-8000-000000000002")
    first = OFFERED
    # When the second is held over the first
    result = await store.hold(offerset, [clash], {"small": (4, 8)}, [first])
    # Then it is refused and nothing of it is stored
    assert result == 0
    assert await store.offerset(offerset.uuid) is None
    assert await store.sessions([clash.uuid]) == [None]


async def test_accepting_an_offer_books_it_and_rejects_its_siblings(store: Store) -> None:
    clock = FakeClock()
    broker = broker_on(store, clock)
    view = await broker.request(valid(ping(), clock), "alice")
    chosen = view.record.offers[1]
    live = await broker.update_phase(chosen, "alice", "ACCEPTED", "client")
    assert live.phase == "ACCEPTED"
    phases = [s.phase for s in await store.sessions(view.record.offers) if s]
    assert phases.count("ACCEPTED") == 1
    assert phases.count("REJECTED") == len(phases) - 1
    entries = await store.entries("small")
    assert [(uuid, state) for uuid, state, _ in entries] == [(chosen, "B")]
    history = await store.history(view.record.offers[0])
    assert [(h.source, h.target) for h in history] == [
        ("INITIAL", "OFFERED"),
        ("OFFERED", "REJECTED"),
    ]


async def test_a_second_accept_in_one_offer_set_is_refused(store: Store) -> None:
    clock = FakeClock()
    broker = broker_on(store, clock)
    view = await broker.request(valid(ping(), clock), "alice")
    await broker.update_phase(view.record.offers[0], "alice", "ACCEPTED", "client")
    with pytest.raises(Conflict) as refused:
        await broker.update_phase(view.record.offers[1], "alice", "ACCEPTED", "client")
    assert "REJECTED" in refused.value.messages[0].message


async def test_an_expired_offer_cannot_be_accepted_and_nothing_changes(store: Store) -> None:
    clock = FakeClock()
    broker = broker_on(store, clock)
    view = await broker.request(valid(ping(), clock), "alice")
    clock.now += timedelta(minutes=6)
    with pytest.raises(Conflict) as refused:
        await broker.update_phase(view.record.offers[0], "alice", "ACCEPTED", "client")
    assert refused.value.messages[0].kind == "urn:talicada:error:offer-expired"
    (live,) = await store.sessions([view.record.offers[0]])
    assert live is not None
    assert live.phase == "OFFERED"


async def test_due_timers_expire_offers_and_free_their_capacity(store: Store) -> None:
    clock = FakeClock()
    broker = broker_on(store, clock)
    view = await broker.request(valid(ping(), clock), "alice")
    assert await broker.driver.run_due() == 0
    clock.now += timedelta(minutes=5)
    assert await broker.driver.run_due() == len(view.record.offers)
    phases = {s.phase for s in await store.sessions(view.record.offers) if s}
    assert phases == {"EXPIRED"}
    assert await store.entries("small") == []
    assert await broker.driver.run_due() == 0  # timers are gone, not re-applied


async def test_a_claimed_timer_is_hidden_for_its_lease(store: Store) -> None:
    clock = FakeClock()
    broker = broker_on(store, clock)
    await broker.request(valid(ping(), clock), "alice")
    due = int((clock.now + timedelta(minutes=6)).timestamp() * 1000)
    claimed = await store.claim_due(due, 30_000, 100)
    assert claimed
    assert all(name.startswith("expire:") for name in claimed)
    assert await store.claim_due(due, 30_000, 100) == []
    assert sorted(await store.claim_due(due + 30_000, 30_000, 100)) == sorted(claimed)


async def test_cancelling_a_booking_frees_the_calendar(store: Store) -> None:
    clock = FakeClock()
    broker = broker_on(store, clock)
    view = await broker.request(valid(ping(), clock), "alice")
    uuid = view.record.offers[0]
    await broker.update_phase(uuid, "alice", "ACCEPTED", "client")
    live = await broker.update_phase(uuid, "alice", "CANCELLED", "client")
    assert live.phase == "CANCELLED"
    assert await store.entries("small") == []
    with pytest.raises(Conflict):
        await broker.update_phase(uuid, "alice", "CANCELLED", "client")


async def test_an_offer_cannot_be_cancelled_only_rejected(store: Store) -> None:
    clock = FakeClock()
    broker = broker_on(store, clock)
    view = await broker.request(valid(ping(), clock), "alice")
    with pytest.raises(Conflict):
        await broker.update_phase(view.record.offers[0], "alice", "CANCELLED", "client")
    live = await broker.update_phase(view.record.offers[0], "alice", "REJECTED", "client")
    assert live.phase == "REJECTED"


async def test_listing_pages_through_an_owners_sessions_newest_first(store: Store) -> None:
    clock = FakeClock()
    broker = broker_on(store, clock, max_offers=1)
    made = []
    for _ in range(5):
        view = await broker.request(valid(ping(cores=(1, 1)), clock), "alice")
        made.append(view.record.offers[0])
        clock.now += timedelta(seconds=1)
    await broker.request(valid(ping(cores=(1, 1)), clock), "bob")
    seen: list[str] = []
    cursor = None
    for _ in range(10):
        page, cursor = await broker.list_sessions("alice", cursor=cursor, limit=2)
        seen += [live.record.uuid for live in page]
        if cursor is None:
            break
    assert seen == list(reversed(made))


async def test_listing_filters_by_phase_and_creation_time(store: Store) -> None:
    clock = FakeClock()
    broker = broker_on(store, clock, max_offers=1)
    first = await broker.request(valid(ping(cores=(1, 1)), clock), "alice")
    clock.now += timedelta(minutes=1)
    second = await broker.request(valid(ping(cores=(1, 1)), clock), "alice")
    await broker.update_phase(second.record.offers[0], "alice", "ACCEPTED", "client")
    accepted, _ = await broker.list_sessions("alice", phases={"ACCEPTED"})
    assert [live.record.uuid for live in accepted] == second.record.offers
    early, _ = await broker.list_sessions("alice", until=clock.now - timedelta(seconds=30))
    assert [live.record.uuid for live in early] == first.record.offers
    late, _ = await broker.list_sessions("alice", since=clock.now - timedelta(seconds=30))
    assert [live.record.uuid for live in late] == second.record.offers


def duration_update(value: str) -> StringValueUpdate:
    return StringValueUpdate(path="schedule.available.duration", value=value)


async def test_a_booking_is_extended_where_the_calendar_has_room(store: Store) -> None:
    clock = FakeClock()
    broker = broker_on(store, clock, max_offers=1)
    view = await broker.request(valid(ping(cores=(2, 2)), clock), "alice")
    uuid = view.record.offers[0]
    before = view.offers[0].record.booking
    await broker.update_phase(uuid, "alice", "ACCEPTED", "client")
    live = await broker.update(uuid, "alice", duration_update("PT30M"))
    schedule = live.record.session.schedule
    assert schedule is not None
    assert schedule.available is not None
    assert schedule.available.duration == "PT30M"
    assert live.record.booking.last == before.last + 20
    ((_, _, entry),) = await store.entries("small")
    assert entry.last == before.last + 20
    usage = await store.usage("small", before.first, entry.last)
    assert usage.per_slot(before.first, entry.last)[0] == [2] * (entry.last - before.first)


async def test_an_extension_without_room_is_refused_and_changes_nothing(store: Store) -> None:
    clock = FakeClock()
    broker = broker_on(store, clock, max_offers=1)
    mine = await broker.request(
        valid(ping(cores=(4, 4), start="2030-01-01T12:05:00Z/PT1M"), clock), "alice"
    )
    uuid = mine.record.offers[0]
    await broker.update_phase(uuid, "alice", "ACCEPTED", "client")
    # Given someone else booked the whole platform right after my window
    theirs = await broker.request(valid(ping(cores=(4, 4)), clock), "bob")
    assert theirs.offers[0].record.booking.first <= mine.offers[0].record.booking.last + 1
    # When I ask for more time, I am told there is no room
    with pytest.raises(Conflict) as refused:
        await broker.update(uuid, "alice", duration_update("PT2H"))
    assert refused.value.messages[0].kind == "urn:talicada:error:no-room"
    (live,) = await store.sessions([uuid])
    assert live is not None
    assert live.record.booking == mine.offers[0].record.booking


async def test_shortening_a_booking_frees_its_tail(store: Store) -> None:
    clock = FakeClock()
    broker = broker_on(store, clock, max_offers=1)
    view = await broker.request(valid(ping(cores=(2, 2)), clock), "alice")
    uuid = view.record.offers[0]
    await broker.update_phase(uuid, "alice", "ACCEPTED", "client")
    shorter = await broker.update(
        uuid,
        "alice",
        IntegerDeltaUpdate(path="schedule.available.duration", delta=-5, units="minutes"),
    )
    assert shorter.record.booking.last == view.offers[0].record.booking.last - 5
    freed = (shorter.record.booking.last, view.offers[0].record.booking.last)
    usage = await store.usage("small", *freed)
    assert usage.per_slot(*freed)[0] == [0] * 5


async def test_a_finished_sessions_schedule_cannot_change(store: Store) -> None:
    clock = FakeClock()
    broker = broker_on(store, clock, max_offers=1)
    view = await broker.request(valid(ping(), clock), "alice")
    uuid = view.record.offers[0]
    await broker.update_phase(uuid, "alice", "REJECTED", "client")
    with pytest.raises(Conflict) as refused:
        await broker.update(uuid, "alice", duration_update("PT20M"))
    assert refused.value.messages[0].kind == "urn:talicada:error:schedule-fixed"


@pytest.mark.parametrize(
    ("update", "field"),
    [
        (StringValueUpdate(path="schedule.available.duration", value="P1Y"), "value"),
        (StringValueUpdate(path="schedule.available.duration", value="PT0S"), "value"),
        (
            IntegerDeltaUpdate(path="schedule.available.duration", delta=5, units="fortnights"),
            "units",
        ),
        (StringValueUpdate(path="executable.image", value="x"), "executable.image"),
        (EnumValueUpdate(path="schedule.available.duration", value="LONG"), "kind"),
    ],
    ids=["years", "zero", "units", "other-path", "enum-for-duration"],
)
async def test_bad_schedule_updates_name_the_field(
    store: Store, update: AnyUpdate, field: str
) -> None:
    clock = FakeClock()
    broker = broker_on(store, clock, max_offers=1)
    view = await broker.request(valid(ping(), clock), "alice")
    with pytest.raises(RequestInvalid) as refused:
        await broker.update(view.record.offers[0], "alice", update)
    assert refused.value.status == 400
    assert refused.value.messages[0].values["path"] == field


async def test_offers_are_found_beyond_the_first_chunk_of_the_calendar(store: Store) -> None:
    clock = FakeClock()
    broker = broker_on(store, clock, max_offers=1)
    # Given the whole platform booked for the next ten hours
    busy = {**ping(cores=(4, 4)), "schedule": {"requested": {"duration": "PT10H"}}}
    taken = await broker.request(valid(busy, clock), "bob")
    await broker.update_phase(taken.record.offers[0], "bob", "ACCEPTED", "client")
    # When someone asks for an hour any time in the next day
    view = await broker.request(valid(ping(cores=(1, 1)), clock), "alice")
    # Then the offer starts after the booking, past the first chunk the planner reads
    (offer,) = view.offers
    assert offer.record.booking.first >= taken.offers[0].record.booking.last - 1
    assert offer.record.booking.first - taken.offers[0].record.booking.first >= 10 * 60


async def test_a_year_wide_start_interval_is_planned_within_the_horizon(store: Store) -> None:
    clock = FakeClock()
    broker = broker_on(store, clock, max_offers=1)
    taken = await broker.request(
        valid({**ping(cores=(4, 4)), "schedule": {"requested": {"duration": "P40D"}}}, clock), "bob"
    )
    await broker.update_phase(taken.record.offers[0], "bob", "ACCEPTED", "client")
    view = await broker.request(
        valid(ping(cores=(1, 1), start="2030-01-01T12:00:00Z/P366D"), clock), "alice"
    )
    assert view.record.result == "NO"


async def test_resizing_a_running_session_moves_the_timer_that_ends_it(store: Store) -> None:
    clock = FakeClock()
    broker = broker_on(store, clock, max_offers=1)
    view = await broker.request(valid(ping(cores=(1, 1)), clock), "alice")
    uuid = view.record.offers[0]
    await broker.update_phase(uuid, "alice", "ACCEPTED", "client")
    assert await broker.driver.start(uuid) == "ok"  # PREPARING: the window-end timer is set
    await broker.update(uuid, "alice", duration_update("PT2H"))
    available = view.offers[0].record.session.schedule.available.start  # type: ignore[union-attr]
    start = parse_interval(available or "").start
    old_end = int((start + timedelta(minutes=10)).timestamp() * 1000)
    new_end = int((start + timedelta(hours=2)).timestamp() * 1000)
    assert f"window-end:{uuid}" not in await store.claim_due(old_end + 1000, 1, 100)
    assert f"window-end:{uuid}" in await store.claim_due(new_end, 1, 100)


async def test_a_session_longer_than_the_platform_books_is_a_no(store: Store) -> None:
    clock = FakeClock()
    broker = broker_on(store, clock)
    long = {**ping(), "schedule": {"requested": {"duration": "P101D"}}}
    view = await broker.request(valid(long, clock), "alice")
    assert view.record.result == "NO"
    assert view.record.messages[0].kind == "urn:talicada:error:duration-limit"


async def test_a_huge_integer_duration_update_is_a_400_not_an_overflow(store: Store) -> None:
    clock = FakeClock()
    broker = broker_on(store, clock, max_offers=1)
    view = await broker.request(valid(ping(), clock), "alice")
    huge = IntegerDeltaUpdate(path="schedule.available.duration", delta=10**15)
    with pytest.raises(RequestInvalid) as refused:
        await broker.update(view.record.offers[0], "alice", huge)
    assert refused.value.messages[0].values["path"] == "delta"


async def test_a_release_that_never_finishes_ends_the_session_at_its_deadline(
    store: Store,
) -> None:
    clock = FakeClock()
    broker, uuid = await started_session(store, clock)
    live = await broker.session(uuid, "alice")
    executable = live.record.session.executable.meta
    assert executable is not None
    assert executable.uuid is not None
    # Given the executable finished and the session is RELEASING, with no release worker
    done = Report(delivery="d1", event="e1", component=executable.uuid, phase="COMPLETED")
    assert await broker.driver.apply(uuid, done) == "ok"
    assert (await broker.session(uuid, "alice")).phase == "RELEASING"
    assert await store.entries("small") != []
    # When the release deadline passes
    clock.now += constants.RELEASE_DEADLINE + timedelta(seconds=1)
    await broker.driver.run_due()
    # Then the session is FAILED, its live components too, and its booking is free
    ended = await broker.session(uuid, "alice")
    assert ended.phase == "FAILED"
    assert ended.record.session.compute.phase == "FAILED"
    assert await store.entries("small") == []


async def test_paging_with_a_rare_phase_finds_it_behind_many_others(store: Store) -> None:
    clock = FakeClock()
    broker = broker_on(store, clock)
    old = await broker.request(valid(ping(cores=(1, 1)), clock), "alice")
    await broker.update_phase(old.record.offers[0], "alice", "ACCEPTED", "client")
    for _ in range(60):  # 240 newer offers in other phases
        clock.now += timedelta(seconds=1)
        await broker.request(valid(ping(cores=(1, 1)), clock), "alice")
    found: list[str] = []
    cursor = None
    for _ in range(100):
        page, cursor = await broker.list_sessions(
            "alice", phases={"ACCEPTED"}, cursor=cursor, limit=1
        )
        found += [live.record.uuid for live in page]
        if cursor is None:
            break
    assert found == [old.record.offers[0]]


async def test_the_memory_store_forgets_finished_sessions_after_the_retention_period() -> None:
    store = MemoryStore()
    clock = FakeClock()
    broker = broker_on(store, clock, max_offers=1)
    view = await broker.request(valid(ping(), clock), "alice")
    uuid = view.record.offers[0]
    await broker.update_phase(uuid, "alice", "REJECTED", "client")
    later = int(time.time() * 1000) + int(constants.SESSION_RETENTION.total_seconds() * 1000)
    assert await store.claim_due(later - 60_000, 1, 100) == []
    assert await store.sessions([uuid]) != [None]
    await store.claim_due(later + 60_000, 1, 100)
    assert await store.sessions([uuid]) == [None]
    assert await store.offerset(view.record.uuid) is None
    page, _ = await broker.list_sessions("alice")
    assert page == []


async def test_a_window_end_that_came_due_before_an_extension_waits_for_the_new_end(
    store: Store,
) -> None:
    clock = FakeClock()
    broker = broker_on(store, clock, max_offers=1)
    view = await broker.request(valid(ping(cores=(1, 1)), clock), "alice")
    uuid = view.record.offers[0]
    await broker.update_phase(uuid, "alice", "ACCEPTED", "client")
    await broker.driver.start(uuid)
    await broker.update(uuid, "alice", duration_update("PT2H"))
    # When the old window-end step runs anyway (claimed just before the extension)
    clock.now += timedelta(minutes=15)
    assert await broker.driver.advance(uuid, engine.end_of_window) == "ok"
    # Then the session keeps running, and the timer waits for the new end
    assert (await broker.session(uuid, "alice")).phase == "PREPARING"
    soon = int((clock.now + timedelta(minutes=5)).timestamp() * 1000)
    assert f"window-end:{uuid}" not in await store.claim_due(soon, 1, 100)


async def test_a_report_dated_by_its_service_dates_the_transitions_it_causes(
    store: Store,
) -> None:
    clock = FakeClock()
    broker, uuid = await started_session(store, clock)
    executable = (await broker.session(uuid, "alice")).record.session.executable.meta
    assert executable is not None
    assert executable.uuid is not None
    # Given a batch job that really started 40 s before the launcher saw it
    clock.now += timedelta(minutes=5)
    started = clock.now - timedelta(seconds=40)
    running = Report(
        delivery="d1",
        event="e1",
        component=executable.uuid,
        phase="RUNNING",
        at=format_instant(started),
    )
    assert await broker.driver.apply(uuid, running) == "ok"
    # Then the session and the executable went RUNNING when the job started
    history = await store.history(uuid)
    assert {t.time for t in history if t.target == "RUNNING"} == {format_instant(started)}
    # and a time in the future (a skewed clock) is taken as now, never later
    ended = Report(
        delivery="d2",
        event="e2",
        component=executable.uuid,
        phase="COMPLETED",
        at=format_instant(clock.now + timedelta(hours=1)),
    )
    assert await broker.driver.apply(uuid, ended) == "ok"
    history = await store.history(uuid)
    assert {t.time for t in history if t.target == "RELEASING"} == {format_instant(clock.now)}


async def test_a_finished_sessions_history_is_kept_whole_and_compact(store: Store) -> None:
    clock = FakeClock()
    broker, uuid = await started_session(store, clock)
    running = await store.history(uuid)
    # When the session ends (cancelled: a final phase reached through commit)
    await broker.update_phase(uuid, "alice", "CANCELLED", "client")
    # Then every transition is still there, oldest first, and reads from an offset work
    ended = await store.history(uuid)
    assert ended[: len(running)] == running
    assert [t.target for t in ended][:2] == ["OFFERED", "ACCEPTED"]
    assert ended[-1].target == "CANCELLED"
    assert await store.history(uuid, len(running)) == ended[len(running) :]
    if isinstance(store, RedisStore):
        # …kept compressed in the session's hash, the list gone
        assert await store.client.exists(store.keys.history(uuid)) == 0
        assert await store.client.hexists(store.keys.session(uuid), "history")
        # A record appended after compaction (nothing should, but) is not lost
        late = Transition(time="2030-01-01T13:00:00Z", source="X", target="Y", cause="late")
        await store.client.rpush(store.keys.history(uuid), msgspec.json.encode(late))
        assert (await store.history(uuid))[-1] == late
        assert await store.compact_history(uuid)
        assert await store.history(uuid) == [*ended, late]


async def test_a_finished_sessions_record_reads_back_whole_and_is_kept_compressed(
    store: Store,
) -> None:
    clock = FakeClock()
    broker, uuid = await started_session(store, clock)
    running = await store.load(uuid)
    assert running is not None
    # When the session ends through commit
    await broker.update_phase(uuid, "alice", "CANCELLED", "client")
    # Then every read gives the whole record
    ended = await store.load(uuid)
    assert ended is not None
    assert ended[0].phase == "CANCELLED"
    assert ended[0].record.uuid == uuid
    assert ended[0].record.session.executable == running[0].record.session.executable
    (listed,) = await store.sessions([uuid])
    assert listed is not None
    assert listed.record == ended[0].record
    page, _ = await store.list_sessions(
        "alice", phases=["CANCELLED"], since=None, until=None, cursor=None, limit=10
    )
    assert [live.record for live in page] == [ended[0].record]
    if isinstance(store, RedisStore):
        # …kept zlib-compressed in Redis once final (a live one stays plain msgpack)
        doc = await store.client.hget(store.keys.session(uuid), "doc")
        assert isinstance(doc, bytes)
        assert doc[:1] == b"x"
        assert len(doc) < len(msgspec.msgpack.encode(ended[0].record))


async def test_forgetting_deletes_a_final_session_and_tells_observers(store: Store) -> None:
    clock = FakeClock()
    broker, uuid = await started_session(store, clock)
    # A live session is not forgotten: nothing changes
    refused = await store.forget(uuid, lifecycle.FINAL)
    assert refused.status == "phase"
    assert (await store.sessions([uuid]))[0] is not None
    await broker.update_phase(uuid, "alice", "CANCELLED", "client")
    position, _ = await store.bus.tail(LIFECYCLE, "$")
    # Once final it is: gone from reads, history and lists, and observers are told
    assert (await store.forget(uuid, lifecycle.FINAL)).ok
    _, told = await store.bus.tail(LIFECYCLE, position, block_ms=1000)
    assert [
        (type(e), e.session, e.body.owner) for e in told if isinstance(e, SessionForgotten)
    ] == [(SessionForgotten, uuid, "alice")]
    assert await store.sessions([uuid]) == [None]
    assert await store.load(uuid) is None
    assert await store.history(uuid) == []
    page, _ = await store.list_sessions(
        "alice", phases=[], since=None, until=None, cursor=None, limit=10
    )
    assert uuid not in {live.record.uuid for live in page}
    assert (await store.forget(uuid, lifecycle.FINAL)).status == "missing"


async def test_every_recorded_transition_time_is_to_the_millisecond(store: Store) -> None:
    clock = FakeClock()
    clock.now += timedelta(microseconds=123_456)
    broker = broker_on(store, clock)
    view = await broker.request(valid(ping(), clock), "alice")
    first, second, *_ = view.record.offers
    await broker.update_phase(first, "alice", "REJECTED", "client")
    times = [t.time for t in await store.history(first)]
    clock.now += timedelta(minutes=5, microseconds=1)
    assert await broker.driver.run_due() >= 1  # the others expire
    times += [t.time for t in await store.history(second)]
    assert len(times) == 4
    assert all(t.endswith(".123Z") for t in times), times
