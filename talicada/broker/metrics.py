"""Prometheus metrics (docs/ARCHITECTURE.md §9): requests, offers, callbacks, streams, steps.

Each app has its own registry (tests run several apps in one process). Stream
figures — length, and events waiting for each worker — are read from the bus
when ``/metrics`` is scraped, so they are current and cost nothing otherwise.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from talicada.broker.history import Sample
from talicada.events.bus import Bus
from talicada.events.streams import LIFECYCLE, stream
from talicada.settings import PlatformSettings


def streams(platforms: list[PlatformSettings]) -> dict[str, str]:
    """The streams whose backlog is exported, with the consumer group reading each:
    one per role and back end the platforms use, and the lifecycle stream (MQTT)."""
    from talicada.workers.backends import backends_in_use

    found: dict[str, str] = {
        stream(role, backend): role for role, backend in backends_in_use(platforms)
    }
    found[LIFECYCLE] = "mqtt"
    return found


class Metrics:
    """The broker's metrics, in one registry."""

    def __init__(self, streams: dict[str, str] | None = None) -> None:
        #: Stream → consumer group, whose length and backlog ``/metrics`` shows.
        self.streams = streams or {LIFECYCLE: "mqtt"}
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "talicada_http_requests",
            "HTTP requests answered, by route and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "talicada_http_request_seconds",
            "Time to answer an HTTP request, by route.",
            ["method", "route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5, 30, 60),
            registry=self.registry,
        )
        self.offersets = Counter(
            "talicada_offersets", "Offer sets made, by result.", ["result"], registry=self.registry
        )
        self.callbacks = Counter(
            "talicada_callbacks",
            "Worker callbacks, by outcome (ok, duplicate, refused, unsigned, missing).",
            ["outcome"],
            registry=self.registry,
        )
        self.stream_length = Gauge(
            "talicada_stream_length", "Entries in a stream.", ["stream"], registry=self.registry
        )
        self.stream_pending = Gauge(
            "talicada_stream_pending",
            "Events delivered to a worker group and not yet acknowledged.",
            ["stream"],
            registry=self.registry,
        )
        self.dead_letters = Gauge(
            "talicada_dead_letters", "Entries in the dead-letter stream.", registry=self.registry
        )

        self.step_seconds = Histogram(
            "talicada_preparation_step_seconds",
            "How long finished preparation steps took (image, storage, stage, launch).",
            ["step", "platform"],
            buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200),
            registry=self.registry,
        )
        self.estimate_ratio = Histogram(
            "talicada_estimate_ratio",
            "A finished step's actual duration over the expected one its offer quoted.",
            ["step", "basis"],
            buckets=(0.25, 0.5, 0.67, 0.8, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0, 4.0),
            registry=self.registry,
        )
        self.estimate_overruns = Counter(
            "talicada_estimate_overruns",
            "Finished steps that took longer than their offer planned (the pessimistic quote).",
            ["step", "basis"],
            registry=self.registry,
        )

    def observe_step(self, sample: Sample) -> None:
        """Export one finished preparation step, and how it compares with its quote."""
        self.step_seconds.labels(sample.step, sample.platform).observe(sample.seconds)
        if sample.expected is None or sample.quoted is None:
            return
        basis = sample.basis or "default"
        if sample.expected > 0:
            self.estimate_ratio.labels(sample.step, basis).observe(sample.seconds / sample.expected)
        if sample.seconds > sample.quoted:
            self.estimate_overruns.labels(sample.step, basis).inc()

    async def render(self, bus: Bus) -> bytes:
        """The exposition text, with stream figures read now."""
        for name, group in self.streams.items():
            self.stream_length.labels(name).set(await bus.stream_length(name))
            self.stream_pending.labels(name).set(await bus.pending(name, group))
        self.dead_letters.set(await bus.dead_letter_count())
        return generate_latest(self.registry)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def middleware(metrics: Metrics) -> Middleware:
    """Count and time every request by its route template (not its uuid)."""

    @web.middleware
    async def measure(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as error:
            status = error.status
            raise
        finally:
            resource = request.match_info.route.resource
            route = resource.canonical if resource is not None else "unmatched"
            metrics.requests.labels(request.method, route, str(status)).inc()
            metrics.latency.labels(request.method, route).observe(time.perf_counter() - started)

    return measure


async def exposition(metrics: Metrics, bus: Bus) -> web.Response:
    """The ``/metrics`` response."""
    body = await metrics.render(bus)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
