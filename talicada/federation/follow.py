"""The aggregator's view of a remote session, kept current from the site's events.

A :class:`View` holds the session's latest document and every transition the
site recorded, with the site's own indices. One follower task per view reads
the site's event stream (resuming with ``Last-Event-ID`` after a dropped
connection) and, where the site's path does not stream, long-polls the
session and reads its log instead. The aggregator's own clients then watch
the view with GET, long poll and SSE, so a thousand watchers cost the site
one stream. The site stays the authority: a view that loses its site is
dropped, and the next watcher starts a new one that replays from the start.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import structlog

from talicada.broker.lifecycle import FINAL
from talicada.federation.documents import Doc, phase_of
from talicada.federation.site import Identity, NoStream, Site, SiteError

log = structlog.get_logger("talicada.federation.follow")

#: Failed connections in a row after which a follower gives up.
MAX_FAILURES = 5
#: Seconds one long poll of the site waits when its path does not stream.
POLL_WAIT = 30.0


class View:
    """One remote session as the aggregator last heard of it."""

    def __init__(self, uuid: str, site: Site, identity: Identity, fault: str | None = None) -> None:
        self.uuid = uuid
        self.site = site
        self.identity = identity
        #: Injected faults for the site, from the request that started the view (tests).
        self.fault = fault
        self.doc: Doc | None = None
        #: The site's transitions, in order; position = the site's event id.
        self.history: list[dict[str, Any]] = []
        #: Set when the follower stopped: the session ended, or the site was lost.
        self.done = False
        #: Why the follower stopped early (None while following or after the end).
        self.error: str | None = None
        self.transport = "sse"
        #: True when components moved after the document was last read.
        self.stale = False
        self._waiters: set[asyncio.Event] = set()

    @property
    def phase(self) -> str:
        """The session's phase by its latest document."""
        return phase_of(self.doc) if self.doc else ""

    @contextlib.contextmanager
    def watch(self) -> Iterator[asyncio.Event]:
        """An event set whenever the view changes while the block runs."""
        changed = asyncio.Event()
        self._waiters.add(changed)
        try:
            yield changed
        finally:
            self._waiters.discard(changed)

    def wake(self) -> None:
        """Tell every watcher that something changed."""
        for changed in self._waiters:
            changed.set()

    def add(self, index: int, item: dict[str, Any]) -> None:
        """Record the site's transition ``index`` (a repeat or a gap is ignored)."""
        if index == len(self.history):
            self.history.append(item)
            self.wake()

    async def until(self, check: Callable[[], bool], seconds: float) -> None:
        """Wait until ``check()`` holds, the view is done, or ``seconds`` pass."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        with self.watch() as changed:
            while not check() and not self.done:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return
                changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), timeout=remaining)


class Views:
    """The views this replica keeps, each with its follower task; bounded in number."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._views: OrderedDict[str, View] = OrderedDict()
        self._tasks: set[asyncio.Task[None]] = set()

    def get(self, uuid: str) -> View | None:
        """The live or finished view of ``uuid`` (None when none or it lost its site)."""
        view = self._views.get(uuid)
        if view is None or view.error is not None:
            return None
        return view

    def follow(
        self, uuid: str, site: Site, identity: Identity, fault: str | None = None
    ) -> View | None:
        """The view of ``uuid``, starting a follower if needed (None: at the limit)."""
        view = self.get(uuid)
        if view is not None:
            return view
        following = sum(1 for each in self._views.values() if not each.done)
        if following >= self.limit:
            return None
        view = View(uuid, site, identity, fault)
        self._views[uuid] = view
        # Finished views are kept for late watchers, the oldest dropped first.
        while len(self._views) > self.limit:
            oldest = next(iter(self._views))
            if not self._views[oldest].done:
                break
            del self._views[oldest]
        task = asyncio.create_task(_follow(view), name=f"follow:{uuid}")
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return view

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("follow.crashed", error=repr(task.exception()))

    async def close(self) -> None:
        """Stop every follower."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def _follow(view: View) -> None:
    """Keep ``view`` current until its session ends or its site is lost."""
    failures = 0
    try:
        while True:
            try:
                await _refresh(view)
                if view.transport == "sse":
                    await _stream(view)
                else:
                    await _poll(view)
                await _refresh(view)
                if view.phase in FINAL:
                    return
                failures = 0  # the stream ended early: resume from where it stopped
            except NoStream:
                log.info("follow.polling", session=view.uuid, site=view.site.name)
                view.transport = "poll"
            except SiteError as error:
                if 400 <= error.status < 500:
                    view.error = error.reason
                    return
                failures += 1
                if failures >= MAX_FAILURES:
                    view.error = error.reason
                    return
                await asyncio.sleep(min(0.25 * 2**failures, 5.0))
            except (aiohttp.ClientError, TimeoutError) as error:
                failures += 1
                if failures >= MAX_FAILURES:
                    view.error = f"lost ({error or type(error).__name__})"
                    return
                await asyncio.sleep(min(0.25 * 2**failures, 5.0))
    finally:
        view.done = True
        if view.error is not None:
            log.warning("follow.lost", session=view.uuid, site=view.site.name, reason=view.error)
        view.wake()


async def _get(view: View, path: str, params: dict[str, str] | None = None) -> Doc:
    wait = float(params["wait"]) if params and "wait" in params else 0.0
    reply = await view.site.call(
        "GET", path, view.identity, params=params, wait=wait, fault=view.fault
    )
    if reply.status != 200:
        raise SiteError(view.site.name, f"answered HTTP {reply.status}", status=reply.status)
    return reply.doc


async def _refresh(view: View) -> None:
    view.doc = await _get(view, f"/sessions/{view.uuid}")
    view.stale = False
    view.wake()


async def _stream(view: View) -> None:
    async for index, item in view.site.events(
        view.uuid, view.identity, len(view.history) - 1, fault=view.fault
    ):
        view.add(index, item)
        if "component" not in item:
            # A session transition: the document (phase, schedule) changed too.
            await _refresh(view)
        else:
            view.stale = True  # read again only when someone asks


async def _poll(view: View) -> None:
    """Follow by reading the log whenever a long poll says the phase moved."""
    while True:
        record = await _get(view, f"/sessions/{view.uuid}/log")
        items = record.get("history")
        for index, item in enumerate(items if isinstance(items, list) else []):
            if isinstance(item, dict):
                view.add(index, item)
        session = record.get("session")
        if isinstance(session, dict):
            view.doc = session
            view.wake()
        if view.phase in FINAL:
            return
        params = {"wait": f"{POLL_WAIT:g}", "phase": view.phase}
        view.doc = await _get(view, f"/sessions/{view.uuid}", params)
        view.wake()
