"""The streams events travel on: one per worker role and back end, plus observers.

A platform names one back end per role (``launcher = "skaha"``); the broker
publishes a platform's events on ``<role>:<back end>`` (``launch:skaha``), and
``talicada worker launch --backend skaha`` consumes exactly that stream, so a
Slurm launcher never takes a Skaha launch. The launcher's back end also
releases what it launched, so ``release`` streams are keyed by the launcher.

This module is the one place stream names are made; key prefixes are added by
:class:`talicada.constants.Keys`.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

#: The roles of workers (docs/ARCHITECTURE.md §6): each consumes the streams of its role.
Role = Literal["prepare-data", "image-cache", "launch", "release"]
PREPARE_DATA: Final[Role] = "prepare-data"
IMAGE_CACHE: Final[Role] = "image-cache"
LAUNCH: Final[Role] = "launch"
RELEASE: Final[Role] = "release"
ROLES: Final[tuple[Role, ...]] = get_args(Role)

#: Every transition of every session, for observers (notifications, MQTT, tail).
LIFECYCLE: Final = "lifecycle"


def stream(role: Role, backend: str) -> str:
    """The stream of ``role`` events for back end ``backend``: ``launch:skaha``."""
    return f"{role}:{backend}"


def role_of(name: str) -> str:
    """The role part of a stream name (``launch`` of ``launch:skaha``)."""
    return name.partition(":")[0]
