"""The blocking client, for scripts and notebooks.

It drives an :class:`~talicada.client.aio.AsyncClient` on an event loop of its
own, in a daemon thread. That is what makes it work inside Jupyter, whose
kernel already runs a loop in the main thread: ``asyncio.run`` would refuse
there, and nesting loops is not possible.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Iterator
from datetime import timedelta
from typing import Any, Self, TypeVar

from talicada.client.aio import AsyncClient, Transport
from talicada.client.wire import RequestLike, SessionLog, SessionPage, Transition
from talicada.schema.model import ExecutionSession, OfferSet

T = TypeVar("T")


class Client:
    """The broker's API as plain method calls; the same methods as :class:`AsyncClient`.

    >>> with Client("http://127.0.0.1:8082") as broker:           # doctest: +SKIP
    ...     offers = broker.request_offers(Path("request.yaml"))
    ...     broker.accept(offers.offers[0].meta.uuid)
    ...     for step in broker.watch(offers.offers[0].meta.uuid):
    ...         print(step.target)
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        poll_wait: float = 10.0,
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="talicada-client", daemon=True
        )
        self._thread.start()
        self.aio = AsyncClient(url, token, timeout=timeout, poll_wait=poll_wait)
        self.url = self.aio.url

    def _run(self, call: Awaitable[T]) -> T:
        async def wrapped() -> T:
            return await call

        return asyncio.run_coroutine_threadsafe(wrapped(), self._loop).result()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections and stop the client's thread."""
        if not self._loop.is_running():
            return
        self._run(self.aio.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def request_offers(self, request: RequestLike) -> OfferSet:
        """Send an execution request; the offer set."""
        return self._run(self.aio.request_offers(request))

    def offerset(self, uuid: str) -> OfferSet:
        """An offer set with each offer's current phase."""
        return self._run(self.aio.offerset(uuid))

    def accept(self, uuid: str) -> ExecutionSession:
        """Accept an offer."""
        return self._run(self.aio.accept(uuid))

    def reject(self, uuid: str) -> ExecutionSession:
        """Reject an offer."""
        return self._run(self.aio.reject(uuid))

    def cancel(self, uuid: str) -> ExecutionSession:
        """Cancel a session."""
        return self._run(self.aio.cancel(uuid))

    def delete(self, uuid: str) -> None:
        """End a live session, or forget a finished one (UWS DELETE)."""
        self._run(self.aio.delete(uuid))

    def extend(
        self, uuid: str, *, by: timedelta | None = None, to: str | None = None
    ) -> ExecutionSession:
        """Change the available window ``by`` a delta or ``to`` an ISO 8601 duration."""
        return self._run(self.aio.extend(uuid, by=by, to=to))

    def run(self, request: RequestLike) -> tuple[OfferSet, ExecutionSession]:
        """Request offers and accept the earliest; NoOffers on a NO answer."""
        return self._run(self.aio.run(request))

    def get(
        self, uuid: str, *, wait: float | None = None, phase: str | None = None
    ) -> ExecutionSession:
        """One session, optionally waiting (long poll) while its phase is ``phase``."""
        return self._run(self.aio.get(uuid, wait=wait, phase=phase))

    def log(self, uuid: str) -> SessionLog:
        """The session's record."""
        return self._run(self.aio.log(uuid))

    def list_sessions(self, **filters: Any) -> SessionPage:
        """One page of sessions; the filters of :meth:`AsyncClient.list_sessions`."""
        return self._run(self.aio.list_sessions(**filters))

    def capabilities(self) -> dict[str, Any]:
        """What this broker runs."""
        return self._run(self.aio.capabilities())

    def wait(self, uuid: str, *, transport: Transport = "auto") -> ExecutionSession:
        """Block until the session ends; the session in its final phase."""
        return self._run(self.aio.wait(uuid, transport=transport))

    def watch(
        self, uuid: str, *, after: int = -1, transport: Transport = "auto"
    ) -> Iterator[Transition]:
        """Every transition of the session, as they happen, until it ends."""
        stream = self.aio.watch(uuid, after=after, transport=transport)
        try:
            while True:
                try:
                    yield self._run(stream.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            self._run(stream.aclose())
