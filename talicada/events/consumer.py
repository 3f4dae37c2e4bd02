"""The consume loop every worker runs: claim, run, record, ack.

Each step is a small method so the loop stays readable and each policy sits in
one place:

* **claim** — :meth:`Consumer._claim` receives as many deliveries as there are
  free handler slots (reclaimed and retried ones first; see the Bus protocol);
* **run** — :meth:`Consumer._run` calls the handler, unless the message has
  already been delivered more than ``max_deliveries`` times (its consumers kept
  dying) or its event's ``deadline`` has passed, in which case it is given up
  on without running. A handler still running at the deadline is cancelled
  and the message given up on: a handler that hangs cannot keep its message
  for ever through the heartbeat;
* **record** — the handler's job: returning normally means its effect is
  recorded (callback made, state written). Raising means it is not;
* **ack** — :meth:`Consumer._ack` on success (the one acknowledgement point);
  on failure :meth:`Consumer._retry` later with exponential backoff (jittered,
  so consumers failing together do not retry together) or, at
  ``max_deliveries`` or past the deadline, :meth:`Consumer._give_up`:
  dead-letter the message and
  tell ``on_dead_letter`` (the worker runtime reports the component FAILED).
  A poison message therefore costs at most ``max_deliveries`` runs and never
  blocks the messages behind it. The ack is shielded from cancellation: a
  stop that lands while it is on the wire does not lose it half-way.

Handlers must be idempotent: delivery is at-least-once, and a handler that
finished but whose ack was lost (crash, connection drop) runs again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog

from talicada import constants
from talicada.events.bus import Bus, Delivery, backoff, jittered
from talicada.events.envelope import Event
from talicada.outage import Outage
from talicada.redisconn import is_unavailable
from talicada.schema.iso8601 import parse_instant

__all__ = ["Consumer", "ConsumerStats", "Handler", "OnDeadLetter"]

Handler = Callable[[Delivery], Awaitable[None]]
OnDeadLetter = Callable[[Delivery, str], Awaitable[None]]
Clock = Callable[[], datetime]

_Logger = structlog.typing.FilteringBoundLogger


@dataclass(slots=True)
class ConsumerStats:
    """Counters for health checks and metrics, since the consumer started."""

    processed: int = 0  #: handlers that finished and were acked
    retried: int = 0  #: failed runs scheduled for another delivery
    dead_lettered: int = 0  #: messages given up on
    overdue: int = 0  #: handlers cancelled at their event's deadline
    in_flight: int = 0  #: handlers running now


class Consumer:
    """Consumes one stream as one member of a consumer group.

    Args:
        bus: Where the stream lives.
        stream: Role name of the stream (``launch``).
        group: Consumer group; every group gets every message once.
        consumer_name: This consumer, unique within the group and stable
            across restarts of the same process slot where possible.
        handler: Does the work; returning means the effect is recorded.
        concurrency: Most handlers running at once.
        max_deliveries: Runs before a failing message is dead-lettered.
        on_dead_letter: Told ``(delivery, reason)`` after a message is
            dead-lettered; its own failures are logged, not retried.
        block_ms: Longest wait for new messages per receive; also bounds how
            long a stop waits for the receive in progress.
        retry_base: First retry delay (doubling per delivery).
        retry_max: Longest retry delay.
        heartbeat: How often a message being handled is touched; a third of the
            bus's reclaim idle time keeps it from being reclaimed.
        clock: The wall clock that event deadlines are compared with.
    """

    def __init__(
        self,
        bus: Bus,
        stream: str,
        group: str,
        consumer_name: str,
        handler: Handler,
        *,
        concurrency: int = 4,
        max_deliveries: int = constants.MAX_DELIVERIES,
        on_dead_letter: OnDeadLetter | None = None,
        block_ms: int = int(constants.STREAM_BLOCK.total_seconds() * 1000),
        retry_base: timedelta = constants.RETRY_BASE,
        retry_max: timedelta = constants.RETRY_MAX,
        heartbeat: timedelta = constants.RECLAIM_IDLE / 3,
        clock: Clock = lambda: datetime.now(UTC),
    ) -> None:
        if concurrency < 1 or max_deliveries < 1:
            raise ValueError("concurrency and max_deliveries must be at least 1")
        self.bus = bus
        self.stream = stream
        self.group = group
        self.consumer_name = consumer_name
        self.handler = handler
        self.concurrency = concurrency
        self.max_deliveries = max_deliveries
        self.on_dead_letter = on_dead_letter
        self.block_ms = block_ms
        self.retry_base = retry_base
        self.retry_max = retry_max
        self.heartbeat = heartbeat
        self.clock = clock
        self.stats = ConsumerStats()
        # Resolved per consumer, not per module: a logger cached at import would
        # ignore configuration made later (and structlog.testing.capture_logs).
        self._log: _Logger = structlog.get_logger("talicada.events").bind(
            stream=stream, group=group, consumer=consumer_name
        )
        #: The bus being away: logged once per outage, retried with growing pauses.
        self._outage = Outage("bus", self._log, base=0.2, cap=retry_max.total_seconds() / 12)

    async def run(self, stop: asyncio.Event, *, grace: timedelta | None = None) -> None:
        """Consume until ``stop`` is set, then wait for the handlers in flight.

        Waits at most ``grace`` for them (None: as long as they take); handlers
        still running then, or when this coroutine is cancelled, are cancelled
        and their messages stay pending, to be reclaimed by another consumer
        after the reclaim idle time. Nothing is acked that did not finish.
        """
        await self.bus.ensure_group(self.stream, self.group)
        slots = asyncio.Semaphore(self.concurrency)
        tasks: set[asyncio.Task[None]] = set()
        try:
            while not stop.is_set():
                async with slots:  # wait for a free slot before claiming more
                    pass
                if stop.is_set():
                    break
                for delivery in await self._claim(self.concurrency - self.stats.in_flight, stop):
                    await slots.acquire()  # never waits: claimed no more than were free
                    self.stats.in_flight += 1
                    task = asyncio.create_task(self._run(delivery, slots))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
            if tasks:
                timeout = grace.total_seconds() if grace is not None else None
                await asyncio.wait(tasks, timeout=timeout)
        finally:
            # Grace exceeded, or run() cancelled: abandon what is left unacked.
            left = list(tasks)
            for task in left:
                task.cancel()
            if left:
                await asyncio.gather(*left, return_exceptions=True)

    async def _claim(self, free: int, stop: asyncio.Event) -> list[Delivery]:
        try:
            received = await self.bus.receive(
                self.stream, self.group, self.consumer_name, count=free, block_ms=self.block_ms
            )
        except Exception as error:
            # A bus outage must not end the worker: pause, try again; the
            # outage is logged when it starts and when it ends, not per try.
            pause = self._outage.failed(error)
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), pause)
            if "NOGROUP" in str(error):
                # Redis came back without its data (no AOF): make the group again.
                with suppress(Exception):
                    await self.bus.ensure_group(self.stream, self.group)
            return []
        self._outage.recovered()
        return received

    async def _run(self, delivery: Delivery, slot: asyncio.Semaphore) -> None:
        # Every line written while this event is handled, by us or by a library,
        # names the session and the event (talicada/logs.py).
        with structlog.contextvars.bound_contextvars(
            session=delivery.event.session,
            event_id=delivery.event.id,
            event_type=delivery.event.type,
        ):
            await self._settle(delivery, slot)

    async def _settle(self, delivery: Delivery, slot: asyncio.Semaphore) -> None:
        """Handle one delivery, then ack, retry or dead-letter it; frees ``slot``."""
        log = self._log.bind(
            session=delivery.event.session,
            event_id=delivery.event.id,
            event_type=delivery.event.type,
            message_id=delivery.message_id,
            deliveries=delivery.deliveries,
        )
        try:
            if delivery.deliveries > self.max_deliveries:
                reason = f"delivered {delivery.deliveries} times without completing"
                await self._give_up(delivery, log, reason)
                return
            left = self._time_left(delivery.event)
            if left is not None and left <= 0:
                reason = f"its deadline {delivery.event.deadline} passed before it was handled"
                await self._give_up(delivery, log, reason)
                return
            log.info("event.received")
            # A long handler keeps its message: without this, after the reclaim
            # idle time another consumer would start the same work again.
            heartbeat = asyncio.create_task(self._keep(delivery))
            try:
                async with asyncio.timeout(left) as limit:
                    await self.handler(delivery)
            except Exception as exc:
                if isinstance(exc, TimeoutError) and limit.expired():
                    self.stats.overdue += 1
                    reason = f"not done by its deadline {delivery.event.deadline}"
                    await self._give_up(delivery, log, reason)
                    return
                reason = str(exc) or type(exc).__name__
                if delivery.deliveries < self.max_deliveries:
                    await self._retry(delivery, log, reason, exc)
                else:
                    await self._give_up(delivery, log, reason)
            else:
                # Shielded: a cancellation now must not lose the ack of finished work.
                await asyncio.shield(self._ack(delivery, log))
            finally:
                heartbeat.cancel()
        except Exception as error:
            # The bus failed while settling: the message stays pending and is
            # reclaimed later, which is the at-least-once promise. An outage
            # is logged once (by the outage tracker), not per message.
            if is_unavailable(error):
                self._outage.failed(error)
            else:
                log.exception("event.settle_failed")
        finally:
            self.stats.in_flight -= 1
            slot.release()

    def _time_left(self, event: Event) -> float | None:
        """Seconds until ``event``'s deadline (None: it has none, or none readable)."""
        if event.deadline is None:
            return None
        try:
            deadline = parse_instant(event.deadline)
        except ValueError:
            self._log.warning("event.bad_deadline", deadline=event.deadline[:40])
            return None
        return (deadline - self.clock()).total_seconds()

    async def _keep(self, delivery: Delivery) -> None:
        """Touch the message every third of the reclaim idle time while it is handled."""
        period = self.heartbeat.total_seconds()
        while True:
            await asyncio.sleep(period)
            try:
                await self.bus.touch(delivery, self.group, self.consumer_name)
            except Exception as error:  # the next touch may work; reclaim is the fallback
                if is_unavailable(error):
                    self._outage.failed(error)  # logged once per outage
                else:
                    self._log.warning("event.touch_failed", message_id=delivery.message_id)

    async def _ack(self, delivery: Delivery, log: _Logger) -> None:
        """The named acknowledgement point: the handler returned, its effect is recorded."""
        await self.bus.ack(delivery, self.group)
        self.stats.processed += 1
        log.info("event.acked")

    async def _retry(self, delivery: Delivery, log: _Logger, reason: str, exc: Exception) -> None:
        delay = jittered(
            backoff(delivery.deliveries, self.retry_base, self.retry_max).total_seconds()
        )
        await self.bus.retry_later(delivery, self.group, int(delay * 1000))
        self.stats.retried += 1
        log.warning("event.retry", reason=reason, delay=round(delay, 3), exc_info=exc)

    async def _give_up(self, delivery: Delivery, log: _Logger, reason: str) -> None:
        await self.bus.dead_letter(delivery, self.group, reason)
        self.stats.dead_lettered += 1
        log.error("event.dead_lettered", reason=reason)
        if self.on_dead_letter is not None:
            try:
                await self.on_dead_letter(delivery, reason)
            except Exception:
                log.exception("event.dead_letter_hook_failed")
