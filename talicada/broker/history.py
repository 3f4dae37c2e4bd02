"""What each finished preparation step was and how long it took (docs/ARCHITECTURE.md §10). Pure.

The broker sees every step begin and end: a component goes PREPARING when
its step is asked for (storage allocation, image caching, data staging, and
for the compute the launch) and AVAILABLE or RUNNING when a worker reports
it done. :func:`annotate` runs on every lifecycle change before it is
committed: it notes when a component starts preparing (``SessionRecord.started``)
and, when one finishes, adds a message comparing the actual duration with the
quoted one and returns a :class:`Sample` for the history. So history covers
every back end without a line in any worker, and the time counted is the
time a session waited, queueing included.

Each sample is kept under a few keys (:func:`keys_for`), from the most
specific (this image on this platform) to the coarsest the estimator falls
back on; every key keeps a bounded window of recent samples.
"""

from __future__ import annotations

import hashlib
import math
import urllib.parse
from datetime import datetime, timedelta
from typing import Final, Literal

import msgspec

from talicada.broker.components import Component, add_messages, components
from talicada.broker.engine import Change
from talicada.broker.records import SessionRecord, StepQuote
from talicada.schema import messages as msg
from talicada.schema.iso8601 import (
    Iso8601Error,
    duration_to_millisecond,
    format_duration,
    parse_instant,
)
from talicada.schema.messages import MessageItem
from talicada.schema.model import (
    AnyData,
    AnyExecutable,
    DockerContainer,
    JupyterNotebook,
    SimpleDataResource,
    SingularityContainer,
    SkaoDataResource,
    kind_of,
)

Step = Literal["image", "storage", "stage", "launch"]
#: What a step is called in messages and metric labels.
STEPS: Final[dict[Step, str]] = {
    "image": "image caching",
    "storage": "storage allocation",
    "stage": "data staging",
    "launch": "launch",
}
#: The component family whose preparation is each step.
FAMILY_STEP: Final[dict[str, Step]] = {
    "executable": "image",
    "storage": "storage",
    "data": "stage",
    "compute": "launch",
}
#: Any source: the key every staging is also kept under, for requests that
#: do not say where their data comes from.
ANY: Final = "*"
_DONE: Final = frozenset({"AVAILABLE", "RUNNING"})
_LONGEST_KEY_PART: Final = 160


