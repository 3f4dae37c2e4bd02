"""Validation: plain request data in, a :class:`ValidRequest` or every reason out.

Each failure is a MessageItem naming the field by its path (``data[1].storage``)
and the reason. Components are typed one by one so a request with several
mistakes hears about each of them at once, not one per round trip.

What depends on the platform (supported kinds, sizes, reachable data) is not
checked here: a valid request a platform cannot run is answered ``result: NO``
by the planner, not refused.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, get_args

import msgspec

from talicada.schema import iso8601
from talicada.schema import messages as msg
from talicada.schema.controls import control_characters
from talicada.schema.dialects import canonical_update, detect, to_canonical
from talicada.schema.kinds import Dialect
from talicada.schema.messages import MessageItem, RequestInvalid
from talicada.schema.model import (
    AnyData,
    AnyExecutable,
    AnyUpdate,
    Checksum,
    Costs,
    Delay,
    DockerContainer,
    ExecutionRequest,
    Metadata,
    Metrics,
    MinMax,
    Schedule,
    SimpleComputeResource,
    SimpleDataResource,
    SimpleStorageResource,
    SimpleVolumeMount,
    kind_of,
)

_PARTS: Final[dict[str, Any]] = {
    "meta": Metadata,
    "executable": AnyExecutable,
    "compute": SimpleComputeResource,
    "storage": list[SimpleStorageResource],
    "data": list[AnyData],
    "volumes": list[SimpleVolumeMount],
    "schedule": Schedule,
    "costs": Costs,
    "metrics": Metrics,
}
_SHA256: Final = re.compile(r"^sha256:[0-9a-f]{64}$")
#: Injected test failures are for validation suites: they come within a day.
LONGEST_FAIL_AFTER: Final = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class Target:
    """A resolved reference: a storage or data item by its index in the request."""

    family: str  # "storage" or "data"
    index: int


@dataclass(frozen=True, slots=True)
class ValidRequest:
    """A request that passed every rule, with defaults applied and references resolved.

    ``request.storage`` includes the implicit storage made for data without
    one, and ``request.compute.volumes`` holds every mount inline. The links
    say which storage holds each data item and what each volume mounts.
    """

    dialect: Dialect
    request: ExecutionRequest
    cores: tuple[int, int]
    memory: tuple[int, int]
    duration: timedelta | None
    start: iso8601.Interval | None
    data_storage: tuple[int, ...]
    volume_targets: tuple[tuple[Target, ...], ...]
    max_cost: float | None = None
    fail_after: dict[str, timedelta] = field(default_factory=dict)

    @property
    def executable_kind(self) -> str:
        """Internal name of the executable's kind."""
        return kind_of(self.request.executable)


def _where(error: msgspec.ValidationError, prefix: str) -> tuple[str, str]:
    """Path and reason of a msgspec error, the path starting at ``prefix``."""
    text = str(error)
    reason, _, at = text.partition(" - at `$")
    path = prefix + at.rstrip("`") if at else prefix
    unknown = re.match(r"Object contains unknown field `(.+)`", reason)
    if unknown:
        return f"{path}.{unknown.group(1)}", "unknown field"
    missing = re.match(r"Object missing required field `(.+)`", reason)
    if missing:
        return f"{path}.{missing.group(1)}", "this field is required"
    return path, reason.replace("`", "'")


def _field(path: str, reason: str) -> MessageItem:
    return msg.make(msg.INVALID_FIELD, path=path, reason=reason)


def _refuse_control_characters(doc: dict[str, Any]) -> None:
    """RequestInvalid naming every field with a control character (see :mod:`.controls`)."""
    problems = [_field(path, reason) for path, reason in control_characters(doc)]
    if problems:
        raise RequestInvalid(problems[:20])


def parse_request(doc: object, *, now: datetime, lax: bool = False) -> ValidRequest:
    """Validate a decoded request body; raises RequestInvalid with every reason.

    ``lax`` lets strings stand for numbers and booleans (XML has no other types).
    """
    if not isinstance(doc, dict):
        raise RequestInvalid([_field("$", "the request must be an object")])
    _refuse_control_characters(doc)
    dialect = detect(doc)
    canonical = _command_as_text(to_canonical(doc, dialect))
    try:
        request = msgspec.convert(canonical, ExecutionRequest, strict=not lax)
    except msgspec.ValidationError as error:
        # msgspec stops at the first problem; typing the parts one by one
        # finds every independent one, so the client hears of all at once.
        # A rule about a whole part (how many data items) shows only in the
        # full error, which is then the reason: a 400 always says why.
        path, reason = _where(error, "")
        problems = _structural_problems(canonical, lax) or [_field(path.lstrip(".") or "$", reason)]
        raise RequestInvalid(problems) from None
    return _Rules(request, dialect, now).check()


