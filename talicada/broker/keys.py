"""Typed application state (aiohttp ``AppKey``s): the only things the app holds."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from talicada.broker.metrics import Metrics
from talicada.broker.notify import Notifier
from talicada.broker.service import Broker
from talicada.settings import Settings


@dataclass(frozen=True, slots=True)
class OpenApiDocument:
    """The generated OpenAPI document, encoded once at startup."""

    json: bytes
    yaml: bytes


SETTINGS = web.AppKey("settings", Settings)
BROKER = web.AppKey("broker", Broker)
OPENAPI = web.AppKey("openapi", OpenApiDocument)
#: The broker's Prometheus metrics.
METRICS = web.AppKey("metrics", Metrics)
#: The secret that signs worker callbacks.
CALLBACK_SECRET = web.AppKey("callback_secret", tuple[bytes, ...])
#: Wakes long polls and SSE streams when a session changes.
NOTIFIER = web.AppKey("notifier", Notifier)
#: ``time.time()`` when the app started (VOSI availability ``upSince``).
STARTED = web.AppKey("started", float)
