"""The three wire dialects: translate them to the canonical form and back.

Input is liberal (docs/ARCHITECTURE.md §3): ``type`` or ``kind`` as the discriminator,
identity at the top (``name``, ``uuid``, ``href``) or in ``meta``, ``computer``
for ``compute``, updates bare or wrapped. The translation works on plain data
(what the codec decoded) before msgspec types it, so one set of structs serves
every dialect. Output uses exactly the dialect the request used.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Final

from talicada.schema import messages as msg
from talicada.schema.kinds import (
    Dialect,
    Family,
    UnknownKind,
    dialect_of,
    known_uris,
    resolve,
    uri_for,
)
from talicada.schema.messages import MessageItem, RequestInvalid

# Identity fields the seed dialect writes at the top of a component, and where
# they live in ``meta``.
_SEED_IDENTITY: Final = {
    "name": "name",
    "uuid": "uuid",
    "href": "url",
    "created": "created",
    "modified": "modified",
    "description": "description",
    "messages": "messages",
}
# Families with a single kind: a missing discriminator means that kind.
DEFAULT_KIND: Final = {
    Family.COMPUTE: "simple-compute-resource",
    Family.STORAGE: "simple-storage-resource",
    Family.VOLUME: "simple-volume-mount",
}

Visitor = Callable[[dict[str, Any], Family, str], None]


def _walk(doc: dict[str, Any], visit: Visitor, path: str = "") -> None:
    """Call ``visit(component, family, path)`` on every component inside ``doc``."""

    def each(key: str, family: Family) -> Iterator[tuple[dict[str, Any], str]]:
        value = doc.get(key)
        if isinstance(value, dict):
            yield value, f"{path}{key}"
        elif isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, dict):
                    yield item, f"{path}{key}[{index}]"

    for key, family in (
        ("executable", Family.EXECUTABLE),
        ("compute", Family.COMPUTE),
        ("storage", Family.STORAGE),
        ("data", Family.DATA),
        ("volumes", Family.VOLUME),
        ("costs", Family.COSTS),
        ("metrics", Family.METRICS),
    ):
        for component, where in each(key, family):
            visit(component, family, where)
            # Components nest: compute holds volumes, every component has costs.
            if family is not Family.COSTS and family is not Family.METRICS:
                _walk_nested(component, visit, where + ".")
    for offer, where in each("offers", Family.SESSION):
        visit(offer, Family.SESSION, where)
        _walk(offer, visit, where + ".")


def _walk_nested(component: dict[str, Any], visit: Visitor, path: str) -> None:
    for key, family in (
        ("volumes", Family.VOLUME),
        ("costs", Family.COSTS),
        ("metrics", Family.METRICS),
    ):
        value = component.get(key)
        if isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, dict):
                    visit(item, family, f"{path}{key}[{index}]")


def detect(doc: dict[str, Any]) -> Dialect:
    """The dialect a request is written in.

    The first kind URI that belongs to one dialect decides; test-task URNs are
    shared by all. Without one, a ``type`` discriminator or top-level identity
    means the seed dialect, anything else v1.0.
    """
    found: list[Dialect] = []
    seed_shape = [any(key in doc for key in ("name", "uuid", "href"))]

    def look(component: dict[str, Any], family: Family, path: str) -> None:
        for key in ("kind", "type"):
            value = component.get(key)
            if isinstance(value, str):
                dialect = dialect_of(value)
                if dialect is not None:
                    found.append(dialect)
                elif key == "type" and family not in (Family.COSTS, Family.METRICS):
                    seed_shape.append(True)

    _walk(_with_compute(doc), look)
    if found:
        return found[0]
    return Dialect.SEED_2025 if any(seed_shape) else Dialect.V1_0


def _with_compute(doc: dict[str, Any]) -> dict[str, Any]:
    if "computer" in doc and "compute" not in doc:
        return {**doc, "compute": doc["computer"]}
    return doc


def to_canonical(doc: dict[str, Any], dialect: Dialect = Dialect.V1_0) -> dict[str, Any]:
    """A copy of request ``doc`` in the canonical form, or RequestInvalid.

    Every unknown kind is reported at once, each naming its path and the kinds
    this broker knows.
    """
    if "computer" in doc:
        if "compute" in doc:
            raise RequestInvalid(
                [msg.make(msg.INVALID_FIELD, path="computer", reason="give compute or computer")]
            )
        doc = {("compute" if key == "computer" else key): value for key, value in doc.items()}
    doc = _deep_copy(doc)
    problems: list[MessageItem] = []
    _move_identity(doc, problems, "")
    _walk(
        doc,
        lambda component, family, path: _canonical_component(
            component, family, path, problems, dialect
        ),
    )
    if problems:
        raise RequestInvalid(problems)
    return doc


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _deep_copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_deep_copy(item) for item in value]
    return value


def _move_identity(component: dict[str, Any], problems: list[MessageItem], path: str) -> None:
    """Move seed-style top-level identity fields into ``meta``."""
    present = [key for key in _SEED_IDENTITY if key in component]
    if not present:
        return
    meta = component.get("meta")
    if meta is None:
        meta = component["meta"] = {}
    if not isinstance(meta, dict):
        return  # msgspec reports the wrong type of ``meta`` with its path
    for key in present:
        target = _SEED_IDENTITY[key]
        if target in meta:
            problems.append(
                msg.make(
                    msg.INVALID_FIELD,
                    path=f"{path}{key}",
                    reason=f"given both as {key} and as meta.{target}",
                )
            )
        meta[target] = component.pop(key)


def _canonical_component(
    component: dict[str, Any],
    family: Family,
    path: str,
    problems: list[MessageItem],
    dialect: Dialect,
) -> None:
    if family not in (Family.COSTS, Family.METRICS):
        _move_identity(component, problems, path + ".")
    key = "kind"
    uri = component.get("kind")
    if uri is None and "type" in component:
        candidate = component["type"]
        is_kind = isinstance(candidate, str) and dialect_of(candidate) is not None
        if family not in (Family.COSTS, Family.METRICS) or is_kind:
            key, uri = "type", component.pop("type")
    if uri is None:
        if family in DEFAULT_KIND:
            component["kind"] = DEFAULT_KIND[family]
        elif family is Family.SESSION:
            pass  # sessions echoed back by clients carry their kind only for show
        else:
            problems.append(msg.make(msg.MISSING_FIELD, path=f"{path}.kind"))
        return
    if not isinstance(uri, str):
        problems.append(msg.make(msg.INVALID_FIELD, path=f"{path}.{key}", reason="not a string"))
        return
    try:
        name, _ = resolve(uri, family)
    except UnknownKind:
        problems.append(
            msg.make(
                msg.UNKNOWN_KIND,
                path=f"{path}.{key}",
                kind=uri,
                known=", ".join(known_uris(family, dialect)),
            )
        )
        return
    if family is Family.SESSION:
        component.pop("kind", None)
    else:
        component["kind"] = name


def canonical_update(doc: dict[str, Any]) -> dict[str, Any]:
    """An update in canonical form: unwrapped, ``kind`` discriminator, dotted path."""
    if set(doc) == {"update"} and isinstance(doc["update"], dict):
        doc = doc["update"]
    doc = dict(doc)
    if "kind" not in doc and "type" in doc:
        doc["kind"] = doc.pop("type")
    path = doc.get("path")
    if isinstance(path, str):
        doc["path"] = path.strip("/").replace("/", ".")
    return doc


# -- output -----------------------------------------------------------------------


def render_session(session: dict[str, Any], dialect: Dialect) -> dict[str, Any]:
    """A canonical session (``msgspec.to_builtins``) spelled in ``dialect``."""
    out = _render_component(session, Family.SESSION, dialect)
    for key, family in (
        ("executable", Family.EXECUTABLE),
        ("compute", Family.COMPUTE),
    ):
        if key in out:
            out[key] = _render_tree(out[key], family, dialect)
    for key, family in (("storage", Family.STORAGE), ("data", Family.DATA)):
        if key in out:
            out[key] = [_render_tree(item, family, dialect) for item in out[key]]
    _render_costs(out, dialect)
    return out


def render_offerset(offerset: dict[str, Any], dialect: Dialect) -> dict[str, Any]:
    """A canonical offer set spelled in ``dialect``."""
    out = _identity_out(offerset, dialect)
    out["offers"] = [render_session(offer, dialect) for offer in offerset.get("offers", [])]
    return out


def _render_tree(component: dict[str, Any], family: Family, dialect: Dialect) -> dict[str, Any]:
    out = _render_component(component, family, dialect)
    volumes = out.get("volumes")
    if isinstance(volumes, list):
        out["volumes"] = [
            _render_component(_volume_form(volume), Family.VOLUME, dialect)
            if isinstance(volume, dict)
            else volume
            for volume in volumes
        ]
    _render_costs(out, dialect)
    return out


def _volume_form(volume: dict[str, Any]) -> dict[str, Any]:
    """A mount in the form its request used: ``resource: <name>`` when it was one name.

    Internally a mount always lists the uuids it mounts (``resources``); a client
    that named one resource reads back the name it sent.
    """
    if "resource" not in volume:
        return volume
    return {key: value for key, value in volume.items() if key != "resources"}


def _render_costs(component: dict[str, Any], dialect: Dialect) -> None:
    for key, family in (("costs", Family.COSTS), ("metrics", Family.METRICS)):
        items = component.get(key)
        if isinstance(items, list):
            component[key] = [_render_kind(item, family, dialect, "kind") for item in items]


def _render_component(
    component: dict[str, Any], family: Family, dialect: Dialect
) -> dict[str, Any]:
    key = "type" if dialect is Dialect.SEED_2025 else "kind"
    return _identity_out(_render_kind(component, family, dialect, key), dialect)


def _render_kind(
    component: dict[str, Any], family: Family, dialect: Dialect, key: str
) -> dict[str, Any]:
    name = component.get("kind", family.value if family is Family.SESSION else None)
    rest = {k: v for k, v in component.items() if k != "kind"}
    if name is None:
        return rest
    return {key: uri_for(family, str(name), dialect), **rest}


def _identity_out(component: dict[str, Any], dialect: Dialect) -> dict[str, Any]:
    if dialect is not Dialect.SEED_2025 or "meta" not in component:
        return dict(component)
    out: dict[str, Any] = {}
    meta = component["meta"]
    reverse = {target: key for key, target in _SEED_IDENTITY.items()}
    for key, value in component.items():
        if key == "meta":
            for field, item in meta.items():
                out[reverse.get(field, field)] = _seed_options(item) if field == "options" else item
        else:
            out[key] = value
    # Discriminator first, then identity, as seed clients print them.
    return dict(sorted(out.items(), key=lambda kv: _SEED_ORDER.get(kv[0], len(_SEED_ORDER))))


def _seed_options(options: Any) -> Any:
    """Options as the seed dialect spells discriminators: ``type``, not ``kind``."""
    if not isinstance(options, list):
        return options
    return [
        {("type" if key == "kind" else key): value for key, value in option.items()}
        if isinstance(option, dict)
        else option
        for option in options
    ]


_SEED_ORDER: Final = {"type": 0, "uuid": 1, "name": 2, "href": 3}
