"""The events that travel on streams: one typed struct per event type, and their framing.

Every event shares the envelope fields of :class:`Event` (id, session,
platform, component, attempt, created, deadline) and carries a ``body`` whose
type the event's ``type`` decides: a tagged union (msgspec's ``tag_field``)
decoded once, on receipt, into the right class. Handlers ``match`` on the
class, so mypy sees every field and a typo is an error, not a KeyError.

Schema evolution
----------------
Messages outlive deploys: a stream may hold events written by an older or a
newer broker than the worker reading them. So, following msgspec's rules:

* a new field always gets a default, so events written before it existed
  still decode;
* a field is never retyped or renamed; add a new field and stop writing the
  old one instead;
* unknown fields are ignored, so an older consumer reads a newer producer's
  events (these structs therefore never set ``forbid_unknown_fields``);
* a new ``type`` is a new class here; a consumer that does not know a type
  cannot decode it, and the bus dead-letters it, visibly.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Annotated, Any, Final, Self

import msgspec

from talicada.schema.iso8601 import format_instant
from talicada.schema.model import (
    AnyData,
    AnyExecutable,
    SimpleComputeResource,
    SimpleStorageResource,
)

__all__ = [
    "AllocateStorage",
    "AnyEvent",
    "CacheImage",
    "ComponentChanged",
    "Event",
    "ExtendExecutable",
    "Handle",
    "Launch",
    "Release",
    "ReleaseData",
    "SessionChanged",
    "SessionForgotten",
    "StageData",
    "decode",
    "encode",
]

# Identifiers are bounded so a corrupt or hostile message cannot make every log
# line that carries them huge.
_Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class _Body(msgspec.Struct, kw_only=True, omit_defaults=True, frozen=True):
    pass


class Handle(_Body, kw_only=True, frozen=True):
    """What an outside service gave a back end for one component.

    ``id`` is the service's name for it (a Skaha session id, a staging job id)
    and ``outputs`` what the component produced there (a staged path, an image
    digest). The broker keeps one per component, so any worker, after any
    restart, can follow, extend or release the component from the record alone.
    """

    backend: str = ""
    id: str | None = None
    outputs: dict[str, str] = {}


class Event(msgspec.Struct, tag_field="type", kw_only=True, omit_defaults=True, frozen=True):
    """The envelope every event shares (see the module docstring).

    Attributes:
        id: Unique id (128 random bits, hex); consumers make effects idempotent with it.
        session: Uuid of the session the event belongs to.
        platform: Name of the session's platform: which back end's settings apply.
        component: Uuid of the component within the session, if any.
        attempt: Which attempt of the *step* this is (1 for the first); not the
            delivery count, which the bus tracks per message.
        created: When the event was made, ISO 8601 UTC instant.
        deadline: When acting on it stops being useful, ISO 8601 UTC instant.
    """

    id: _Name
    session: _Name
    platform: str | None = None
    component: str | None = None
    attempt: Annotated[int, msgspec.Meta(ge=1)] = 1
    created: str
    deadline: str | None = None

    @property
    def type(self) -> str:
        """What the event asks for or reports, ``<noun>.<verb>``: its tag."""
        return str(self.__struct_config__.tag)

    @classmethod
    def new(
        cls,
        session: str,
        *,
        component: str | None = None,
        platform: str | None = None,
        deadline: datetime | None = None,
        **fields: Any,
    ) -> Self:
        """A fresh event of this type with a new id, created now."""
        return cls(
            id=os.urandom(16).hex(),  # 128 random bits, like a uuid4, for less
            session=session,
            platform=platform,
            component=component,
            created=format_instant(datetime.now(UTC)),
            deadline=format_instant(deadline) if deadline is not None else None,
            **fields,
        )


# -- preparation ------------------------------------------------------------


class StorageBody(_Body, kw_only=True, frozen=True):
    """Which storage to allocate, and what the request asked of it."""

    storage: str
    resource: SimpleStorageResource | None = None


class AllocateStorage(Event, tag="storage.allocate", kw_only=True, frozen=True):
    """prepare-data: make the storage of one session ready."""

    body: StorageBody


class StageBody(_Body, kw_only=True, frozen=True):
    """One data item, the storage it goes into, and how long it must stay."""

    data: AnyData
    storage: str
    #: When the staged copy may go: the session's end plus its release time.
    until: str | None = None


class StageData(Event, tag="data.stage", kw_only=True, frozen=True):
    """prepare-data: stage one data item into its storage."""

    body: StageBody


class ReleaseDataBody(_Body, kw_only=True, frozen=True):
    """The storage and data of a session to release, with what staging them gave."""

    reason: str
    #: True after a normal end (COMPLETED), False after a cancel or a failure.
    normal: bool
    components: list[str] = []
    handles: dict[str, Handle] = {}


class ReleaseData(Event, tag="data.release", kw_only=True, frozen=True):
    """prepare-data: undo the staging of a session's data and storage."""

    body: ReleaseDataBody


