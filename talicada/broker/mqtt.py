"""Publishing every session transition to MQTT (docs/ARCHITECTURE.md §8).

Topic ``<prefix>/sessions/<owner>/<uuid>`` (prefix ``mqtt_topic_prefix``,
``talicada`` by default; the owner percent-encoded), QoS 1, MQTT 5, with the
credentials of ``mqtt_url``. The owner in the topic lets a site's ACL give
each user their own sessions only (docs/examples/mosquitto.acl). The message
of the phase the session is in is retained, so a subscriber that arrives late
gets it at once; a final phase is retained with a message expiry of
``mqtt_final_retain`` (by default as long as the broker keeps the session),
so Mosquitto drops it when the broker forgets the session and retained
messages do not pile up; a session deleted before that (UWS DELETE) has its
retained message cleared at once (an empty retained message). The publisher
consumes the lifecycle stream in its own consumer group with one event in
flight, so transitions leave in the order they were recorded. Run it on one
replica (set ``mqtt_url`` there): two publishers could interleave one
session's transitions.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import structlog
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from talicada import constants
from talicada.broker import lifecycle
from talicada.broker.store import Store
from talicada.events.bus import Bus, Delivery
from talicada.events.consumer import Consumer
from talicada.events.envelope import SessionChanged, SessionForgotten
from talicada.events.streams import LIFECYCLE
from talicada.outage import Outage
from talicada.settings import Settings, SettingsError
from talicada.workers.runtime import consumer_name

log = structlog.get_logger("talicada.mqtt")

TOPIC = "{prefix}/sessions/{owner}/{session}"
GROUP = "mqtt"


def topic_for(prefix: str, owner: str, session: str) -> str:
    """The topic of ``session``; the owner cannot add levels or wildcards."""
    return TOPIC.format(prefix=prefix, owner=urllib.parse.quote(owner, safe=""), session=session)


def expiring(seconds: float) -> Properties:
    """PUBLISH properties that make the broker drop the message after ``seconds``."""
    properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    properties.MessageExpiryInterval = max(1, int(seconds))
    return properties


@dataclass(frozen=True)
class MqttAccess:
    """Where and as whom the publisher connects, and what it publishes under."""

    url: str
    prefix: str = "talicada"
    #: Seconds a final phase stays retained (None: retained without expiry).
    final_retain: float | None = None
    username: str | None = None
    password: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> MqttAccess:
        """The access ``settings`` configure: credentials in the URL or a password file."""
        assert settings.mqtt_url is not None
        parts = urllib.parse.urlsplit(settings.mqtt_url)
        username = urllib.parse.unquote(parts.username) if parts.username else None
        password = urllib.parse.unquote(parts.password) if parts.password else None
        if settings.mqtt_password_file:
            try:
                password = Path(settings.mqtt_password_file).read_text(encoding="utf-8").strip()
            except OSError as error:
                raise SettingsError(
                    f"mqtt_password_file {settings.mqtt_password_file}: {error.strerror}"
                ) from error
        final = settings.mqtt_final_retain
        return cls(
            url=settings.mqtt_url,
            prefix=settings.mqtt_topic_prefix,
            final_retain=constants.SESSION_RETENTION.total_seconds() if final is None else final,
            username=username,
            password=password,
        )


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
        access: MqttAccess | str,
        bus: Bus,
        store: Store,
        *,
        remember: int = 10_000,
        connect_timeout: float = 5.0,
    ) -> None:
        self.access = MqttAccess(access) if isinstance(access, str) else access
        parts = urllib.parse.urlsplit(self.access.url)
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
        #: Topic → the retained message last published there and, for a final
        #: phase, the monotonic instant it expires; newest last (bounded).
        self._retained: OrderedDict[str, tuple[bytes, float | None]] = OrderedDict()
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
                    self.host,
                    self.port,
                    username=self.access.username,
                    password=self.access.password,
                    protocol=aiomqtt.ProtocolVersion.V5,
                    timeout=self.connect_timeout,
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
        now = time.monotonic()
        for topic, (message, expires) in list(self._retained.items()):
            if expires is None:
                await client.publish(topic, message, qos=1, retain=True)
            elif expires > now:
                properties = expiring(expires - now)
                await client.publish(topic, message, qos=1, retain=True, properties=properties)
        if self._retained:
            log.info("mqtt.retained_republished", topics=len(self._retained))

    async def _publish(self, delivery: Delivery) -> None:
        """Publish one lifecycle event, waiting for a connection as long as it takes."""
        event = delivery.event
        if isinstance(event, SessionForgotten):
            await self._clear(topic_for(self.access.prefix, event.body.owner, event.session))
            return
        if not isinstance(event, SessionChanged):
            return  # component changes are in the session's log and SSE stream
        message = payload(event)
        while True:
            await self._connection()
            # Retain only the phase the session is in now: a transition published
            # late (after a retry) must not replace a newer retained phase.
            (live,) = await self.store.sessions([event.session])
            if live is None:
                return  # forgotten already: nothing to tell, nothing to retain
            topic = topic_for(self.access.prefix, live.record.owner, event.session)
            current = live.phase == event.body.target
            final = current and live.phase in lifecycle.FINAL
            retain_for = self.access.final_retain if final else None
            properties = expiring(retain_for) if retain_for is not None else None
            if not await self._send(topic, message, retain=current, properties=properties):
                continue  # this message goes out on the next connection
            if current:
                expires = None if retain_for is None else time.monotonic() + retain_for
                self._remember(topic, message, expires)
            return

    async def _clear(self, topic: str) -> None:
        """Delete the retained message of a forgotten session: MQTT's way is an
        empty retained message on its topic. Waits for a connection as publishing does."""
        self._retained.pop(topic, None)
        while not await self._send(topic, b"", retain=True):
            pass

    async def _connection(self) -> aiomqtt.Client:
        """The connected client, waiting for a connection as long as it takes."""
        while True:
            await self._connected.wait()
            if self._client is not None:
                return self._client

    async def _send(
        self, topic: str, message: bytes, *, retain: bool, properties: Properties | None = None
    ) -> bool:
        """One QoS 1 publish; False, with a reconnect asked for, when the connection failed."""
        client = await self._connection()
        try:
            await client.publish(topic, message, qos=1, retain=retain, properties=properties)
        except aiomqtt.MqttError:
            self._broken.set()
            self._connected.clear()
            return False
        return True

    def _remember(self, topic: str, message: bytes, expires: float | None) -> None:
        self._retained[topic] = (message, expires)
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
