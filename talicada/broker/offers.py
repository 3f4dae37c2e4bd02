"""Turning planned windows into offers: fully resolved sessions. Pure code.

Each offer gets its own uuids for itself and every component, and every
reference (data → storage, storage → data, volume → resources) is rewritten
from the client's names to those uuids, as the seed's offers show.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime

import msgspec

from talicada.broker.planner import Window
from talicada.schema.iso8601 import format_duration, format_instant, format_stamp, to_millisecond
from talicada.schema.model import (
    ExecutionSession,
    Metadata,
    MinMax,
    Schedule,
    SimpleComputeResource,
    SimpleMinMaxFloatCost,
    StartDuration,
)
from talicada.schema.validation import ValidRequest
from talicada.settings import PlatformSettings

NewId = Callable[[], str]


#: Random bytes drawn from the OS in bulk: one system call per 256 uuids, not one each.
_RANDOM = bytearray()
_RANDOM_BATCH = 16 * 256
# A forked child must not hand out its parent's remaining bytes again.
os.register_at_fork(after_in_child=_RANDOM.clear)


def new_uuid() -> str:
    """A fresh random (version 4) uuid.

    Formatted by hand from 16 random bytes: an offer set needs a dozen or more,
    and this is several times cheaper than ``str(uuid.uuid4())``.
    """
    if not _RANDOM:
        _RANDOM.extend(os.urandom(_RANDOM_BATCH))
    raw = _RANDOM[-16:]
    del _RANDOM[-16:]
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    text = raw.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def _meta(meta: Metadata | None, uuid: str, default_name: str | None = None) -> Metadata:
    name = meta.name if meta and meta.name else default_name
    description = meta.description if meta else None
    return Metadata(uuid=uuid, name=name, description=description)


def schedule_for(window: Window) -> Schedule:
    """The schedule of an offer placed in ``window``, to the millisecond."""
    preparing, available = to_millisecond(window.preparing), to_millisecond(window.available)
    releasing, done = to_millisecond(window.releasing), to_millisecond(window.done)
    return Schedule(
        preparing=StartDuration(
            start=format_instant(preparing), duration=format_duration(available - preparing)
        ),
        available=StartDuration(
            start=f"{format_instant(available)}/PT0S",
            duration=format_duration(releasing - available),
        ),
        releasing=StartDuration(
            start=format_instant(releasing), duration=format_duration(done - releasing)
        ),
    )


def build_offer(
    valid: ValidRequest,
    window: Window,
    platform: PlatformSettings,
    *,
    index: int,
    now: datetime,
    expires: datetime,
    new_id: NewId = new_uuid,
) -> ExecutionSession:
    """The offer of ``valid`` in ``window`` on ``platform``."""
    request = valid.request
    session_id = new_id()
    storage_ids = [new_id() for _ in request.storage]
    data_ids = [new_id() for _ in request.data]
    ids = {"storage": storage_ids, "data": data_ids}

    storage = []
    for s_index, item in enumerate(request.storage):
        held = [data_ids[d] for d, holder in enumerate(valid.data_storage) if holder == s_index]
        storage.append(
            msgspec.structs.replace(
                item, meta=_meta(item.meta, storage_ids[s_index]), data=held, phase="INITIALIZING"
            )
        )
    data = [
        msgspec.structs.replace(
            item,
            meta=_meta(item.meta, data_ids[d_index]),
            storage=storage_ids[valid.data_storage[d_index]],
            phase="INITIALIZING",
        )
        for d_index, item in enumerate(request.data)
    ]
    compute = request.compute or SimpleComputeResource()
    volumes = []
    for volume, targets in zip(compute.volumes or [], valid.volume_targets, strict=True):
        assert not isinstance(volume, str)  # validation made every mount inline
        volumes.append(
            msgspec.structs.replace(
                volume,
                meta=_meta(volume.meta, new_id()),
                mode=volume.mode or "READONLY",
                resources=[ids[target.family][target.index] for target in targets],
            )
        )
    entry = window.entry
    compute = msgspec.structs.replace(
        compute,
        meta=_meta(compute.meta, new_id(), "compute"),
        cores=MinMax(min=entry.cores, max=entry.cores),
        memory=MinMax(min=entry.memory, max=entry.memory),
        volumes=volumes,
        phase="INITIALIZING",
    )
    executable = msgspec.structs.replace(
        request.executable,
        meta=_meta(request.executable.meta, new_id()),
        phase="INITIALIZING",
    )
    base_name = request.meta.name if request.meta and request.meta.name else None
    return ExecutionSession(
        meta=Metadata(
            uuid=session_id,
            name=f"{base_name}-offer-{index}" if base_name else None,
            created=format_stamp(now),
        ),
        phase="OFFERED",
        expires=format_stamp(expires),
        schedule=schedule_for(window),
        executable=executable,
        compute=compute,
        storage=storage,
        data=data,
        costs=_quote(platform, window),
        metrics=request.metrics,
    )


def _quote(platform: PlatformSettings, window: Window) -> list[SimpleMinMaxFloatCost] | None:
    """The price of the offer when the platform has one."""
    if platform.core_hour_price is None:
        return None
    hours = (window.releasing - window.available).total_seconds() / 3600
    price = round(window.entry.cores * hours * platform.core_hour_price, 4)
    return [SimpleMinMaxFloatCost(min=price, max=price, description="core-hours")]
