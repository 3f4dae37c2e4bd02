"""An offer's preparation, component by component (docs/ARCHITECTURE.md §10). Pure code.

The offer's ``schedule.preparing`` spans the pessimistic critical path of its
:class:`~talicada.broker.estimates.Quote`; each component gets its own
``schedule.preparing`` (when its step may start, how long it is planned to
take). What each figure rests on — expected and planned seconds, basis
(history, model or default), sample count — is kept compactly in the record
(``SessionRecord.quotes``: most offers are never accepted, and a message per
component would triple what a rejected offer costs to keep) and shown as an
``info:estimate`` message on each component when the session is rendered
(:func:`with_estimates`). When the step ends, talicada/broker/history.py reads
the quote back to compare the actual duration with it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TypeVar

import msgspec

from talicada.broker.estimates import Estimate, Quote
from talicada.broker.history import STEPS
from talicada.broker.records import SessionRecord, StepQuote
from talicada.schema import messages as msg
from talicada.schema.iso8601 import format_duration, format_instant
from talicada.schema.messages import MessageItem
from talicada.schema.model import (
    ExecutionSession,
    LifecycleComponent,
    Metadata,
    Schedule,
    StartDuration,
)

T = TypeVar("T", bound=LifecycleComponent)
#: The step name of the whole preparation, in :class:`StepQuote` and messages.
PREPARATION = "preparation"
_NAMES: dict[str, str] = {str(step): name for step, name in STEPS.items()}


def duration(milliseconds: int) -> str:
    """``milliseconds`` as an ISO 8601 duration."""
    return format_duration(timedelta(milliseconds=milliseconds))


def _ms(seconds: float) -> int:
    # Whole milliseconds: enough for any step, and a stable, short spelling.
    return round(seconds * 1000)


def _planned(part: T, start: datetime, estimate: Estimate) -> T:
    schedule = msgspec.structs.replace(
        part.schedule or Schedule(),
        preparing=StartDuration(
            start=format_instant(start), duration=duration(_ms(estimate.pessimistic))
        ),
    )
    return msgspec.structs.replace(part, schedule=schedule)


def _step(component: str, estimate: Estimate) -> StepQuote:
    return StepQuote(
        component,
        estimate.step,
        _ms(estimate.expected),
        _ms(estimate.pessimistic),
        estimate.basis,
        estimate.samples,
    )


def _uuid(part: LifecycleComponent) -> str:
    assert part.meta is not None
    assert part.meta.uuid is not None
    return part.meta.uuid


def quoted_offer(
    session: ExecutionSession, quote: Quote, begin: datetime
) -> tuple[ExecutionSession, list[StepQuote]]:
    """``session`` (an offer) with each component's planned preparation, and the quotes.

    Storage and the image start when preparation does (``begin``), data once
    its storage is planned to exist, and the launch when the slowest of them
    is planned to be done.
    """
    after_storage = begin + timedelta(seconds=quote.storage.pessimistic if quote.storage else 0)
    launch = begin + quote.planned - timedelta(seconds=quote.launch.pessimistic)
    weakest = quote.weakest()
    steps = [
        StepQuote(
            "",
            PREPARATION,
            _ms(quote.expected.total_seconds()),
            _ms(quote.planned.total_seconds()),
            weakest.basis,
            weakest.samples,
        ),
        _step(_uuid(session.executable), quote.image),
        _step(_uuid(session.compute), quote.launch),
    ]
    storage = session.storage
    if quote.storage is not None:
        storage = [_planned(item, begin, quote.storage) for item in storage]
        steps += [_step(_uuid(item), quote.storage) for item in storage]
    data = [
        _planned(item, after_storage, estimate)
        for item, estimate in zip(session.data, quote.data, strict=True)
    ]
    steps += [_step(_uuid(item), e) for item, e in zip(data, quote.data, strict=True)]
    planned = msgspec.structs.replace(
        session,
        executable=_planned(session.executable, begin, quote.image),
        compute=_planned(session.compute, launch, quote.launch),
        storage=storage,
        data=data,
    )
    return planned, steps


def estimate_message(step: StepQuote, when: datetime) -> MessageItem:
    """The ``info:estimate`` message of one quoted step."""
    return msg.make(
        msg.ESTIMATE,
        "INFO",
        now=when,
        step=_NAMES.get(step.step, step.step),
        expected=duration(step.expected),
        pessimistic=duration(step.planned),
        basis=step.basis,
        samples=step.samples,
    )


def with_estimates(record: SessionRecord, session: ExecutionSession) -> ExecutionSession:
    """``session`` (rendered from ``record``) with an ``info:estimate`` message per quoted step."""
    if not record.quotes:
        return session
    when = datetime.fromtimestamp(record.created / 1000, UTC)
    by_component = {step.component: estimate_message(step, when) for step in record.quotes}

    def add(part: T) -> T:
        meta = part.meta or Metadata()
        item = by_component.get(meta.uuid or "")
        if item is None:
            return part
        return msgspec.structs.replace(
            part, meta=msgspec.structs.replace(meta, messages=[item, *meta.messages])
        )

    overall = by_component.get("")
    meta = session.meta
    if overall is not None:
        meta = msgspec.structs.replace(meta, messages=[overall, *meta.messages])
    return msgspec.structs.replace(
        session,
        meta=meta,
        executable=add(session.executable),
        compute=add(session.compute),
        storage=[add(item) for item in session.storage],
        data=[add(item) for item in session.data],
    )