class Sample(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One finished preparation step. Stored, so new fields get defaults.

    ``size`` is bytes (the image's or the data's); ``source`` where the data
    came from (the replica's storage element, or the URL's host); ``area`` the
    storage area it went to. ``expected``, ``quoted`` (the pessimistic
    figure the offer planned with) and ``basis`` are what the offer said.
    """

    step: Step
    platform: str
    seconds: float
    finished: int  # epoch ms
    session: str = ""
    kind: str | None = None
    image: str | None = None
    digest: str | None = None
    size: int | None = None
    cached: bool | None = None
    source: str | None = None
    area: str | None = None
    cores: int | None = None
    memory: int | None = None
    expected: float | None = None
    quoted: float | None = None
    basis: str | None = None


# -- keys ------------------------------------------------------------------------------


def _part(text: str) -> str:
    """``text`` fit for a key: bounded in length (long image names are hashed)."""
    if len(text) <= _LONGEST_KEY_PART:
        return text
    return "sha256-" + hashlib.sha256(text.encode()).hexdigest()[:32]


def size_class(size: int | None) -> str:
    """Sizes within a factor of two share a class; ``*`` is every size (and unknown ones)."""
    return ANY if not size else str(int(math.log2(size)))


def image_key(platform: str, kind: str, image: str | None) -> str:
    """Image caching of ``image`` (all images of ``kind`` when None) on ``platform``."""
    return f"image|{platform}|{kind}|{_part(image) if image else ANY}"


def storage_key(platform: str) -> str:
    """Storage allocation on ``platform``."""
    return f"storage|{platform}"


def stage_key(platform: str, kind: str, source: str, size: int | None) -> str:
    """Staging data of ``kind`` and about ``size`` bytes from ``source`` on ``platform``."""
    return f"stage|{platform}|{kind}|{_part(source)}|{size_class(size)}"


def rate_key(platform: str, source: str) -> str:
    """Every staging from ``source`` on ``platform``, whatever its size: the size-rate model."""
    return f"rate|{platform}|{_part(source)}"


def launch_key(platform: str, kind: str) -> str:
    """Launching an executable of ``kind`` on ``platform``."""
    return f"launch|{platform}|{kind}"


def keys_for(sample: Sample) -> list[str]:
    """Every key ``sample`` is kept under."""
    platform, kind = sample.platform, sample.kind or ANY
    match sample.step:
        case "image":
            keys = [image_key(platform, kind, None)]
            if sample.image:
                keys.append(image_key(platform, kind, sample.image))
            return keys
        case "storage":
            return [storage_key(platform)]
        case "stage":
            # Under its size class, and under every size: a request that does
            # not say how big its data is gets the median of all.
            sources = [ANY, sample.source] if sample.source else [ANY]
            sizes = list(dict.fromkeys([sample.size, None]))
            keys = [stage_key(platform, kind, s, size) for s in sources for size in sizes]
            return keys + [rate_key(platform, s) for s in sources]
        case "launch":
            return [launch_key(platform, kind)]
    raise AssertionError(sample.step)  # pragma: no cover - Step is closed


# -- what a component's step is ---------------------------------------------------------


def image_of(executable: AnyExecutable) -> str | None:
    """Where the executable's image (or notebook) comes from; None for test tasks."""
    if isinstance(executable, DockerContainer):
        return executable.image.locations[0]
    if isinstance(executable, SingularityContainer | JupyterNotebook):
        return executable.location
    return None


def data_size(item: AnyData) -> int | None:
    """The data item's size in bytes, when the request says."""
    if isinstance(item, SimpleDataResource):
        return item.size
    if isinstance(item, SkaoDataResource):
        return item.skao.datasize
    return None


def data_source(item: AnyData) -> str | None:
    """Where the request says the data comes from, before any staging: the URL's
    host, or the first replica it names (SRCNet stagers prefer those)."""
    if isinstance(item, SimpleDataResource):
        url = urllib.parse.urlsplit(item.location)
        return (url.hostname or url.scheme or None) if url.scheme != "file" else "file"
    if isinstance(item, SkaoDataResource) and item.skao.replicas:
        return item.skao.replicas[0].rsename
    return None


def _int(text: str | None) -> int | None:
    return int(text) if text is not None and text.isdigit() else None


def _quote_of(record: SessionRecord, uuid: str) -> StepQuote | None:
    """What the offer quoted for component ``uuid``'s step."""
    return next((q for q in record.quotes if q.component == uuid), None)


def sample_of(record: SessionRecord, component: Component, seconds: float, finished: int) -> Sample:
    """The sample of ``component``'s finished step in ``record``."""
    session = record.session
    step = FAMILY_STEP[component.family]
    handle = record.handles.get(component.uuid)
    outputs = handle.outputs if handle else {}
    quote = _quote_of(record, component.uuid)
    sample = Sample(
        step=step,
        platform=record.platform,
        seconds=round(seconds, 3),
        finished=finished,
        session=record.uuid,
        expected=quote.expected / 1000 if quote else None,
        quoted=quote.planned / 1000 if quote else None,
        basis=quote.basis if quote else None,
    )
    if step in ("image", "launch"):
        sample.kind = kind_of(session.executable)
    if step == "image":
        sample.image = image_of(session.executable)
        sample.digest = outputs.get("digest")
        sample.size = _int(outputs.get("size"))
        cached = outputs.get("cached")
        sample.cached = None if cached is None else cached == "yes"
    elif step == "storage":
        sample.area = outputs.get("storage_area")
    elif step == "stage":
        item = next(d for d in session.data if d.meta and d.meta.uuid == component.uuid)
        sample.kind = kind_of(item)
        # The size the request gave (offers look it up by that), else what was staged.
        sample.size = data_size(item) or _int(outputs.get("bytes") or outputs.get("size"))
        sample.source = outputs.get("replica") or data_source(item)
        holder = record.handles.get(item.storage or "")
        sample.area = holder.outputs.get("storage_area") if holder else None
    elif step == "launch":
        cores, memory = session.compute.cores, session.compute.memory
        sample.cores = cores.min if cores else None
        sample.memory = memory.min if memory else None
    return sample


def _ms(instant: str, fallback: datetime) -> int:
    try:
        return int(parse_instant(instant).timestamp() * 1000)
    except Iso8601Error:
        return int(fallback.timestamp() * 1000)


def _took(component: Component, sample: Sample, now: datetime) -> MessageItem:
    """The record's note of how long the step took against what was quoted."""
    actual = timedelta(seconds=sample.seconds)
    if sample.expected is None or sample.quoted is None:
        return msg.make(msg.STEP_TOOK, "INFO", now=now, step=STEPS[sample.step], actual=actual)
    return msg.make(
        msg.STEP_QUOTED,
        "INFO",
        now=now,
        step=STEPS[sample.step],
        actual=actual,
        expected=timedelta(seconds=sample.expected),
        pessimistic=timedelta(seconds=sample.quoted),
        basis=sample.basis or "default",
        error=estimate_error(sample.seconds, sample.expected),
    )


def estimate_error(actual: float, expected: float) -> str:
    """How far off the estimate was: a percentage, or (nothing expected) the
    time it took beyond it, since a share of zero says nothing."""
    if expected:
        return f"{(actual - expected) / expected:+.0%}"
    return "+" + format_duration(duration_to_millisecond(timedelta(seconds=actual)))


def annotate(change: Change, now: datetime) -> list[Sample]:
    """Note preparation starts in ``change`` and return the samples of the steps it ends.

    ``change.record`` gains the start times of components that begin
    preparing (and loses those of components that stop), and a message on
    each component whose step finished, saying how long it took against the
    quote. Called once per computed change, before it is committed.
    """
    record = change.record
    started = dict(record.started)
    by_uuid = {c.uuid: c for c in components(record.session)}
    samples: list[Sample] = []
    notes: list[tuple[str, MessageItem]] = []
    for transition in change.history:
        uuid = transition.component
        if uuid is None or uuid not in by_uuid:
            continue
        # The transition's own time: a report may date it when it happened
        # (a job that started before the launcher looked).
        ms = _ms(transition.time, now)
        if transition.target == "PREPARING":
            started[uuid] = ms
            continue
        begun = started.pop(uuid, None)
        if begun is None or transition.source != "PREPARING" or transition.target not in _DONE:
            continue
        component = by_uuid[uuid]
        sample = sample_of(record, component, max(0.0, (ms - begun) / 1000), ms)
        samples.append(sample)
        notes.append((uuid, _took(component, sample, now)))
    if started == record.started and not notes:
        return samples
    session = record.session
    for uuid, note in notes:
        session = add_messages(session, uuid, [note])
    change.record = msgspec.structs.replace(record, started=started, session=session)
    return samples
