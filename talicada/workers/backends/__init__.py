"""Every back end by role and name: the one registry (docs/ARCHITECTURE.md §7).

A platform names a back end per role (``launcher = "skaha"``, ``stager =
"srcnet"``, ``image_cache = "harbor"``); ``talicada worker ROLE --backend NAME``
runs that back end's handler on the stream ``ROLE:NAME``. Adding a back end is
one module with a handler factory per role it serves, and one entry here.

Modules are imported only when their back end runs, so a broker that never
launches on Skaha never imports the Skaha client.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from talicada.events.streams import IMAGE_CACHE, LAUNCH, PREPARE_DATA, RELEASE, Role

if TYPE_CHECKING:
    from talicada.broker.advice import Advisor
    from talicada.settings import PlatformSettings
    from talicada.workers.runtime import HandlerFactory


@dataclass(frozen=True, slots=True)
class Backend:
    """One back end of one role: where its handler factory lives, what it needs.

    ``table`` names the platform settings table it reads (``skaha`` for
    ``[platforms.skaha]``); startup stops when a platform using it lacks it.
    """

    module: str
    factory: str
    table: str | None = None
    #: Name of the module's offer-time advisor class, if the service has facts
    #: the broker must ask before offering (:mod:`talicada.broker.advice`).
    advisor: str | None = None

    def load(self) -> HandlerFactory:
        """The handler factory (imports the back end's module)."""
        factory: HandlerFactory = getattr(importlib.import_module(self.module), self.factory)
        return factory


_LOCAL_STAGER = Backend("talicada.workers.prepare_data", "local")
_LOCAL_LAUNCH = Backend("talicada.workers.launch", "local")
_LOCAL_RELEASE = Backend("talicada.workers.release", "release")

BACKENDS: Final[dict[Role, dict[str, Backend]]] = {
    PREPARE_DATA: {
        "local": _LOCAL_STAGER,
        "srcnet": Backend("talicada.workers.backends.srcnet", "stager", "srcnet"),
    },
    IMAGE_CACHE: {
        "none": Backend("talicada.workers.image_cache", "none"),
        "harbor": Backend("talicada.workers.backends.harbor", "image_cache", "harbor"),
    },
    LAUNCH: {
        "local": _LOCAL_LAUNCH,
        "skaha": Backend("talicada.workers.backends.skaha", "launcher", "skaha", "Advisor"),
        "slurm": Backend("talicada.workers.backends.slurm", "launcher", "slurm", "Advisor"),
    },
    RELEASE: {
        "local": _LOCAL_RELEASE,
        "skaha": Backend("talicada.workers.backends.skaha", "releaser", "skaha"),
        "slurm": Backend("talicada.workers.backends.slurm", "releaser", "slurm"),
    },
}

#: The platform setting that chooses each role's back end.
SETTING: Final[dict[Role, str]] = {
    PREPARE_DATA: "stager",
    IMAGE_CACHE: "image_cache",
    LAUNCH: "launcher",
    RELEASE: "launcher",
}


def problems(platform: PlatformSettings) -> list[str]:
    """Why ``platform``'s back ends cannot run: unknown names, missing settings tables."""
    found: list[str] = []
    for role, setting in SETTING.items():
        name = platform.backend(role)
        backend = BACKENDS[role].get(name)
        if backend is None:
            if role != RELEASE:  # the launcher is checked once, under launch
                known = ", ".join(sorted(BACKENDS[role]))
                found.append(f"{setting}: no back end {name!r} (known: {known})")
            continue
        if backend.table and getattr(platform, backend.table) is None:
            message = f"[platforms.{backend.table}]: {setting} {name!r} needs this table"
            if message not in found:
                found.append(message)
    return found


def advisors(platforms: list[PlatformSettings]) -> dict[str, Advisor]:
    """The offer-time advisor of each platform whose launcher has one, by platform name."""
    found: dict[str, Advisor] = {}
    for platform in platforms:
        backend = BACKENDS[LAUNCH].get(platform.launcher)
        if backend is not None and backend.advisor is not None:
            module = importlib.import_module(backend.module)
            found[platform.name] = getattr(module, backend.advisor)(platform)
    return found


def backends_in_use(platforms: list[PlatformSettings]) -> list[tuple[Role, str]]:
    """Every (role, back end) the configured platforms need, in a stable order."""
    used: dict[tuple[Role, str], None] = {}
    for platform in platforms:
        for role in SETTING:
            used[(role, platform.backend(role))] = None
    return list(used)
