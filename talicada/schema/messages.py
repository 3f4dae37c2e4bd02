"""Messages: the schema's MessageItem and the catalogue of messages we send.

Every message has a stable ``kind`` URN a client can switch on, a template in
messagetemplates.org style (``{name}`` holes), the ``values`` that fill it and
the rendered ``message`` for people. Build them with :func:`make`; never write
a rendered string by hand, so the values always travel with the text.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final, Literal

import msgspec

from talicada.schema.iso8601 import (
    duration_to_millisecond,
    format_duration,
    format_stamp,
)

Level = Literal["DEBUG", "INFO", "WARN", "ERROR", "OTHER"]


class MessageItem(msgspec.Struct, kw_only=True):
    """One message about a request, offer or session (schema ``MessageItem``)."""

    kind: str
    level: Level = "ERROR"
    time: str = ""
    template: str = ""
    values: dict[str, str] = msgspec.field(default_factory=dict)
    message: str = ""


_URN: Final = "urn:talicada:"
#: What every message kind starts with (``urn:talicada:`` + a catalogue kind).
URN: Final = _URN

# -- the catalogue: kind → template ----------------------------------------
INVALID_FIELD: Final = ("error:invalid-field", "{path}: {reason}")
MISSING_FIELD: Final = ("error:missing-field", "{path}: this field is required")
UNKNOWN_FIELD: Final = ("error:unknown-field", "{path}: unknown field")
UNKNOWN_KIND: Final = (
    "error:unknown-kind",
    "{path}: unknown kind '{kind}'; this broker knows {known}",
)
BAD_RANGE: Final = ("error:invalid-range", "{path}: min {min} is greater than max {max}")
DANGLING_REFERENCE: Final = (
    "error:dangling-reference",
    "{path}: '{reference}' does not name or identify any {target}",
)
AMBIGUOUS_REFERENCE: Final = (
    "error:ambiguous-reference",
    "{path}: '{reference}' matches more than one {target}",
)
MALFORMED_BODY: Final = ("error:malformed-body", "the {media} body cannot be read: {reason}")
UNSUPPORTED_KIND: Final = (
    "error:unsupported-kind",
    "platform {platform} cannot run {family} kind '{kind}'; it supports {supported}",
)
RESOURCE_LIMIT: Final = (
    "error:resource-limit",
    "platform {platform} offers at most {limit} {resource} per session; "
    "the request needs at least {requested}",
)
DURATION_LIMIT: Final = (
    "error:duration-limit",
    "platform {platform} books at most {limit} per session; the request asks for {requested}",
)
UNREACHABLE_DATA: Final = (
    "error:unreachable-data",
    "platform {platform} cannot fetch {path}: {reason}",
)
NO_CAPACITY: Final = (
    "error:no-capacity",
    "platform {platform} has no window of {duration} with {cores} cores and {memory} GiB "
    "free starting between {start} and {end}: that capacity is booked",
)
NO_CAPACITY_HELD: Final = (
    "error:no-capacity-held",
    "platform {platform} has no window with {cores} cores and {memory} GiB free now: the "
    "capacity is not booked but held by pending offers, which expire by {expires}",
)
HELD_CAP: Final = (
    "error:held-cap",
    "platform {platform}: your pending offers already hold {cores} cores and {memory} GiB of "
    "the {cap_cores} cores and {cap_memory} GiB one owner may hold; they expire by {expires} "
    "(accept or reject them to free them sooner)",
)
PLATFORM_REFUSES: Final = (
    "error:platform-refuses",
    "platform {platform} cannot run this request: {reason}",
)
PLATFORM_UNAVAILABLE: Final = (
    "error:platform-unavailable",
    "platform {platform} cannot make offers now: {reason}",
)
SITE_UNAVAILABLE: Final = (
    "error:site-unavailable",
    "site {site} gave no answer: {reason}",
)
SITE_REFUSES: Final = ("error:site-refuses", "site {site} refused: {reason}")
COST_LIMIT: Final = (
    "error:cost-limit",
    "platform {platform} would cost at least {cost}, above the maximum {max}",
)
ILLEGAL_TRANSITION: Final = (
    "error:illegal-transition",
    "session {uuid} is {phase}; it cannot become {target}",
)
NOT_FINAL: Final = (
    "error:not-final",
    "session {uuid} is {phase}; only a finished session can be forgotten",
)
OFFER_EXPIRED: Final = ("error:offer-expired", "offer {uuid} expired at {expires}")
OFFER_TAKEN: Final = (
    "error:offer-taken",
    "offer set {offerset} already has an accepted offer ({accepted})",
)
SCHEDULE_FIXED: Final = (
    "error:schedule-fixed",
    "session {uuid} is {phase}; its schedule can no longer change",
)
NO_ROOM: Final = (
    "error:no-room",
    "platform {platform} has no room to make session {uuid} last that long",
)
UNSUPPORTED_UPDATE: Final = ("error:unsupported-update", "{path}: {reason}")
COMPONENT_MESSAGE: Final = ("info:component", "{component}: {text}")
PROGRESS: Final = ("info:progress", "{done} of {total} bytes staged")
CHECKSUM: Final = ("info:checksum", "sha256 {digest} {path}")
NOT_FOUND: Final = ("error:not-found", "no {what} with uuid {uuid}")
UNAVAILABLE: Final = (
    "error:unavailable",
    "the broker cannot answer now: {reason}; try again in {retry} seconds",
)
TIMED_OUT: Final = ("error:timed-out", "{what} took longer than {seconds} seconds")
#: What an offer quotes for one preparation step, and how it knows (issue 13).
ESTIMATE: Final = (
    "info:estimate",
    "{step}: expected {expected}, planned {pessimistic} ({basis}, {samples} samples)",
)
#: How long a preparation step took, against the quote when there was one.
STEP_QUOTED: Final = (
    "info:step-duration",
    "{step} took {actual}; expected {expected} ({error}), planned {pessimistic} ({basis})",
)
STEP_TOOK: Final = ("info:step-duration", "{step} took {actual}")


def _text(value: object) -> str:
    """A value as a message writes it: durations and instants in ISO 8601, as everywhere else,
    to the millisecond (so float seconds leave no ``PT1M25.00001S``).

    ``str(timedelta)`` would say ``1:00:00`` where the rest of the API says ``PT1H``.
    """
    if isinstance(value, timedelta):
        rounded = duration_to_millisecond(abs(value))
        return format_duration(rounded) if value >= timedelta(0) else "-" + format_duration(rounded)
    if isinstance(value, datetime) and value.tzinfo is not None:
        return format_stamp(value)
    return str(value)


def make(
    entry: tuple[str, str],
    level: Level = "ERROR",
    *,
    now: datetime | None = None,
    **values: object,
) -> MessageItem:
    """A message from a catalogue ``entry`` with its holes filled from ``values``."""
    kind, template = entry
    texts = {name: _text(value) for name, value in values.items()}
    return MessageItem(
        kind=_URN + kind,
        level=level,
        time=format_stamp(now or datetime.now(UTC)),
        template=template,
        values=texts,
        message=template.format_map(texts),
    )


class RequestInvalid(Exception):
    """The client sent something we cannot accept (HTTP 400); carries the reasons."""

    status = 400

    def __init__(self, messages: list[MessageItem]) -> None:
        self.messages = messages
        super().__init__("; ".join(m.message for m in messages))


class Conflict(RequestInvalid):
    """A well-formed update that the session's current state does not allow (409)."""

    status = 409


class RequestTimeout(RequestInvalid):
    """The client took too long to send its request (408)."""

    status = 408


class Unavailable(RequestInvalid):
    """A fine request the broker cannot serve just now (503, with ``Retry-After``)."""

    status = 503

    def __init__(self, messages: list[MessageItem], *, retry_after: int = 5) -> None:
        super().__init__(messages)
        self.retry_after = retry_after


class NotFound(RequestInvalid):
    """No such resource, or not the caller's (404)."""

    status = 404


class Forbidden(RequestInvalid):
    """The caller is known but lacks the role this needs (403)."""

    status = 403
