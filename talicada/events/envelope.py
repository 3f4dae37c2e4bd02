"""The event envelope: what travels on every stream, and its byte framing.

An :class:`Event` says *what happened or must happen* (``type``), to which
session and component, and carries a ``body`` of plain data whose shape the
producer and the consumer of that type agree on. :func:`encode` and
:func:`decode` are the only framing (JSON bytes); buses store the bytes as they
are, so an operator can read a stream with ``redis-cli XRANGE``.

Schema evolution
----------------
Messages outlive deploys: a stream may hold events written by an older or a
newer broker than the worker reading them. So, following msgspec's rules:

* a new field always gets a default, so events written before it existed
  still decode;
* a field is never retyped or renamed; add a new field and stop writing the
  old one instead;
* unknown fields are ignored, so an older consumer reads a newer producer's
  events (this struct must therefore never set ``forbid_unknown_fields``);
* a new ``type`` value is a new contract; a consumer that does not know a type
  fails it, and the bus dead-letters it after its retries, visibly.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec

from talicada.schema.iso8601 import format_instant

__all__ = ["Event", "decode", "encode"]

# Identifiers are bounded so a corrupt or hostile message cannot make every log
# line that carries them huge.
_Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class Event(msgspec.Struct, kw_only=True, omit_defaults=True, frozen=True):
    """One event on a stream (see the module docstring for evolution rules).

    Attributes:
        id: Unique id (uuid4 hex); consumers use it to make effects idempotent.
        type: What the event asks for, ``<noun>.<verb>`` such as
            ``executable.launch``, ``data.stage`` or ``session.release``.
        session: Uuid of the session the event belongs to.
        component: Name or uuid of the component within the session, if any.
        attempt: Which attempt of the *step* this is (1 for the first); a step
            the broker starts again gets a new event with ``attempt + 1``. It is
            not the delivery count, which the bus tracks per message.
        created: When the event was made, ISO 8601 UTC instant.
        deadline: When acting on it stops being useful, ISO 8601 UTC instant.
        body: Type-specific plain data (JSON types only).
    """

    id: _Name
    type: _Name
    session: _Name
    component: str | None = None
    attempt: Annotated[int, msgspec.Meta(ge=1)] = 1
    created: str
    deadline: str | None = None
    body: dict[str, Any] = {}

    @classmethod
    def new(
        cls,
        type: str,
        session: str,
        component: str | None = None,
        body: dict[str, Any] | None = None,
        deadline: datetime | str | None = None,
    ) -> Event:
        """A fresh event with a new id, created now; ``deadline`` may be a datetime."""
        if isinstance(deadline, datetime):
            deadline = format_instant(deadline)
        return cls(
            id=os.urandom(16).hex(),  # 128 random bits, like a uuid4, for less
            type=type,
            session=session,
            component=component,
            created=format_instant(datetime.now(UTC)),
            deadline=deadline,
            body=body if body is not None else {},
        )


# Built once: msgspec encoders and decoders are cheap to reuse and costly to build.
_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Event)


def encode(event: Event) -> bytes:
    """The event as compact JSON bytes, fields at their defaults omitted."""
    return _encoder.encode(event)


def decode(data: bytes | str) -> Event:
    """The event framed in ``data``.

    Raises:
        msgspec.DecodeError: if ``data`` is not JSON or not a valid event (a
            :class:`msgspec.ValidationError` names the offending field).
    """
    return _decoder.decode(data)
