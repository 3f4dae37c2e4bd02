"""The aiohttp application: middlewares, routes and resources with lifetimes."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import structlog
from aiohttp import web

from talicada.broker import callbacks, event_feed, watch
from talicada.broker.auth import Authenticator
from talicada.broker.http import (
    BODY_TIMEOUT_KEY,
    auth_middleware,
    context_middleware,
    errors_middleware,
)
from talicada.broker.keys import (
    BROKER,
    CALLBACK_SECRET,
    METRICS,
    NOTIFIER,
    OPENAPI,
    SETTINGS,
    STARTED,
    OpenApiDocument,
)
from talicada.broker.metrics import Metrics, streams
from talicada.broker.metrics import middleware as measured
from talicada.broker.mqtt import MqttAccess, MqttPublisher
from talicada.broker.notify import Notifier
from talicada.broker.routes import routes
from talicada.broker.service import Broker, Clock, utc_now
from talicada.broker.store import Store
from talicada.broker.store.samples import samples_for
from talicada.broker.ui import setup_ui
from talicada.federation import web as federation
from talicada.security.startup import announce, check_exposure
from talicada.settings import Settings, SettingsError

log = structlog.get_logger("talicada.app")

#: Paths anyone may read: probes, service description and the contract.
OPEN_PATHS = frozenset(
    {
        "/healthz",
        "/readyz",
        "/metrics",
        "/availability",
        "/capabilities",
        "/openapi.json",
        "/openapi.yaml",
    }
)


def open_paths(settings: Settings) -> frozenset[str]:
    """The open paths, less /metrics when it needs the operator role."""
    if settings.metrics_access == "operator" or settings.metrics_port is not None:
        return OPEN_PATHS - {"/metrics"}
    return OPEN_PATHS


async def open_store(settings: Settings) -> Store:
    """The store ``settings`` ask for: Redis when configured, else in memory."""
    if settings.redis_url is None:
        from talicada.broker.store.memory import MemoryStore
        from talicada.events.memory_bus import MemoryBus

        return MemoryStore(MemoryBus(reclaim_idle_ms=int(settings.reclaim_idle * 1000)))
    from talicada.broker.store.redis import RedisStore

    return await RedisStore.connect(
        settings.redis_url,
        prefix=settings.key_prefix,
        pool=settings.redis_pool,
        reclaim_idle_ms=int(settings.reclaim_idle * 1000),
    )


def create_app(
    settings: Settings,
    *,
    store: Store | None = None,
    timers: bool = True,
    clock: Clock = utc_now,
) -> web.Application:
    """The broker application.

    ``store`` overrides the configured store and ``clock`` the wall clock (tests);
    ``timers=False`` leaves offer expiry to someone else.
    """
    authenticator = Authenticator.from_settings(settings)
    check_exposure(settings, authenticated=authenticator is not None)
    mqtt_access = MqttAccess.from_settings(settings) if settings.mqtt_url else None
    metrics = Metrics(streams(settings.platforms))
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[
            context_middleware,
            measured(metrics),
            errors_middleware,
            federation.faults_middleware(settings),
            auth_middleware(authenticator, open_paths(settings)),
            federation.trust_middleware(settings),
            federation.forwarding_middleware(),
        ],
    )
    app[METRICS] = metrics
    app[SETTINGS] = settings
    app[BODY_TIMEOUT_KEY] = settings.http_body_timeout
    app[STARTED] = time.time()
    app[OPENAPI] = _openapi()
    app[CALLBACK_SECRET] = callback_secret(settings)
    app.add_routes(routes)
    app.add_routes(watch.routes)
    app.add_routes(callbacks.routes)
    if settings.embedded:
        # Its streams live in this process only: `talicada events tail` reads them here.
        app.add_routes(event_feed.routes)
    setup_ui(app)  # the dashboard at /ui/, and / leads there

    async def state(app: web.Application) -> AsyncIterator[None]:
        owned = store is None
        opened = store or await open_store(settings)
        from talicada.workers.backends import advisors as make_advisors

        advisors = make_advisors(settings.platforms)
        broker = Broker(
            settings, opened, clock=clock, advisors=advisors, samples=samples_for(opened)
        )
        broker.estimator.observers.append(metrics.observe_step)
        app[BROKER] = broker
        app[NOTIFIER] = Notifier(opened.bus)
        if authenticator is None:
            log.warning("auth.disabled", reason="embedded mode: every caller is 'anonymous'")
        announce(settings)
        yield
        for advisor in advisors.values():
            await advisor.close()
        if authenticator is not None:
            await authenticator.close()
        if owned:
            await opened.close()

    async def background(app: web.Application) -> AsyncIterator[None]:
        stop = asyncio.Event()
        notifier = asyncio.create_task(app[NOTIFIER].run(stop))
        tasks = []
        if timers:
            tasks.append(asyncio.create_task(app[BROKER].driver.run_timers(stop)))
        if mqtt_access is not None:
            publisher = MqttPublisher(mqtt_access, app[BROKER].store.bus, app[BROKER].store)
            tasks.append(asyncio.create_task(publisher.run(stop)))
        yield
        stop.set()
        notifier.cancel()  # it only wakes watchers: nothing to finish
        with contextlib.suppress(asyncio.CancelledError):
            await notifier
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(task, timeout=5)

    app.cleanup_ctx.append(state)
    app.cleanup_ctx.append(background)
    federation.setup(app)  # GET /capabilities; the aggregator when remote platforms are set
    return app


def server_timeouts(settings: Settings) -> dict[str, Any]:
    """aiohttp server options that close idle and slow-header connections.

    aiohttp's keep-alive timer starts when a connection opens and again when
    each response ends, and closes the connection if no complete request head
    has arrived by then: one knob bounds both idle and slowloris connections.
    After an early answer (a 408 for a slow body, a 413) aiohttp reads what is
    left of the body before closing, for at most ``lingering_time``; two
    seconds bound that for a client that keeps trickling.
    """
    return {"keepalive_timeout": settings.http_idle_timeout, "lingering_time": 2.0}


def callback_secret(settings: Settings) -> tuple[bytes, ...]:
    """The secrets callbacks may be signed with, the one workers sign with first.

    Random per process when embedded; ``callback_secret_previous`` is accepted
    too while a site rotates the secret.
    """
    if settings.callback_secret:
        accepted = [settings.callback_secret, settings.callback_secret_previous]
        return tuple(secret.encode() for secret in accepted if secret)
    if not settings.embedded:
        raise SettingsError(
            "callback_secret: required when redis_url is set (workers must sign callbacks)"
        )
    return (secrets.token_bytes(32),)


async def run_embedded_workers(app: web.Application, broker_url: str, stop: asyncio.Event) -> None:
    """Run every worker in this process against ``app``'s bus, calling back to ``broker_url``."""
    from talicada.workers.registry import run_all

    await run_all(
        bus=app[BROKER].store.bus,
        settings=app[SETTINGS],
        broker_url=broker_url,
        secret=app[CALLBACK_SECRET][0],
        stop=stop,
    )


def _openapi() -> OpenApiDocument:
    from talicada.schema.openapi import document_bytes

    json_bytes, yaml_bytes = document_bytes()
    return OpenApiDocument(json=json_bytes, yaml=yaml_bytes)
