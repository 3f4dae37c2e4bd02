"""The aiohttp application: middlewares, routes and resources with lifetimes."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from talicada.broker.auth import Tokens
from talicada.broker.http import auth_middleware, errors_middleware
from talicada.broker.keys import BROKER, OPENAPI, SETTINGS, STARTED, OpenApiDocument
from talicada.broker.routes import routes
from talicada.broker.service import Broker, Clock, utc_now
from talicada.broker.store import Store
from talicada.settings import Settings, SettingsError

log = structlog.get_logger("talicada.app")

#: Paths anyone may read: probes, service description and the contract.
OPEN_PATHS = frozenset(
    {"/healthz", "/readyz", "/availability", "/capabilities", "/openapi.json", "/openapi.yaml"}
)


async def open_store(settings: Settings) -> Store:
    """The store ``settings`` ask for: Redis when configured, else in memory."""
    if settings.redis_url is None:
        from talicada.broker.store.memory import MemoryStore

        return MemoryStore()
    from talicada.broker.store.redis import RedisStore

    return await RedisStore.connect(settings.redis_url, prefix=settings.key_prefix)


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
    tokens = Tokens.load(settings.auth_tokens_file) if settings.auth_tokens_file else None
    if tokens is None and not settings.embedded:
        raise SettingsError(
            "auth_tokens_file: required when redis_url is set (auth is off only in embedded mode)"
        )
    app = web.Application(
        client_max_size=settings.max_body_bytes,
        middlewares=[errors_middleware, auth_middleware(tokens, OPEN_PATHS)],
    )
    app[SETTINGS] = settings
    app[STARTED] = time.time()
    app[OPENAPI] = _openapi()
    app.add_routes(routes)

    async def state(app: web.Application) -> AsyncIterator[None]:
        owned = store is None
        opened = store or await open_store(settings)
        app[BROKER] = Broker(settings, opened, clock=clock)
        if tokens is None:
            log.warning("auth.disabled", reason="embedded mode: every caller is 'anonymous'")
        yield
        if owned:
            await opened.close()

    async def timer_loop(app: web.Application) -> AsyncIterator[None]:
        stop = asyncio.Event()
        task = asyncio.create_task(app[BROKER].driver.run_timers(stop))
        yield
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=5)

    app.cleanup_ctx.append(state)
    if timers:
        app.cleanup_ctx.append(timer_loop)
    return app


def _openapi() -> OpenApiDocument:
    from talicada.schema.openapi import document_bytes

    json_bytes, yaml_bytes = document_bytes()
    return OpenApiDocument(json=json_bytes, yaml=yaml_bytes)
