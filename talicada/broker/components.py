"""The components of a session (executable, compute, storage, data) as one list. Pure.

A session stores its components in the shape of the contract; the lifecycle
engine wants them uniformly: uuid, family, name and phase, and a way to set
one's phase and add a message to it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import msgspec

from talicada.schema.messages import MessageItem
from talicada.schema.model import ComponentPhase, ExecutionSession, LifecycleComponent, Metadata


@dataclass(frozen=True, slots=True)
class Component:
    """One component of a session as the engine sees it."""

    uuid: str
    family: str  # executable, compute, storage or data
    name: str
    phase: ComponentPhase


def _view(family: str, part: LifecycleComponent) -> Component:
    meta = part.meta or Metadata()
    assert meta.uuid is not None, "offers give every component a uuid"
    return Component(
        meta.uuid, family, meta.name or f"{family} {meta.uuid}", part.phase or "INITIALIZING"
    )


def components(session: ExecutionSession) -> list[Component]:
    """Every component of ``session``: executable, compute, then storage and data."""
    return [
        _view("executable", session.executable),
        _view("compute", session.compute),
        *(_view("storage", item) for item in session.storage),
        *(_view("data", item) for item in session.data),
    ]


T = TypeVar("T", bound=LifecycleComponent)


def _change(
    session: ExecutionSession,
    uuid: str,
    phase: ComponentPhase | None = None,
    messages: Callable[[list[MessageItem]], list[MessageItem]] | None = None,
) -> ExecutionSession:
    """``session`` with component ``uuid``'s phase and/or messages changed."""

    def update(part: T) -> T:
        meta = part.meta or Metadata()
        if meta.uuid != uuid:
            return part
        if messages is not None:
            meta = msgspec.structs.replace(meta, messages=messages(meta.messages))
        return msgspec.structs.replace(part, phase=phase or part.phase, meta=meta)

    return msgspec.structs.replace(
        session,
        executable=update(session.executable),
        compute=update(session.compute),
        storage=[update(part) for part in session.storage],
        data=[update(part) for part in session.data],
    )


def with_phase(
    session: ExecutionSession,
    uuid: str,
    phase: ComponentPhase,
    message: MessageItem | None = None,
) -> ExecutionSession:
    """``session`` with component ``uuid`` in ``phase`` (and ``message`` added)."""
    add = None if message is None else (lambda kept: [*kept, message])
    return _change(session, uuid, phase, add)


def add_messages(
    session: ExecutionSession, uuid: str, items: list[MessageItem]
) -> ExecutionSession:
    """``session`` with ``items`` added to the messages of component ``uuid``."""
    return _change(session, uuid, messages=lambda kept: [*kept, *items])


def set_progress(session: ExecutionSession, uuid: str, item: MessageItem) -> ExecutionSession:
    """``session`` with ``item`` as component ``uuid``'s only message of its kind.

    Progress replaces progress: a long download must not grow the record.
    """
    return _change(
        session, uuid, messages=lambda kept: [*(m for m in kept if m.kind != item.kind), item]
    )


def mounted(session: ExecutionSession) -> set[str]:
    """Uuids of the storage and data the executable's volumes mount (it needs them)."""
    needed: set[str] = set()
    holders = {item.meta.uuid: item for item in session.storage if item.meta}
    for volume in session.compute.volumes or []:
        if isinstance(volume, str):
            continue
        for reference in volume.resources or []:
            needed.add(reference)
            storage = holders.get(reference)
            if storage is not None:
                needed.update(storage.data or [])
    return needed