class ImageBody(_Body, kw_only=True, frozen=True):
    """The executable whose image to make local."""

    executable: AnyExecutable


class CacheImage(Event, tag="image.cache", kw_only=True, frozen=True):
    """image-cache: make the executable's image available on the platform."""

    body: ImageBody


# -- launch and release -------------------------------------------------------


class LaunchBody(_Body, kw_only=True, frozen=True):
    """Everything a launcher needs: what to run, on what, with which data."""

    executable: AnyExecutable
    compute: SimpleComputeResource
    storage: list[SimpleStorageResource] = []
    data: list[AnyData] = []
    #: When the booked window ends, ISO 8601 UTC instant.
    ends: str
    #: When the booked window starts: a launch still pending well after it is stuck.
    starts: str | None = None
    #: What preparation gave each component (staged paths, the image digest).
    handles: dict[str, Handle] = {}
    #: The principal the session belongs to (a back end may map it to an account).
    owner: str | None = None


class Launch(Event, tag="executable.launch", kw_only=True, frozen=True):
    """launch: start the executable."""

    body: LaunchBody


class ExtendBody(_Body, kw_only=True, frozen=True):
    """The new end of the booked window, and the launched executable's handle."""

    ends: str
    handle: Handle | None = None


class ExtendExecutable(Event, tag="executable.extend", kw_only=True, frozen=True):
    """launch: the booked window moved; keep the executable running until ``ends``."""

    body: ExtendBody


class ReleaseBody(_Body, kw_only=True, frozen=True):
    """Why the session is released, and which of its components are still live."""

    reason: str
    #: The session phase that caused the release (RELEASING after a normal end).
    phase: str
    components: list[str] = []
    executable: AnyExecutable
    handles: dict[str, Handle] = {}

    @property
    def normal(self) -> bool:
        """True after a normal end, False after a cancel or a failure."""
        return self.phase == "RELEASING"


class Release(Event, tag="session.release", kw_only=True, frozen=True):
    """release: stop the executable and undo what its launch did."""

    body: ReleaseBody


# -- observers ----------------------------------------------------------------


class TransitionBody(_Body, kw_only=True, frozen=True):
    """One phase change: from what, to what, why and when."""

    source: str = msgspec.field(name="from")
    target: str = msgspec.field(name="to")
    cause: str
    time: str
    #: The component's name and family, so a reader need not look its uuid up.
    name: str | None = None
    family: str | None = None


class SessionChanged(Event, tag="session.transition", kw_only=True, frozen=True):
    """lifecycle: the session moved to another phase."""

    body: TransitionBody


class ComponentChanged(Event, tag="component.transition", kw_only=True, frozen=True):
    """lifecycle: one component moved to another phase."""

    body: TransitionBody


class ForgottenBody(_Body, kw_only=True, frozen=True):
    """Whose session it was (its topic and watchers are named by the owner)."""

    owner: str


class SessionForgotten(Event, tag="session.forgotten", kw_only=True, frozen=True):
    """lifecycle: a final session was deleted (UWS DELETE): its record is gone."""

    body: ForgottenBody


AnyEvent = (
    AllocateStorage
    | StageData
    | ReleaseData
    | CacheImage
    | Launch
    | ExtendExecutable
    | Release
    | SessionChanged
    | ComponentChanged
    | SessionForgotten
)

#: Every event type by its name, for operators' filters and tests.
TYPES: Final[dict[str, type[Event]]] = {
    str(kind.__struct_config__.tag): kind
    for kind in (
        AllocateStorage,
        StageData,
        ReleaseData,
        CacheImage,
        Launch,
        ExtendExecutable,
        Release,
        SessionChanged,
        ComponentChanged,
        SessionForgotten,
    )
}

# Built once: msgspec encoders and decoders are cheap to reuse and costly to build.
_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(AnyEvent)


def encode(event: Event) -> bytes:
    """The event as compact JSON bytes, its type first, fields at their defaults omitted."""
    return _encoder.encode(event)


def decode(data: bytes | str) -> AnyEvent:
    """The event framed in ``data``, as the class of its type.

    Raises:
        msgspec.DecodeError: if ``data`` is not JSON or not a valid event of a
            known type (a :class:`msgspec.ValidationError` names the field).
    """
    event: AnyEvent = _decoder.decode(data)
    return event
