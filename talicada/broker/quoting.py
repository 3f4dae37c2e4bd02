"""An offer's preparation, component by component (docs/ARCHITECTURE.md §10). Pure code.

The offer's ``schedule.preparing`` spans the pessimistic critical path of its
:class:`~talicada.broker.estimates.Quote`; each component gets its own
``schedule.preparing`` (when its step may start, how long it is planned to
take) and an ``info:estimate`` message with the expected and planned
durations, their basis (history, model or default) and the number of
samples behind them. When the step ends, talicada/broker/history.py reads
that message back to compare the actual duration with the quote.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TypeVar

import msgspec

from talicada.broker.estimates import Estimate, Quote
from talicada.broker.history import STEPS
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


def _duration(seconds: float) -> str:
    # Whole milliseconds: enough for any step, and a stable, short spelling.
    return format_duration(timedelta(milliseconds=round(seconds * 1000)))


def estimate_message(estimate: Estimate, now: datetime) -> MessageItem:
    """The ``info:estimate`` message of one step."""
    return msg.make(
        msg.ESTIMATE,
        "INFO",
        now=now,
        step=STEPS[estimate.step],
        expected=_duration(estimate.expected),
        pessimistic=_duration(estimate.pessimistic),
        basis=estimate.basis,
        samples=estimate.samples,
    )


def _quoted(part: T, start: datetime, estimate: Estimate, now: datetime) -> T:
    meta = part.meta or Metadata()
    meta = msgspec.structs.replace(meta, messages=[*meta.messages, estimate_message(estimate, now)])
    schedule = msgspec.structs.replace(
        part.schedule or Schedule(),
        preparing=StartDuration(
            start=format_instant(start), duration=_duration(estimate.pessimistic)
        ),
    )
    return msgspec.structs.replace(part, meta=meta, schedule=schedule)


def quoted_offer(
    session: ExecutionSession, quote: Quote, begin: datetime, now: datetime
) -> ExecutionSession:
    """``session`` (an offer) with each component's planned preparation and estimate.

    Storage and the image start when preparation does (``begin``), data once its storage
    is planned to exist, and the launch when the slowest of them is planned
    to be done.
    """
    after_storage = begin + timedelta(seconds=quote.storage.pessimistic if quote.storage else 0)
    launch = begin + quote.planned - timedelta(seconds=quote.launch.pessimistic)
    storage = session.storage
    if quote.storage is not None:
        storage = [_quoted(item, begin, quote.storage, now) for item in storage]
    data = [
        _quoted(item, after_storage, estimate, now)
        for item, estimate in zip(session.data, quote.data, strict=True)
    ]
    weakest = quote.weakest()
    overall = msg.make(
        msg.ESTIMATE,
        "INFO",
        now=now,
        step="preparation",
        expected=_duration(quote.expected.total_seconds()),
        pessimistic=_duration(quote.planned.total_seconds()),
        basis=weakest.basis,
        samples=weakest.samples,
    )
    return msgspec.structs.replace(
        session,
        meta=msgspec.structs.replace(session.meta, messages=[*session.meta.messages, overall]),
        executable=_quoted(session.executable, begin, quote.image, now),
        compute=_quoted(session.compute, launch, quote.launch, now),
        storage=storage,
        data=data,
    )
