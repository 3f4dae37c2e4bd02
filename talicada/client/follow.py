"""Following one session to its end, for ``watch``, ``run`` and ``demo``.

The exit status says how the session ended (:data:`EXIT`; README "The
command line"), so scripts can branch on it without parsing output.
"""

from __future__ import annotations

import asyncio
import contextlib

from rich.console import Console
from rich.live import Live

from talicada.client.aio import AsyncClient, Transport
from talicada.client.display import SessionView, emit
from talicada.client.wire import Transition, is_final

#: Exit status by final phase. 2 is argparse's (bad usage), 5 a broker error,
#: 6 a NO answer, 7 a session that had not ended when the command stopped.
EXIT = {"COMPLETED": 0, "FAILED": 1, "CANCELLED": 3, "REJECTED": 4, "EXPIRED": 4}
BROKER_ERROR = 5
NO_OFFERS = 6
NOT_ENDED = 7

#: Seconds between re-reads of the session while the live view is up: staging
#: progress moves without a transition, so the stream alone would not show it.
REFRESH = 1.0


def exit_status(phase: str) -> int:
    """The exit status of a command that followed a session to ``phase``."""
    return EXIT.get(phase, NOT_ENDED)


async def follow(
    client: AsyncClient,
    uuid: str,
    *,
    live: bool,
    console: Console | None = None,
    transport: Transport = "auto",
) -> int:
    """Show the session until it ends (live view, or JSON lines); its exit status."""
    session = await client.get(uuid)
    if not live:
        async for step in client.watch(uuid, transport=transport):
            emit({"event": "component" if step.component else "transition", **_fields(step)})
        final = await client.get(uuid)
        emit({"event": "end", "session": uuid, "phase": final.phase})
        return exit_status(final.phase)
    view = SessionView(session)
    with Live(view.render(), console=console, refresh_per_second=8, transient=False) as screen:

        async def refresh() -> None:
            while not is_final(view.session.phase):
                await asyncio.sleep(REFRESH)
                view.session = await client.get(uuid)
                screen.update(view.render())

        refresher = asyncio.create_task(refresh())
        try:
            async for step in client.watch(uuid, transport=transport):
                view.add(step)
                view.session = await client.get(uuid)  # component phases and names
                screen.update(view.render())
        finally:
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await refresher
        view.session = await client.get(uuid)
        screen.update(view.render())
    return exit_status(view.session.phase)


def _fields(step: Transition) -> dict[str, object]:
    fields: dict[str, object] = {
        "index": step.index,
        "from": step.source,
        "to": step.target,
        "cause": step.cause,
        "time": step.time,
    }
    if step.component:
        fields["component"] = step.component
    return fields
