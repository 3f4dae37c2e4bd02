"""The kind registry: every kind this broker knows and how each dialect spells it.

Internally a kind is a short, dialect-free name (``docker-container``). On the
wire it is a URI whose spelling depends on the dialect the client speaks
(docs/ARCHITECTURE.md §3). This module is the only place that knows those spellings.
"""

from __future__ import annotations

import enum
import functools
from typing import Final


class Dialect(enum.Enum):
    """The three spellings of the execution-broker model that real clients send."""

    SEED_2025 = "seed-2025"
    V1_0 = "v1.0"
    V1_0_6 = "v1.0.6"


class Family(enum.Enum):
    """What a kind describes; part of every kind URI."""

    EXECUTABLE = "executable"
    COMPUTE = "compute"
    STORAGE = "storage"
    VOLUME = "volume"
    DATA = "data"
    COSTS = "costs"
    METRICS = "metrics"
    SESSION = "session"


#: Prefix of the test-task kinds; the same in every dialect.
TEST_TASK_PREFIX: Final = "urn:talicada:kinds:executable:"

#: Every kind by family, in the order they are listed to clients.
KINDS: Final[dict[Family, tuple[str, ...]]] = {
    Family.EXECUTABLE: (
        "docker-container",
        "singularity-container",
        "jupyter-notebook",
        "ping",
        "delay",
        "checksum",
    ),
    Family.COMPUTE: ("simple-compute-resource",),
    Family.STORAGE: ("simple-storage-resource",),
    Family.VOLUME: ("simple-volume-mount",),
    Family.DATA: (
        "simple-data-resource",
        "S3-data-resource",
        "rucio-data-resource",
        "ivoa-data-resource",
        "skao-data-resource",
    ),
    Family.COSTS: ("simple-minmax-float-cost",),
    Family.METRICS: ("simple-minmax-float-metric",),
    Family.SESSION: ("execution-session",),
}

TEST_TASKS: Final = frozenset({"ping", "delay", "checksum"})

_SEED = "https://www.purl.org/ivoa.net/EB/schema/types/{family}/{name}-1.0"
_V1_0 = "https://www.purl.org/ivoa.net/EB/schema/v1.0/types/{family}/{name}-1.0"
_V1_0_6 = "https://www.purl.org/ivoa.net/Calycopis-openapi/schema/v1.0/kinds/{family}/{name}.yaml"
_TEMPLATES: Final = {Dialect.SEED_2025: _SEED, Dialect.V1_0: _V1_0, Dialect.V1_0_6: _V1_0_6}

# The session kind is spelled differently from the others in each dialect.
_SESSION_NAMES: Final = {
    Dialect.SEED_2025: "execution-session-response",
    Dialect.V1_0: "scheduled-execution-session",
    Dialect.V1_0_6: "scheduled-execution-session",
}


@functools.lru_cache(maxsize=1024)
def uri_for(family: Family, name: str, dialect: Dialect) -> str:
    """The URI of kind ``name`` as ``dialect`` spells it (remembered: every render asks)."""
    if name in TEST_TASKS:
        return f"{TEST_TASK_PREFIX}{name}-1.0"
    if family is Family.SESSION:
        name = _SESSION_NAMES[dialect]
    return _TEMPLATES[dialect].format(family=family.value, name=name)


def _build_lookup() -> dict[str, tuple[Family, str, Dialect | None]]:
    lookup: dict[str, tuple[Family, str, Dialect | None]] = {}
    for family, names in KINDS.items():
        for name in names:
            for dialect in Dialect:
                uri = uri_for(family, name, dialect)
                # Test-task URIs are shared by all dialects, so they say nothing
                # about which dialect the client speaks.
                lookup[uri] = (family, name, None if name in TEST_TASKS else dialect)
    # 2025 clients also wrote the compute family as "computer".
    for dialect in (Dialect.SEED_2025, Dialect.V1_0):
        for name in KINDS[Family.COMPUTE]:
            uri = _TEMPLATES[dialect].format(family="computer", name=name)
            lookup[uri] = (Family.COMPUTE, name, dialect)
    return lookup


_LOOKUP: Final = _build_lookup()


class UnknownKind(ValueError):
    """A kind URI this broker does not know, with the ones it does."""

    def __init__(self, uri: str, family: Family) -> None:
        self.uri = uri
        self.family = family
        self.known = known_uris(family)
        super().__init__(f"unknown {family.value} kind '{uri}'")


def resolve(uri: str, family: Family) -> tuple[str, Dialect | None]:
    """The internal name of ``uri`` and the dialect it implies (None when neutral).

    Raises UnknownKind when the URI is not a ``family`` kind this broker knows.
    """
    found = _LOOKUP.get(uri)
    if found is None or found[0] is not family:
        raise UnknownKind(uri, family)
    return found[1], found[2]


def dialect_of(uri: str) -> Dialect | None:
    """The dialect a kind URI belongs to, or None for neutral or unknown URIs."""
    found = _LOOKUP.get(uri)
    return None if found is None else found[2]


def known_uris(family: Family, dialect: Dialect = Dialect.V1_0) -> list[str]:
    """The URIs of every ``family`` kind, as ``dialect`` spells them."""
    return [uri_for(family, name, dialect) for name in KINDS[family]]
