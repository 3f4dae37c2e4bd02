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

import aiomqtt
import structlog

from talicada.broker.store import Store
from talicada.events.bus import Bus, Delivery
from talicada.events.consumer import Consumer
from talicada.events.envelope import SessionChanged
from talicada.events.streams import LIFECYCLE
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
    """Forwards lifecycle events to an MQTT broker, reconnecting when it goes away."""

    def __init__(self, url: str, bus: Bus, store: Store) -> None:
        parts = urllib.parse.urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 1883
        self.bus = bus
        self.store = store

    async def run(self, stop: asyncio.Event) -> None:
        """Publish until ``stop`` is set."""
        await self.bus.ensure_group(LIFECYCLE, GROUP)
        while not stop.is_set():
            # Ends this connection's consumer on shutdown or when the connection breaks.
            done = asyncio.Event()
            relay = asyncio.create_task(_when(stop, done))
            try:
                async with aiomqtt.Client(self.host, self.port) as client:
                    log.info("mqtt.connected", host=self.host, port=self.port)

                    await self._forward(client, done)
            except aiomqtt.MqttError as error:
                log.warning("mqtt.disconnected", reason=str(error))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=1.0)
            finally:
                relay.cancel()

    async def _forward(self, client: aiomqtt.Client, done: asyncio.Event) -> None:
        """Publish lifecycle events on ``client`` until ``done`` is set."""

        async def publish(delivery: Delivery) -> None:
            event = delivery.event
            if not isinstance(event, SessionChanged):
                return  # component changes are in the session's log and SSE stream
            topic = TOPIC.format(session=event.session)
            # Retain only the phase the session is in now: a transition published
            # late (after a retry) must not replace a newer retained phase.
            (live,) = await self.store.sessions([event.session])
            current = live is not None and live.phase == event.body.target
            try:
                await client.publish(topic, payload(event), qos=1, retain=current)
            except aiomqtt.MqttError:
                done.set()  # unacked: the next connection publishes it
                raise

        consumer = Consumer(
            self.bus, LIFECYCLE, GROUP, consumer_name("mqtt"), publish, concurrency=1
        )
        await consumer.run(done)


async def _when(source: asyncio.Event, target: asyncio.Event) -> None:
    """Set ``target`` once ``source`` is set."""
    await source.wait()
    target.set()
