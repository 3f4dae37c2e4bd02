"""What a client's update asks for, decided without touching state. Pure code.

Two things can be updated (docs/ARCHITECTURE.md §3): the ``phase`` (accept, reject, cancel)
and ``schedule.available.duration`` (extend or shorten a booking where the
calendar allows). Anything else is a 400 naming the path.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

import msgspec

from talicada.broker import lifecycle
from talicada.broker.calendar import Slots
from talicada.broker.planner import booking
from talicada.broker.records import SessionRecord
from talicada.schema import iso8601
from talicada.schema import messages as msg
from talicada.schema.messages import Conflict, RequestInvalid
from talicada.schema.model import (
    AnyUpdate,
    EnumValueUpdate,
    IntegerDeltaUpdate,
    IntegerValueUpdate,
    Schedule,
    SessionPhase,
    StringValueUpdate,
)
from talicada.settings import PlatformSettings

DURATION_PATH: Final = "schedule.available.duration"
#: Units an integer duration update may name, in seconds; seconds by default.
UNITS: Final = {
    None: 1,
    "s": 1,
    "seconds": 1,
    "min": 60,
    "minutes": 60,
    "h": 3600,
    "hours": 3600,
}
LONGEST: Final = timedelta(days=366)


@dataclass(frozen=True, slots=True)
class PhaseChange:
    """The client asks for the session to become ``target``."""

    target: SessionPhase


@dataclass(frozen=True, slots=True)
class Resize:
    """The client asks for the available window to last ``duration`` (absolute),
    or to change by ``delta`` from what it is now."""

    duration: timedelta | None = None
    delta: timedelta | None = None

    def applied_to(self, current: timedelta) -> timedelta:
        """The new duration when the window lasts ``current`` now."""
        return self.duration if self.duration is not None else current + (self.delta or timedelta())


Intent = PhaseChange | Resize


def _refuse(path: str, reason: str) -> RequestInvalid:
    return RequestInvalid([msg.make(msg.UNSUPPORTED_UPDATE, path=path, reason=reason)])


def _seconds(units: str | None) -> int:
    factor = UNITS.get(units)
    if factor is None:
        known = ", ".join(unit for unit in UNITS if unit)
        raise _refuse("units", f"unknown units {units!r}; use one of {known}")
    return factor


def interpret(update: AnyUpdate) -> Intent:
    """What ``update`` asks for; RequestInvalid naming the field when it is not allowed."""
    if update.path == "phase":
        if not isinstance(update, EnumValueUpdate):
            raise _refuse("kind", "the phase is set with uri:enum-value-update")
        if update.value not in lifecycle.CLIENT_TARGETS:
            allowed = ", ".join(sorted(lifecycle.CLIENT_TARGETS))
            raise RequestInvalid(
                [
                    msg.make(
                        msg.INVALID_FIELD,
                        path="value",
                        reason=f"'{update.value}' is not a phase a client can set; use {allowed}",
                    )
                ]
            )
        target: SessionPhase = update.value
        return PhaseChange(target)
    if update.path == DURATION_PATH:
        return _resize(update)
    raise _refuse(update.path or "path", f"only 'phase' and '{DURATION_PATH}' can be updated")


def _resize(update: AnyUpdate) -> Resize:
    # Integers are bounded before they become durations: a client's 10**15 is
    # a 400, not an overflow.
    if isinstance(update, IntegerValueUpdate | IntegerDeltaUpdate):
        amount = update.value if isinstance(update, IntegerValueUpdate) else update.delta
        if abs(amount) * _seconds(update.units) > LONGEST.total_seconds():
            raise RequestInvalid(
                [
                    msg.make(
                        msg.INVALID_FIELD,
                        path="value" if isinstance(update, IntegerValueUpdate) else "delta",
                        reason="more than 366 days",
                    )
                ]
            )
    if isinstance(update, StringValueUpdate):
        try:
            return Resize(duration=iso8601.parse_duration(update.value))
        except iso8601.Iso8601Error as error:
            raise RequestInvalid(
                [msg.make(msg.INVALID_FIELD, path="value", reason=str(error))]
            ) from None
    if isinstance(update, IntegerValueUpdate):
        return Resize(duration=timedelta(seconds=update.value * _seconds(update.units)))
    if isinstance(update, IntegerDeltaUpdate):
        return Resize(delta=timedelta(seconds=update.delta * _seconds(update.units)))
    raise _refuse(
        "kind",
        "a duration is set with uri:string-value-update (ISO 8601) or "
        "uri:integer-value-update, or changed with uri:integer-delta-update",
    )


def check_duration(duration: timedelta) -> None:
    """RequestInvalid unless ``duration`` is a usable length for a window."""
    if duration <= timedelta(0):
        raise RequestInvalid(
            [msg.make(msg.INVALID_FIELD, path="value", reason="the duration must stay above zero")]
        )
    if duration > LONGEST:
        raise RequestInvalid(
            [msg.make(msg.INVALID_FIELD, path="value", reason="the duration is over 366 days")]
        )


def resized(
    record: SessionRecord,
    schedule: Schedule,
    change: Resize,
    now: datetime,
    slots: Slots,
    platform: PlatformSettings,
) -> SessionRecord:
    """``record`` with its available window (and booking) changed as ``change`` asks."""
    assert schedule.available is not None
    assert schedule.available.start is not None
    assert schedule.available.duration is not None
    assert schedule.releasing is not None
    assert schedule.releasing.duration is not None
    available = iso8601.parse_interval(schedule.available.start).start
    duration = change.applied_to(iso8601.parse_duration(schedule.available.duration))
    check_duration(duration)
    if duration.total_seconds() > platform.max_duration:
        limit = iso8601.format_duration(timedelta(seconds=platform.max_duration))
        reason = f"platform {platform.name} books at most {limit} per session"
        raise Conflict([msg.make(msg.INVALID_FIELD, path="value", reason=reason)])
    end = available + duration
    if end < now:
        reason = f"the window would have ended at {iso8601.format_instant(end)}"
        raise Conflict([msg.make(msg.INVALID_FIELD, path="value", reason=reason)])
    release = iso8601.parse_duration(schedule.releasing.duration)
    _, last = booking(available, timedelta(0), duration, release, slots)
    new_schedule = msgspec.structs.replace(
        schedule,
        available=msgspec.structs.replace(
            schedule.available, duration=iso8601.format_duration(duration)
        ),
        releasing=msgspec.structs.replace(schedule.releasing, start=iso8601.format_instant(end)),
    )
    return msgspec.structs.replace(
        record,
        booking=msgspec.structs.replace(record.booking, last=last),
        session=msgspec.structs.replace(record.session, schedule=new_schedule),
    )