def _command_as_text(canonical: dict[str, Any]) -> dict[str, Any]:
    """``canonical`` with numbers in ``executable.command`` written as text.

    Clients of the reference prototype send YAML such as ``command: [10, 0]``;
    the arguments reach a process as text anyway. Booleans stay refused.
    """
    executable = canonical.get("executable")
    command = executable.get("command") if isinstance(executable, dict) else None
    if isinstance(command, list):
        executable["command"] = [  # type: ignore[index]
            str(item) if isinstance(item, int | float) and not isinstance(item, bool) else item
            for item in command
        ]
    return canonical


def _structural_problems(canonical: dict[str, Any], lax: bool) -> list[MessageItem]:
    """Every part of ``canonical`` that does not fit the model, each with its path."""
    problems: list[MessageItem] = []
    for key, value in canonical.items():
        part = _PARTS.get(key)
        if part is None:
            problems.append(msg.make(msg.UNKNOWN_FIELD, path=key))
            continue
        try:
            msgspec.convert(value, part, strict=not lax)
        except msgspec.ValidationError as error:
            path, reason = _where(error, key)
            problems.append(_field(path, reason))
    if "executable" not in canonical:
        problems.append(msg.make(msg.MISSING_FIELD, path="executable"))
    return problems


class _Rules:
    """The semantic rules, each appending to ``problems`` rather than stopping."""

    def __init__(self, request: ExecutionRequest, dialect: Dialect, now: datetime) -> None:
        self.request = request
        self.dialect = dialect
        self.now = now
        self.problems: list[MessageItem] = []

    def check(self) -> ValidRequest:
        request = self.request
        compute = request.compute or SimpleComputeResource()
        cores = self._range(compute.cores, "compute.cores")
        memory = self._range(compute.memory, "compute.memory")
        for index, storage in enumerate(request.storage):
            self._range(storage.size, f"storage[{index}].size")
        duration, start = self._schedule(request.schedule)
        fail_after = self._executable(request.executable)
        self._data(request.data)
        max_cost = self._costs(request.costs, "costs")
        all_storage, data_storage = self._storage_links(request.storage, request.data)
        volumes, targets = self._volumes(compute, request.volumes, all_storage, request.data)
        if isinstance(request.executable, Checksum):
            self._checksum_paths(request.executable, volumes)
        if self.problems:
            raise RequestInvalid(self.problems)
        compute = msgspec.structs.replace(compute, volumes=list(volumes))
        request = msgspec.structs.replace(request, compute=compute, storage=all_storage, volumes=[])
        return ValidRequest(
            dialect=self.dialect,
            request=request,
            cores=cores,
            memory=memory,
            duration=duration,
            start=start,
            data_storage=tuple(data_storage),
            volume_targets=tuple(targets),
            max_cost=max_cost,
            fail_after=fail_after,
        )

    # -- numbers and times ---------------------------------------------------

    def _range(self, value: MinMax | None, path: str) -> tuple[int, int]:
        """(min, max) with defaults: 1–1 when absent, max = min when only min given."""
        low = value.min if value and value.min is not None else 1
        high = value.max if value and value.max is not None else max(low, 1)
        if value and value.min is None and value.max is not None:
            low = min(1, high)
        if low > high:
            self.problems.append(msg.make(msg.BAD_RANGE, path=path, min=low, max=high))
        return low, high

    def _duration(self, text: str, path: str) -> timedelta | None:
        try:
            return iso8601.parse_duration(text)
        except iso8601.Iso8601Error as error:
            self.problems.append(_field(path, str(error)))
            return None

    def _schedule(
        self, schedule: Schedule | None
    ) -> tuple[timedelta | None, iso8601.Interval | None]:
        requested = schedule.requested if schedule else None
        duration = None
        start = None
        if requested and requested.duration is not None:
            parsed = self._duration(requested.duration, "schedule.requested.duration")
            if parsed is not None and parsed <= timedelta(0):
                self.problems.append(
                    _field("schedule.requested.duration", "the duration must be longer than zero")
                )
            duration = parsed or duration
        if requested and requested.start is not None:
            path = "schedule.requested.start"
            try:
                start = iso8601.parse_interval(requested.start)
            except iso8601.Iso8601Error as error:
                self.problems.append(_field(path, str(error)))
            else:
                if start.end < self.now:
                    self.problems.append(
                        _field(path, f"the interval ended at {iso8601.format_instant(start.end)}")
                    )
                elif start.end > datetime.max.replace(tzinfo=UTC) - 2 * iso8601.MAX_DURATION:
                    # The planner adds the duration (≤ MAX_DURATION) and release to the
                    # end of the window; near year 9999 that overflows datetime (a 500).
                    self.problems.append(_field(path, "the interval ends too far in the future"))
        return duration, start

    def _executable(self, executable: AnyExecutable) -> dict[str, timedelta]:
        fail_after: dict[str, timedelta] = {}
        if isinstance(executable, Delay):
            parsed = self._duration(executable.duration, "executable.duration")
            if parsed is not None and parsed <= timedelta(0):
                self.problems.append(
                    _field("executable.duration", "the duration must be longer than zero")
                )
        fail = executable.injected_failure()
        if fail is not None:
            after = self._duration(fail.after, "executable.fail.after")
            if after is not None and after > LONGEST_FAIL_AFTER:
                self.problems.append(
                    _field("executable.fail.after", "an injected failure comes within a day")
                )
            elif after is not None:
                fail_after[fail.phase] = after
        if isinstance(executable, DockerContainer):
            digest = executable.image.digest
            if digest and digest.startswith("sha256:") and not _SHA256.match(digest):
                self.problems.append(
                    _field(
                        "executable.image.digest",
                        "a sha256 digest is 'sha256:' and 64 lowercase hex digits",
                    )
                )
        self._costs(executable.costs, "executable.costs")
        return fail_after

    def _data(self, data: list[AnyData]) -> None:
        for index, item in enumerate(data):
            if isinstance(item, SimpleDataResource):
                url = urllib.parse.urlsplit(item.location)
                if not url.scheme or not (url.netloc or url.path):
                    self.problems.append(
                        _field(f"data[{index}].location", "not an absolute URL with a scheme")
                    )

    def _costs(self, costs: Costs | None, path: str) -> float | None:
        ceiling = None
        for index, cost in enumerate(costs or []):
            if cost.min is not None and cost.max is not None and cost.min > cost.max:
                self.problems.append(
                    msg.make(msg.BAD_RANGE, path=f"{path}[{index}]", min=cost.min, max=cost.max)
                )
            if cost.max is not None:
                ceiling = cost.max if ceiling is None else min(ceiling, cost.max)
        return ceiling

    # -- references ----------------------------------------------------------

    def _lookup(
        self,
        reference: str,
        path: str,
        candidates: list[tuple[str, int, Metadata | None]],
        target: str,
    ) -> Target | None:
        """Resolve ``reference`` by name or uuid among ``candidates``."""
        matches = [
            Target(family, index)
            for family, index, meta in candidates
            if meta is not None and reference in (meta.name, meta.uuid)
        ]
        if not matches:
            self.problems.append(
                msg.make(msg.DANGLING_REFERENCE, path=path, reference=reference, target=target)
            )
            return None
        if len(matches) > 1:
            self.problems.append(
                msg.make(msg.AMBIGUOUS_REFERENCE, path=path, reference=reference, target=target)
            )
            return None
        return matches[0]

    def _storage_links(
        self, storage: list[SimpleStorageResource], data: list[AnyData]
    ) -> tuple[list[SimpleStorageResource], list[int]]:
        """Which storage holds each data item; implicit storage for data without one."""
        storage_refs = [("storage", i, s.meta) for i, s in enumerate(storage)]
        data_refs = [("data", i, d.meta) for i, d in enumerate(data)]
        holder: dict[int, int] = {}
        for s_index, item in enumerate(storage):
            for r_index, reference in enumerate(item.data or []):
                path = f"storage[{s_index}].data[{r_index}]"
                found = self._lookup(reference, path, data_refs, "data resource")
                if found is None:
                    continue
                if holder.get(found.index, s_index) != s_index:
                    self.problems.append(_field(path, "this data is already in another storage"))
                holder[found.index] = s_index
        for d_index, datum in enumerate(data):
            if datum.storage is None:
                continue
            path = f"data[{d_index}].storage"
            found = self._lookup(datum.storage, path, storage_refs, "storage resource")
            if found is None:
                continue
            if holder.get(d_index, found.index) != found.index:
                self.problems.append(
                    _field(path, "the storage named here does not list this data item")
                )
            holder[d_index] = found.index
        storage = list(storage)
        for d_index, datum in enumerate(data):
            if d_index not in holder:
                name = datum.meta.name if datum.meta and datum.meta.name else f"data[{d_index}]"
                storage.append(SimpleStorageResource(meta=Metadata(name=f"Storage for [{name}]")))
                holder[d_index] = len(storage) - 1
        return storage, [holder[i] for i in range(len(data))]

    def _volumes(
        self,
        compute: SimpleComputeResource,
        declared: list[SimpleVolumeMount],
        storage: list[SimpleStorageResource],
        data: list[AnyData],
    ) -> tuple[list[SimpleVolumeMount], list[tuple[Target, ...]]]:
        """Every mount inline, with what it mounts resolved."""
        volumes: list[tuple[SimpleVolumeMount, str]] = []
        used: set[int] = set()
        declared_refs = [("volume", i, v.meta) for i, v in enumerate(declared)]
        for index, entry in enumerate(compute.volumes or []):
            path = f"compute.volumes[{index}]"
            if isinstance(entry, str):
                found = self._lookup(entry, path, declared_refs, "volume in volumes")
                if found is not None:
                    used.add(found.index)
                    volumes.append((declared[found.index], f"volumes[{found.index}]"))
            else:
                volumes.append((entry, path))
        volumes += [(v, f"volumes[{i}]") for i, v in enumerate(declared) if i not in used]
        candidates = [("storage", i, s.meta) for i, s in enumerate(storage)] + [
            ("data", i, d.meta) for i, d in enumerate(data)
        ]
        mounts: list[SimpleVolumeMount] = []
        targets: list[tuple[Target, ...]] = []
        paths: dict[str, str] = {}
        for volume, path in volumes:
            if not volume.path.startswith("/"):
                self.problems.append(_field(f"{path}.path", "a mount path must be absolute"))
            elif volume.path.rstrip("/") in paths:
                self.problems.append(
                    _field(f"{path}.path", f"{paths[volume.path.rstrip('/')]} mounts here too")
                )
            paths[volume.path.rstrip("/")] = path
            references = list(volume.resources or [])
            if volume.resource is not None:
                references.append(volume.resource)
            if not references:
                self.problems.append(
                    _field(f"{path}.resources", "a volume must mount at least one resource")
                )
            found_targets = []
            for r_index, reference in enumerate(references):
                where = f"{path}.resources[{r_index}]"
                if volume.resource is not None and r_index == len(references) - 1:
                    where = f"{path}.resource"
                found = self._lookup(reference, where, candidates, "storage or data resource")
                if found is not None:
                    found_targets.append(found)
            # ``resource`` stays as the client wrote it, so answers keep its form.
            mounts.append(msgspec.structs.replace(volume, resources=references))
            targets.append(tuple(found_targets))
        return mounts, targets

    def _checksum_paths(self, executable: Checksum, volumes: list[SimpleVolumeMount]) -> None:
        mounted = [volume.path.rstrip("/") + "/" for volume in volumes]
        for index, path in enumerate(executable.paths):
            target = path.rstrip("/") + "/"
            if not any(target.startswith(mount) for mount in mounted):
                self.problems.append(
                    _field(f"executable.paths[{index}]", f"'{path}' is not under a mounted volume")
                )


