"""Publishing every session transition to MQTT (docs/ARCHITECTURE.md §8).

Topic ``talicada/sessions/<uuid>``, QoS 1; the message of the phase the
session is in is retained, so a subscriber that arrives late gets it at
once. The publisher consumes the lifecycle stream in its own consumer group
with one event in flight, so transitions leave in the order they were
recorded. Run it on one replica (set ``mqtt_url`` there): two publishers
could interleave one session's transitions.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.parse
from collections import OrderedDict
from collections.abc import Coroutine
from datetime import timedelta
from typing import Any

import aiomqtt
import structlog

from talicada.broker.store import Store
from talicada.events.bus import Bus, Delivery
from talicada.events.consumer import Consumer
from talicada.events.envelope import SessionChanged
from talicada.events.streams import LIFECYCLE
from talicada.outage import Outage
from talicada.workers.runtime import consumer_name

log = structlog.get_logger("talicada.mqtt")

TOPIC = "talicada/sessions/{session}"
GROUP = "mqtt"


def payload(event: SessionChanged) -> bytes:
    """The message published for one transition."""
    body = event.body
    return json.dumps(
        {
            "session": event.session,
            "phase": body.target,
            "from": body.source,
            "cause": body.cause,
            "time": body.time,
        }
    ).encode()


class MqttPublisher:
    """Forwards lifecycle events to an MQTT broker, riding out its outages.

    One task keeps the connection (reconnecting with jittered backoff, logging
    once per outage); the consumer runs the whole time and its handler waits
    for a connection rather than failing. So a Mosquitto outage of any length
    delays messages, in order, but never dead-letters them. After each
    reconnect the retained phase of every session published recently is
    published again, since a broker restarted without persistence has lost
    them (and one with it keeps the same message: no harm).
    """

    def __init__(
        self,
        url: str,
        bus: Bus,
        store: Store,
        *,
        remember: int = 10_000,
        connect_timeout: float = 5.0,
    ) -> None:
        parts = urllib.parse.urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 1883
        self.bus = bus
        self.store = store
        self.remember = remember
        self.connect_timeout = connect_timeout
        #: The live connection, or None while away.
        self._client: aiomqtt.Client | None = None
        self._connected = asyncio.Event()
        self._broken = asyncio.Event()
        #: Topic → the retained message last published there, newest last (bounded).
        self._retained: OrderedDict[str, bytes] = OrderedDict()
        self.outage = Outage("mqtt", log, base=0.5, cap=10.0)

    async def run(self, stop: asyncio.Event) -> None:
        """Publish until ``stop`` is set."""
        await self.bus.ensure_group(LIFECYCLE, GROUP)
        consumer = Consumer(
            self.bus, LIFECYCLE, GROUP, consumer_name("mqtt"), self._publish, concurrency=1
        )
        connection = asyncio.create_task(self._keep_connected(stop))
        try:
            # The grace lets a handler waiting for Mosquitto give up at shutdown;
            # its message stays pending and is published after the restart.
            await consumer.run(stop, grace=timedelta(seconds=2))
        finally:
            connection.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await connection

    async def _keep_connected(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                async with aiomqtt.Client(
                    self.host, self.port, timeout=self.connect_timeout
                ) as client:
                    if self.outage.down:
                        self.outage.recovered()
                    log.info("mqtt.connected", host=self.host, port=self.port)
                    await self._republish(client)
                    self._client = client
                    self._broken.clear()
                    self._connected.set()
                    await _first(stop.wait(), self._broken.wait())
            except aiomqtt.MqttError as error:
                pause = self.outage.failed(error)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=pause)
            finally:
                self._connected.clear()
                self._client = None

    async def _republish(self, client: aiomqtt.Client) -> None:
        """Publish again the retained phase of every session remembered."""
        for topic, message in list(self._retained.items()):
            await client.publish(topic, message, qos=1, retain=True)
        if self._retained:
            log.info("mqtt.retained_republished", topics=len(self._retained))

    async def _publish(self, delivery: Delivery) -> None:
        """Publish one lifecycle event, waiting for a connection as long as it takes."""
        event = delivery.event
        if not isinstance(event, SessionChanged):
            return  # component changes are in the session's log and SSE stream
        topic = TOPIC.format(session=event.session)
        message = payload(event)
        while True:
            await self._connected.wait()
            client = self._client
            if client is None:
                continue
            # Retain only the phase the session is in now: a transition published
            # late (after a retry) must not replace a newer retained phase.
            (live,) = await self.store.sessions([event.session])
            current = live is not None and live.phase == event.body.target
            try:
                await client.publish(topic, message, qos=1, retain=current)
            except aiomqtt.MqttError:
                self._broken.set()  # reconnect; this message goes out on the next connection
                self._connected.clear()
                continue
            if current:
                self._remember(topic, message)
            return

    def _remember(self, topic: str, message: bytes) -> None:
        self._retained[topic] = message
        self._retained.move_to_end(topic)
        while len(self._retained) > self.remember:
            self._retained.popitem(last=False)


async def _first(*waits: Coroutine[Any, Any, object]) -> None:
    """Wait until the first of ``waits`` finishes; cancel the others."""
    tasks = [asyncio.ensure_future(wait) for wait in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
