"""The event layer: the envelope, both buses held to one behavioural suite, the consumer loop.

Every test taking ``bus`` or ``make_bus`` runs twice, against the in-memory bus
and against Redis, each Redis bus under its own key prefix (deleted afterwards).
Timings are test-sized (200 ms reclaim idle, 20 ms first retry) and every wait is
bounded, so the file runs in a few seconds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta

import msgspec
import pytest
import pytest_asyncio
import redis.asyncio
from structlog.testing import capture_logs

from talicada.events import Bus, Delivery, MemoryBus, RedisBus, backoff, decode, encode
from talicada.events.envelope import SessionChanged
from tests.events_helpers import (
    RECLAIM_MS,
    TIMEOUT,
    event,
    fast_consumer,
    flagged,
    number,
    receive_until,
    running,
    wait_until,
)

AnyBus = MemoryBus | RedisBus
BusFactory = Callable[..., Awaitable[AnyBus]]


@pytest_asyncio.fixture(params=["memory", "redis"])
async def make_bus(
    request: pytest.FixtureRequest, redis_url: str, redis_key_prefix: str
) -> AsyncIterator[BusFactory]:
    """Makes buses of one kind; ``maxlen`` and ``reclaim_idle_ms`` may be given."""
    made: list[AnyBus] = []

    async def make(*, maxlen: int = 1000, reclaim_idle_ms: int = RECLAIM_MS) -> AnyBus:
        bus: AnyBus
        if request.param == "memory":
            bus = MemoryBus(maxlen=maxlen, reclaim_idle_ms=reclaim_idle_ms)
        else:
            client = redis.asyncio.Redis.from_url(redis_url)
            bus = RedisBus(
                client, prefix=redis_key_prefix, maxlen=maxlen, reclaim_idle_ms=reclaim_idle_ms
            )
        made.append(bus)
        return bus

    yield make
    for bus in made:
        await bus.close()


@pytest_asyncio.fixture
async def bus(make_bus: BusFactory) -> AnyBus:
    """A bus with stream ``work`` and its group ``workers`` ready."""
    made = await make_bus()
    await made.ensure_group("work", "workers")
    return made


# --------------------------------------------------------------------------- envelope


def test_an_event_survives_encoding_and_omits_defaults() -> None:
    original = event(1)
    data = encode(original)
    assert decode(data) == original
    assert b"attempt" not in data
    assert b"deadline" not in data


def test_fields_from_a_newer_producer_are_ignored() -> None:
    data = (
        b'{"id":"e1","type":"session.transition","session":"s","created":"2026-01-01T00:00:00Z",'
        b'"new":1,"body":{"from":"A","to":"B","cause":"c","time":"t","newer":2}}'
    )
    assert decode(data).id == "e1"


def test_an_event_body_decodes_into_the_class_of_its_type() -> None:
    sent = event(7)
    got = decode(encode(sent))
    assert isinstance(got, SessionChanged)
    assert got.type == "session.transition"
    assert got.body.time == "7"


def test_an_event_of_an_unknown_type_does_not_decode() -> None:
    with pytest.raises(msgspec.ValidationError, match="type"):
        decode(b'{"id":"e1","type":"t.x","session":"s","created":"2026-01-01T00:00:00Z"}')


def test_an_event_missing_a_required_field_does_not_decode() -> None:
    with pytest.raises(msgspec.ValidationError, match=r"created|from"):
        decode(b'{"id":"e1","type":"session.transition","session":"s","body":{}}')


def test_backoff_doubles_per_delivery_up_to_the_cap() -> None:
    delays = [backoff(n, timedelta(seconds=1), timedelta(seconds=60)) for n in (1, 2, 3, 7, 10**6)]
    assert [d.total_seconds() for d in delays] == [1, 2, 4, 60, 60]


# --------------------------------------------------------------------------- bus


async def test_published_events_are_delivered_once_to_a_group(bus: AnyBus) -> None:
    sent = [event(n) for n in range(3)]
    ids = [await bus.publish("work", e) for e in sent]
    got = await receive_until(bus, "work", "workers", "c1")
    assert [(d.message_id, d.event, d.deliveries) for d in got] == [
        (i, e, 1) for i, e in zip(ids, sent, strict=True)
    ]
    assert await bus.receive("work", "workers", "c2", block_ms=0) == []


async def test_every_group_gets_every_event(bus: AnyBus) -> None:
    await bus.ensure_group("work", "observers")
    await bus.ensure_group("work", "observers")  # idempotent
    ids = [await bus.publish("work", event(n)) for n in range(3)]
    for group in ("workers", "observers"):
        got = await receive_until(bus, "work", group, "c1")
        assert [d.message_id for d in got] == ids


async def test_consumers_of_one_group_split_the_events(bus: AnyBus) -> None:
    ids = [await bus.publish("work", event(n)) for n in range(10)]
    first = await bus.receive("work", "workers", "a", count=4)
    second = await bus.receive("work", "workers", "b", count=100)
    assert len(first) == 4
    assert sorted(d.message_id for d in first + second) == sorted(ids)


async def test_receive_waits_for_a_publish_up_to_block_ms(bus: AnyBus) -> None:
    waiting = asyncio.create_task(bus.receive("work", "workers", "c1", block_ms=3000))
    await asyncio.sleep(0.05)
    started = time.monotonic()
    await bus.publish("work", event())
    got = await asyncio.wait_for(waiting, TIMEOUT)
    assert len(got) == 1
    assert time.monotonic() - started < 1.0


async def test_a_dead_consumers_message_is_reclaimed_after_the_idle_time(bus: AnyBus) -> None:
    # Given a message delivered to a consumer that then dies without acking
    message_id = await bus.publish("work", event())
    await receive_until(bus, "work", "workers", "dead")
    # Then nobody else gets it before the reclaim idle time…
    assert await bus.receive("work", "workers", "alive") == []
    # …and another consumer gets it, as its second delivery, after it
    await asyncio.sleep(RECLAIM_MS / 1000)
    got = await receive_until(bus, "work", "workers", "alive")
    assert [(d.message_id, d.deliveries) for d in got] == [(message_id, 2)]


async def test_an_acked_message_is_never_redelivered(bus: AnyBus) -> None:
    await bus.publish("work", event())
    (delivery,) = await receive_until(bus, "work", "workers", "c1")
    await bus.ack(delivery, "workers")
    await asyncio.sleep(RECLAIM_MS * 1.5 / 1000)
    assert await bus.receive("work", "workers", "c2") == []
    assert await bus.pending("work", "workers") == 0


@pytest.mark.parametrize("delay_ms", [100, 2 * RECLAIM_MS], ids=["short", "beyond-idle"])
async def test_retry_later_hides_the_message_for_the_delay_then_redelivers_it(
    bus: AnyBus, delay_ms: int
) -> None:
    await bus.publish("work", event())
    (delivery,) = await receive_until(bus, "work", "workers", "c1")
    started = time.monotonic()
    await bus.retry_later(delivery, "workers", delay_ms)
    # Hidden even past the reclaim idle time when the delay is longer than that.
    await asyncio.sleep(min(delay_ms, RECLAIM_MS) * 0.8 / 1000)
    assert await bus.receive("work", "workers", "c2") == []
    (again,) = await receive_until(bus, "work", "workers", "c2")
    assert time.monotonic() - started >= delay_ms / 1000 * 0.9
    assert (again.message_id, again.deliveries) == (delivery.message_id, 2)
    assert await bus.pending("work", "workers") == 1


async def test_a_due_retry_that_is_also_idle_is_delivered_once(bus: AnyBus) -> None:
    # Given a retry due after the idle time, and nobody receiving meanwhile
    await bus.publish("work", event())
    (delivery,) = await receive_until(bus, "work", "workers", "c1")
    await bus.retry_later(delivery, "workers", 2 * RECLAIM_MS)
    await asyncio.sleep(3 * RECLAIM_MS / 1000)
    # Then it is both due and idle, yet delivered once
    got = await bus.receive("work", "workers", "c2")
    assert [(d.message_id, d.deliveries) for d in got] == [(delivery.message_id, 2)]


async def test_a_message_that_is_not_an_event_goes_to_the_dead_letter_stream(
    bus: AnyBus,
) -> None:
    junk = [b"not json", b'{"id": "e1"}']
    junk_ids = [await bus.publish_raw("work", payload) for payload in junk]
    good = await bus.publish("work", event())
    got = await receive_until(bus, "work", "workers", "c1")
    assert [d.message_id for d in got] == [good]
    letters = await bus.dead_letters()
    assert [(d.message_id, d.payload, d.event) for d in letters] == [
        (i, p, None) for i, p in zip(junk_ids, junk, strict=True)
    ]
    assert all(d.reason.startswith("undecodable event") and d.stream == "work" for d in letters)
    assert await bus.pending("work", "workers") == 1  # only the good one


async def test_streams_are_trimmed_to_about_maxlen(make_bus: BusFactory) -> None:
    bus = await make_bus(maxlen=50)
    for n in range(400):
        await bus.publish("work", event(n))
    assert 50 <= await bus.stream_length("work") <= 200


async def test_a_pending_message_trimmed_away_is_dropped_on_reclaim(make_bus: BusFactory) -> None:
    # Given a message pending with a dead consumer, then trimmed from the stream
    bus = await make_bus(maxlen=10)
    await bus.ensure_group("work", "workers")
    first = await bus.publish("work", event())
    await receive_until(bus, "work", "workers", "dead")
    for n in range(300):
        await bus.publish("work", event(n))
    assert await bus.stream_length("work") < 300
    # When another consumer reclaims, it skips it and reads on
    await asyncio.sleep(RECLAIM_MS / 1000)
    got = await receive_until(bus, "work", "workers", "alive", count=500)
    assert got
    assert first not in {d.message_id for d in got}
    for delivery in got:
        await bus.ack(delivery, "workers")
    assert await bus.pending("work", "workers") == 0


async def test_tail_follows_a_stream_without_taking_messages_from_groups(bus: AnyBus) -> None:
    await bus.publish("work", event(0))
    position, seen = await bus.tail("work", "$")
    assert seen == []
    sent = [event(1), event(2)]
    for e in sent:
        await bus.publish("work", e)
    position, seen = await bus.tail("work", position, block_ms=1000)
    assert seen == sent
    assert len(await receive_until(bus, "work", "workers", "c1")) == 3


# --------------------------------------------------------------------------- consumer


async def test_a_poison_message_is_dead_lettered_after_max_deliveries_and_never_blocks(
    bus: AnyBus,
) -> None:
    runs: list[int] = []
    told: list[tuple[str, str]] = []

    async def handler(delivery: Delivery) -> None:
        runs.append(number(delivery.event))
        if flagged(delivery.event, "poison"):
            raise RuntimeError("cannot launch")

    async def on_dead_letter(delivery: Delivery, reason: str) -> None:
        told.append((delivery.event.id, reason))

    poison, good = event(0, poison=True), event(1)
    consumer = fast_consumer(
        bus, handler, concurrency=1, max_deliveries=3, on_dead_letter=on_dead_letter
    )
    with capture_logs() as logs:
        async with running(consumer):
            await bus.publish("work", poison)
            await bus.publish("work", good)
            await wait_until(lambda: consumer.stats.dead_lettered == 1)
            await wait_until(lambda: consumer.stats.processed == 1)
    assert runs.count(0) == 3
    assert runs.count(1) == 1
    (letter,) = await bus.dead_letters()
    assert (letter.event, letter.reason, letter.deliveries) == (poison, "cannot launch", 3)
    assert told == [(poison.id, "cannot launch")]
    assert (consumer.stats.retried, await bus.pending("work", "workers")) == (2, 0)
    names = [entry["event"] for entry in logs]
    assert names.count("event.retry") == 2
    assert names.count("event.dead_lettered") == 1
    assert all(e["session"] == poison.session for e in logs if e["event"] == "event.retry")


async def test_a_message_delivered_more_than_max_times_is_dead_lettered_without_running(
    bus: AnyBus,
) -> None:
    # Given a message whose consumers died twice (two deliveries, never acked)
    await bus.publish("work", event())
    await receive_until(bus, "work", "workers", "dead-1")
    await asyncio.sleep(RECLAIM_MS / 1000)
    await receive_until(bus, "work", "workers", "dead-2")
    await asyncio.sleep(RECLAIM_MS / 1000)
    runs: list[Delivery] = []

    async def handler(delivery: Delivery) -> None:
        runs.append(delivery)

    # When a consumer allowing two deliveries gets its third
    consumer = fast_consumer(bus, handler, max_deliveries=2)
    async with running(consumer):
        await wait_until(lambda: consumer.stats.dead_lettered == 1)
    # Then it is given up on without running the handler
    assert runs == []
    (letter,) = await bus.dead_letters()
    assert letter.deliveries == 3
    assert "3 times" in letter.reason


async def test_graceful_stop_waits_for_handlers_in_flight_and_acks_them(bus: AnyBus) -> None:
    started, release = asyncio.Event(), asyncio.Event()

    async def handler(delivery: Delivery) -> None:
        if flagged(delivery.event, "slow"):
            started.set()
            await release.wait()

    consumer = fast_consumer(bus, handler)
    async with running(consumer) as (stop, task):
        await bus.publish("work", event(0))
        await bus.publish("work", event(1, slow=True))
        await wait_until(lambda: consumer.stats.processed == 1 and started.is_set())
        stop.set()
        await asyncio.sleep(0.2)
        assert not task.done()  # still waiting for the slow handler
        release.set()
    assert consumer.stats.processed == 2
    assert await bus.pending("work", "workers") == 0


async def test_a_handler_abandoned_at_stop_leaves_its_message_pending_for_reclaim(
    bus: AnyBus,
) -> None:
    async def handler(delivery: Delivery) -> None:
        if flagged(delivery.event, "slow"):
            await asyncio.Event().wait()  # never finishes

    consumer = fast_consumer(bus, handler)
    async with running(consumer, grace=timedelta(milliseconds=100)):
        await bus.publish("work", event(0))
        slow = await bus.publish("work", event(1, slow=True))
        await wait_until(lambda: consumer.stats.processed == 1 and consumer.stats.in_flight == 1)
    assert (consumer.stats.processed, consumer.stats.in_flight) == (1, 0)
    assert await bus.pending("work", "workers") == 1
    await asyncio.sleep(RECLAIM_MS / 1000)
    (again,) = await receive_until(bus, "work", "workers", "c2")
    assert (again.message_id, again.deliveries) == (slow, 2)


async def test_the_consumer_never_runs_more_handlers_than_its_concurrency(bus: AnyBus) -> None:
    active, most = 0, 0

    async def handler(delivery: Delivery) -> None:
        nonlocal active, most
        active += 1
        most = max(most, active)
        await asyncio.sleep(0.03)
        active -= 1

    consumer = fast_consumer(bus, handler, concurrency=3)
    for n in range(10):
        await bus.publish("work", event(n))
    async with running(consumer):
        await wait_until(lambda: consumer.stats.processed == 10)
    assert most == 3


def _both_implement_the_bus_protocol(memory: MemoryBus, on_redis: RedisBus) -> tuple[Bus, Bus]:
    return memory, on_redis  # checked by mypy, not run


# --------------------------------------------------------------------------- memory clock


async def test_the_memory_bus_reclaims_exactly_after_the_idle_time_on_its_clock() -> None:
    now = [1000.0]
    bus = MemoryBus(reclaim_idle_ms=30_000, clock=lambda: now[0])
    await bus.ensure_group("work", "workers")
    await bus.publish("work", event())
    assert len(await bus.receive("work", "workers", "dead")) == 1
    now[0] += 29.999
    assert await bus.receive("work", "workers", "alive") == []
    now[0] += 0.001
    (again,) = await bus.receive("work", "workers", "alive")
    assert again.deliveries == 2


async def test_a_handler_longer_than_the_reclaim_idle_time_keeps_its_message(
    bus: AnyBus,
) -> None:
    # Given two consumers in one group and a handler three reclaim periods long
    runs: list[str] = []

    async def slow(delivery: Delivery) -> None:
        runs.append(delivery.message_id)
        await asyncio.sleep(3 * RECLAIM_MS / 1000)

    await bus.ensure_group("work", "workers")
    first = fast_consumer(bus, slow, name="c1")
    second = fast_consumer(bus, slow, name="c2")
    async with running(first), running(second):
        await bus.publish("work", event(1))
        await wait_until(lambda: first.stats.processed + second.stats.processed == 1)
        await asyncio.sleep(2 * RECLAIM_MS / 1000)
    # Then it ran once: the heartbeat kept the other consumer from reclaiming it
    assert len(runs) == 1
    assert await bus.pending("work", "workers") == 0