def _update_fields(kind: object, reason: str) -> str:
    """``reason`` followed by the fields update ``kind`` takes, when it is one we know."""
    for update in get_args(AnyUpdate):
        if update.__struct_config__.tag == kind:
            fields = ", ".join(field.encode_name for field in msgspec.structs.fields(update))
            return f"{reason}; {kind} takes kind, {fields}"
    return reason


def parse_update(doc: object, *, lax: bool = False) -> AnyUpdate:
    """Validate a decoded update body (bare or wrapped, any dialect)."""
    if not isinstance(doc, dict):
        raise RequestInvalid([_field("$", "the update must be an object")])
    _refuse_control_characters(doc)
    canonical = canonical_update(doc)
    try:
        update: AnyUpdate = msgspec.convert(canonical, AnyUpdate, strict=not lax)
        return update
    except msgspec.ValidationError as error:
        path, reason = _where(error, "")
        if reason == "unknown field":
            reason = _update_fields(canonical.get("kind"), reason)
        if ("Invalid value" in reason and path.endswith("kind")) or path == "":
            reason = (
                f"{reason}; the update kinds are uri:enum-value-update, uri:string-value-update, "
                "uri:integer-value-update, uri:integer-delta-update"
            )
        raise RequestInvalid([_field(path.lstrip(".") or "$", reason)]) from error
