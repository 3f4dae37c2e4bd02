"""Running workers: one role's back end per ``talicada worker``, or all of them embedded.

Which back ends exist is :mod:`talicada.workers.backends`; this module turns
one (role, back end) into a consumer of its stream.
"""

from __future__ import annotations

import asyncio

from talicada.events.bus import Bus
from talicada.events.streams import ROLES, Role, stream
from talicada.settings import Settings, SettingsError
from talicada.workers.backends import BACKENDS, backends_in_use
from talicada.workers.runtime import run_worker

#: The worker roles, for the command line.
WORKERS: tuple[Role, ...] = ROLES


def default_backend(role: Role, settings: Settings) -> str:
    """The back end ``role`` runs when none is named: the one its platforms use.

    Raises SettingsError when the platforms use several (name one with --backend).
    """
    used = sorted({name for each, name in backends_in_use(settings.platforms) if each == role})
    if len(used) == 1:
        return used[0]
    raise SettingsError(
        f"worker {role}: the platforms use back ends {', '.join(used)}; choose one with --backend"
    )


async def run_named(
    role: Role,
    *,
    bus: Bus,
    settings: Settings,
    broker_url: str,
    secret: bytes,
    stop: asyncio.Event,
    backend: str | None = None,
) -> None:
    """Run ``role``'s worker for ``backend`` (or the platforms' one) until ``stop``."""
    name = backend or default_backend(role, settings)
    known = BACKENDS[role].get(name)
    if known is None:
        raise SettingsError(
            f"worker {role}: no back end {name!r} (known: {', '.join(sorted(BACKENDS[role]))})"
        )
    await run_worker(
        role,
        stream(role, name),
        known.load(),
        bus=bus,
        settings=settings,
        broker_url=broker_url,
        secret=secret,
        stop=stop,
    )


async def run_all(
    *, bus: Bus, settings: Settings, broker_url: str, secret: bytes, stop: asyncio.Event
) -> None:
    """Run, in this process, a worker for every back end the platforms use (embedded mode)."""
    await asyncio.gather(
        *(
            run_named(
                role,
                bus=bus,
                settings=settings,
                broker_url=broker_url,
                secret=secret,
                stop=stop,
                backend=backend,
            )
            for role, backend in backends_in_use(settings.platforms)
        )
    )
