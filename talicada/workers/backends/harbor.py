"""``image-cache`` / harbor: make a container image available from the site's Harbor.

``image.cache`` of a ``docker-container``: its first image location names the
image. When the location's registry is Harbor itself, the image is checked in
place; otherwise it is pulled through the platform's proxy-cache project
(``[platforms.harbor] proxy_project``), so the session's node pulls it from
the site rather than from the internet. The executable becomes AVAILABLE
with the image's digest and size, and the location of the cached copy (what a
launcher should run). A missing image or a digest other than the one asked
for fails the executable, saying which.

Other executables have nothing to cache here: they are handled as
:func:`talicada.workers.image_cache.none` handles them (AVAILABLE at once, or a
test task's injected PREPARING failure).
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import structlog

from talicada.events.bus import Delivery
from talicada.events.envelope import CacheImage
from talicada.schema.model import DockerContainer
from talicada.services._http import ServiceError, TokenFile
from talicada.services.harbor import DigestMismatch, HarborClient, ImageNotFound, parse_image
from talicada.settings import HarborSettings, PlatformSettings
from talicada.workers.image_cache import none
from talicada.workers.runtime import Handler, WorkerContext

log = structlog.get_logger("talicada.worker.harbor")

BACKEND = "harbor"
#: A digest worth checking. Clients send placeholders ("0000") where they know none.
REAL_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def image_cache(context: WorkerContext) -> Handler:
    """The harbor image-cache handler."""
    nothing_to_cache = none(context)
    clients: dict[str, HarborClient] = {}
    http: list[aiohttp.ClientSession] = []  # one for the worker, made on first use

    def client(platform: PlatformSettings, harbor: HarborSettings) -> HarborClient:
        found = clients.get(platform.name)
        if found is None:
            if not http:
                http.append(aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)))
                context.spawn(_close_when_stopping(context, http[0]))
            secret = TokenFile(Path(harbor.secret_file)) if harbor.secret_file else None
            found = clients[platform.name] = HarborClient(
                harbor.url, http[0], username=harbor.username, secret=secret
            )
        return found

    async def handle(delivery: Delivery) -> None:
        event = delivery.event
        if not isinstance(event, CacheImage) or event.component is None:
            raise ValueError(f"image-cache/harbor does not handle {event.type!r} events")
        executable = event.body.executable
        if not isinstance(executable, DockerContainer):
            await nothing_to_cache(delivery)
            return
        platform = context.platform(event)
        harbor = platform.harbor
        if harbor is None:
            raise ValueError(f"platform {platform.name} has no [platforms.harbor] table")
        await _cache(context, event, event.component, executable, harbor, client(platform, harbor))

    return handle


async def _close_when_stopping(context: WorkerContext, http: aiohttp.ClientSession) -> None:
    await context.stopping.wait()
    await http.close()


async def _cache(
    context: WorkerContext,
    event: CacheImage,
    component: str,
    executable: DockerContainer,
    harbor: HarborSettings,
    client: HarborClient,
) -> None:
    """Check or pull the image, and report what became of it."""
    location = executable.image.locations[0]
    try:
        registry = parse_image(location).registry
    except ValueError as error:
        await context.reporter.report(event, component, "FAILED", message=str(error))
        return
    host = urlsplit(harbor.url).netloc.lower()
    # An image already in this Harbor is checked where it is; pulling it through
    # the proxy would ask Harbor to fetch from itself.
    proxy = None if registry.lower() == host else harbor.proxy_project
    digest = executable.image.digest
    expected = digest if digest and REAL_DIGEST.match(digest) else None
    try:
        artifact = await client.ensure(
            location,
            proxy_project=proxy,
            expected_digest=expected,
            wait=harbor.pull_timeout,
            poll=harbor.poll,
        )
    except ImageNotFound as error:
        # Named as the request named it, not as the proxy project calls it.
        message = f"image {location} not found: {error.reason}"
        await context.reporter.report(event, component, "FAILED", message=message)
        return
    except DigestMismatch as error:
        message = f"image {location} has digest {error.actual}, expected {error.expected}"
        await context.reporter.report(event, component, "FAILED", message=message)
        return
    except ServiceError as error:
        if error.transient:
            raise  # Harbor is busy or down: the event is retried
        message = f"Harbor refused image {location}: {error}"
        await context.reporter.report(event, component, "FAILED", message=message)
        return
    cached = f"{host}/{artifact.project}/{artifact.repository}@{artifact.digest}"
    how = "found in Harbor" if proxy is None else f"cached through {proxy}"
    log.info("harbor.cached", image=location, cached=cached, size=artifact.size)
    await context.reporter.report(
        event,
        component,
        "AVAILABLE",
        message=f"image {location} {how} as {cached}, digest {artifact.digest}",
        backend=BACKEND,
        outputs={
            "digest": artifact.digest,
            "size": str(artifact.size),
            "image": cached,
            # Whether the site had it already: the history of image caching keeps it.
            "cached": "no" if artifact.pulled else "yes",
        },
    )
