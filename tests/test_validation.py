"""Unit tests of request validation and the dialect layer, without HTTP.

``talicada.schema.validation.parse_request`` / ``parse_update`` and
``talicada.schema.dialects`` (detect, to_canonical, render_session/offerset).
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml

from talicada.schema import dialects
from talicada.schema.dialects import canonical_update, detect, render_offerset, render_session
from talicada.schema.kinds import (
    KINDS,
    TEST_TASKS,
    Dialect,
    Family,
    UnknownKind,
    dialect_of,
    known_uris,
    resolve,
    uri_for,
)
from talicada.schema.messages import MessageItem, RequestInvalid
from talicada.schema.model import (
    EnumValueUpdate,
    IntegerDeltaUpdate,
    IntegerValueUpdate,
    SimpleVolumeMount,
    StringValueUpdate,
)
from talicada.schema.validation import Target, ValidRequest, parse_request, parse_update
from tests.conftest import EXAMPLES

NOW = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
SEED_REQUEST = EXAMPLES / "seed-notebook-request.yaml"

PING = "urn:talicada:kinds:executable:ping-1.0"
CHECKSUM = "urn:talicada:kinds:executable:checksum-1.0"


def v1(family: Family, name: str) -> str:
    """A kind URI in the v1.0 dialect."""
    return uri_for(family, name, Dialect.V1_0)


DATA = v1(Family.DATA, "simple-data-resource")


def ping(**extra: Any) -> dict[str, Any]:
    """A v1.0 ping request with ``extra`` top-level fields."""
    return {"executable": {"kind": PING}, **extra}


def datum(name: str | None, **extra: Any) -> dict[str, Any]:
    """A simple data resource, named when ``name`` is given."""
    item: dict[str, Any] = {"kind": DATA, "location": f"http://x.test/{name or 'anon'}", **extra}
    if name is not None:
        item["meta"] = {"name": name}
    return item


def parse(doc: object, *, lax: bool = False) -> ValidRequest:
    """parse_request at a fixed time."""
    return parse_request(doc, now=NOW, lax=lax)


def problems(doc: object, *, lax: bool = False) -> list[MessageItem]:
    """The messages parse_request refuses ``doc`` with (fails if it accepts it)."""
    with pytest.raises(RequestInvalid) as caught:
        parse(doc, lax=lax)
    assert caught.value.messages
    return caught.value.messages


def paths(messages: list[MessageItem]) -> list[str]:
    """The field path each message names."""
    return [item.values.get("path", "") for item in messages]


def seed_doc() -> dict[str, Any]:
    """The seed request, as plain data."""
    if not SEED_REQUEST.is_file():
        pytest.fail(f"the seed request {SEED_REQUEST} is missing", pytrace=False)
    doc = yaml.safe_load(SEED_REQUEST.read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    return doc


# --------------------------------------------------------------------------- defaults


def test_a_request_without_compute_gets_one_core_and_one_gib() -> None:
    """Nothing asked for: 1–1 cores, 1–1 GiB, no duration or start, the v1.0 dialect."""
    valid = parse(ping())
    assert valid.cores == (1, 1)
    assert valid.memory == (1, 1)
    assert valid.duration is None
    assert valid.start is None
    assert valid.dialect is Dialect.V1_0
    assert valid.executable_kind == "ping"
    assert valid.request.storage == []
    assert valid.data_storage == ()


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({}, (1, 1)),
        ({"min": 3}, (3, 3)),
        ({"max": 4}, (1, 4)),
        ({"min": 2, "max": 6}, (2, 6)),
        ({"min": 5, "max": 5}, (5, 5)),
    ],
    ids=["empty", "only-min", "only-max", "both", "equal"],
)
def test_cores_and_memory_ranges_default_sensibly(
    given: dict[str, int], expected: tuple[int, int]
) -> None:
    """Only a min means max = min; only a max means min = 1; nothing means 1–1."""
    valid = parse(ping(compute={"cores": given, "memory": given}))
    assert valid.cores == expected
    assert valid.memory == expected


def test_a_requested_schedule_is_parsed() -> None:
    """``schedule.requested`` duration and start interval are parsed into UTC values."""
    valid = parse(
        ping(schedule={"requested": {"duration": "PT10M", "start": "2030-06-02T00:00Z/PT2H"}})
    )
    assert valid.duration == timedelta(minutes=10)
    assert valid.start is not None
    assert valid.start.start == datetime(2030, 6, 2, tzinfo=UTC)
    assert valid.start.end == datetime(2030, 6, 2, 2, tzinfo=UTC)


def test_xml_strings_stand_for_numbers_only_when_lax() -> None:
    """XML carries every scalar as text: lax typing converts, strict typing refuses."""
    doc = ping(compute={"cores": {"min": "2", "max": "3"}})
    assert parse(doc, lax=True).cores == (2, 3)
    assert paths(problems(doc)) == ["compute.cores.min"]


@pytest.mark.parametrize("digest", [None, "0000", "sha256:" + "ab" * 32])
def test_an_image_digest_may_be_absent_a_placeholder_or_sha256(digest: str | None) -> None:
    """A digest may be missing, a placeholder such as the seed's ``0000``, or sha256."""
    image: dict[str, Any] = {"locations": ["images.example/x:latest"]}
    if digest is not None:
        image["digest"] = digest
    doc = {"executable": {"kind": v1(Family.EXECUTABLE, "docker-container"), "image": image}}
    assert parse(doc).executable_kind == "docker-container"


def test_a_malformed_sha256_digest_is_refused() -> None:
    """A digest that claims sha256 must be 64 lowercase hex digits."""
    doc = {
        "executable": {
            "kind": v1(Family.EXECUTABLE, "docker-container"),
            "image": {"locations": ["x"], "digest": "sha256:ABC"},
        }
    }
    assert paths(problems(doc)) == ["executable.image.digest"]


# --------------------------------------------------------------------------- storage and links


def test_data_without_storage_gets_an_implicit_storage_named_after_it() -> None:
    """Each data item without storage gets ``Storage for [<name>]`` (or its index)."""
    valid = parse(ping(data=[datum("a"), datum("b"), datum(None)]))
    names = [item.meta.name if item.meta else None for item in valid.request.storage]
    assert names == ["Storage for [a]", "Storage for [b]", "Storage for [data[2]]"]
    assert valid.data_storage == (0, 1, 2)


def test_explicit_storage_links_data_by_name_or_uuid_from_either_side() -> None:
    """A storage may list its data, or a data item may name its storage (name or uuid)."""
    valid = parse(
        ping(
            storage=[
                {"meta": {"name": "s1"}, "data": ["a"]},
                {"meta": {"name": "s2", "uuid": "9d0cf6a5-6c3b-4c8e-8d7e-0a4f3e2b1c00"}},
            ],
            data=[
                datum("a"),
                datum("b", storage="9d0cf6a5-6c3b-4c8e-8d7e-0a4f3e2b1c00"),
                datum("c", storage="s1"),
                datum("d"),
            ],
        )
    )
    assert valid.data_storage == (0, 1, 0, 2)
    names = [item.meta.name if item.meta else None for item in valid.request.storage]
    assert names == ["s1", "s2", "Storage for [d]"]


def test_a_data_item_in_two_storages_is_refused() -> None:
    """A storage listing a data item that names another storage is a 400 on the item."""
    doc = ping(
        storage=[{"meta": {"name": "s1"}, "data": ["a"]}, {"meta": {"name": "s2"}}],
        data=[datum("a", storage="s2")],
    )
    assert paths(problems(doc)) == ["data[0].storage"]


def test_volumes_resolve_their_resources_to_storage_and_data() -> None:
    """``resources`` and ``resource`` resolve to storage or data; ``resource`` is folded in."""
    valid = parse(
        ping(
            storage=[{"meta": {"name": "scratch"}}],
            data=[datum("a"), datum("b")],
            compute={
                "volumes": [
                    {"path": "/work", "mode": "READWRITE", "resources": ["scratch", "b"]},
                    {"path": "/in", "resource": "a"},
                ]
            },
        )
    )
    assert valid.volume_targets == (
        (Target("storage", 0), Target("data", 1)),
        (Target("data", 0),),
    )
    assert valid.request.compute is not None
    volumes = valid.request.compute.volumes or []
    assert all(isinstance(volume, SimpleVolumeMount) for volume in volumes)
    single = volumes[1]
    assert isinstance(single, SimpleVolumeMount)
    assert single.resources == ["a"]
    # Kept, so the answer names the resource as the client did.
    assert single.resource == "a"


def test_top_level_volumes_are_inlined_into_compute() -> None:
    """``compute.volumes`` naming top-level ``volumes``; unnamed ones are mounted too."""
    valid = parse(
        ping(
            data=[datum("a"), datum("b")],
            volumes=[
                {"meta": {"name": "first"}, "path": "/a", "resources": ["a"]},
                {"meta": {"name": "second"}, "path": "/b", "resources": ["b"]},
            ],
            compute={"volumes": ["second"]},
        )
    )
    assert valid.request.volumes == []
    assert valid.request.compute is not None
    mounted = [
        volume.path
        for volume in valid.request.compute.volumes or []
        if isinstance(volume, SimpleVolumeMount)
    ]
    assert mounted == ["/b", "/a"]
    assert valid.volume_targets == ((Target("data", 1),), (Target("data", 0),))


@pytest.mark.parametrize(
    ("doc", "path", "kind"),
    [
        (
            ping(compute={"volumes": [{"path": "/in", "resources": ["ghost"]}]}),
            "compute.volumes[0].resources[0]",
            "urn:talicada:error:dangling-reference",
        ),
        (
            ping(
                data=[datum("x")],
                storage=[{"meta": {"name": "x"}}],
                compute={"volumes": [{"path": "/in", "resource": "x"}]},
            ),
            "compute.volumes[0].resource",
            "urn:talicada:error:ambiguous-reference",
        ),
        (
            ping(data=[datum("a", storage="ghost")]),
            "data[0].storage",
            "urn:talicada:error:dangling-reference",
        ),
        (
            ping(compute={"volumes": ["ghost"]}),
            "compute.volumes[0]",
            "urn:talicada:error:dangling-reference",
        ),
    ],
    ids=["volume-dangling", "volume-ambiguous", "data-storage-dangling", "named-volume"],
)
def test_dangling_and_ambiguous_references_name_their_path(
    doc: dict[str, Any], path: str, kind: str
) -> None:
    """A reference to nothing, or to more than one thing, names its path and kind."""
    (item,) = problems(doc)
    assert item.kind == kind
    assert item.values["path"] == path


def test_checksum_paths_must_be_under_a_mount() -> None:
    """The checksum task's paths must lie under a mounted volume."""
    base = {
        "data": [datum("a")],
        "compute": {"volumes": [{"path": "/inputs/", "resources": ["a"]}]},
    }
    ok = parse({"executable": {"kind": CHECKSUM, "paths": ["/inputs", "/inputs/sub/"]}, **base})
    assert ok.executable_kind == "checksum"
    bad = {"executable": {"kind": CHECKSUM, "paths": ["/inputs/", "/input"]}, **base}
    assert paths(problems(bad)) == ["executable.paths[1]"]


# --------------------------------------------------------------------------- dialects

_SLOTS: dict[Family, str] = {
    Family.EXECUTABLE: "executable",
    Family.COMPUTE: "compute",
    Family.STORAGE: "storage",
    Family.DATA: "data",
    Family.COSTS: "costs",
    Family.METRICS: "metrics",
    Family.SESSION: "offers",
}
_DIALECT_KINDS = [
    pytest.param(family, name, dialect, id=f"{dialect.value}-{family.value}-{name}")
    for family, names in KINDS.items()
    for name in names
    if name not in TEST_TASKS
    for dialect in Dialect
]


@pytest.mark.parametrize(("family", "name", "dialect"), _DIALECT_KINDS)
def test_every_kind_uri_names_its_dialect(family: Family, name: str, dialect: Dialect) -> None:
    """Each non-test kind URI resolves to its name and dialect, and detect() finds it."""
    uri = uri_for(family, name, dialect)
    assert resolve(uri, family) == (name, dialect)
    assert dialect_of(uri) is dialect
    if family is Family.VOLUME:
        doc: dict[str, Any] = {"compute": {"volumes": [{"kind": uri}]}}
    else:
        slot = _SLOTS[family]
        component = {"kind": uri}
        doc = {slot: component if family in (Family.EXECUTABLE, Family.COMPUTE) else [component]}
    doc.setdefault("executable", {"kind": PING})
    assert detect(doc) is dialect


@pytest.mark.parametrize("dialect", [Dialect.SEED_2025, Dialect.V1_0])
def test_the_computer_family_is_understood(dialect: Dialect) -> None:
    """``computer:`` with ``…/types/computer/…`` URIs means compute, in both dialects."""
    template = {
        Dialect.SEED_2025: "https://www.purl.org/ivoa.net/EB/schema/types/{}",
        Dialect.V1_0: "https://www.purl.org/ivoa.net/EB/schema/v1.0/types/{}",
    }[dialect]
    uri = template.format("computer/simple-compute-resource-1.0")
    assert resolve(uri, Family.COMPUTE) == ("simple-compute-resource", dialect)
    key = "type" if dialect is Dialect.SEED_2025 else "kind"
    doc = {"executable": {key: PING}, "computer": {key: uri, "cores": {"min": 2}}}
    assert detect(doc) is dialect
    valid = parse(doc)
    assert valid.dialect is dialect
    assert valid.cores == (2, 2)


def test_computer_and_compute_together_are_refused() -> None:
    """Giving both spellings is ambiguous and refused on ``computer``."""
    assert paths(problems(ping(compute={}, computer={}))) == ["computer"]


def test_test_task_urns_are_neutral() -> None:
    """Test-task URNs belong to no dialect; the shape or another kind decides."""
    for name in sorted(TEST_TASKS):
        uri = uri_for(Family.EXECUTABLE, name, Dialect.SEED_2025)
        assert uri == f"urn:talicada:kinds:executable:{name}-1.0"
        assert all(uri_for(Family.EXECUTABLE, name, d) == uri for d in Dialect)
        assert dialect_of(uri) is None
        assert resolve(uri, Family.EXECUTABLE) == (name, None)
    assert detect({"executable": {"kind": PING}}) is Dialect.V1_0
    assert detect({"executable": {"type": PING}}) is Dialect.SEED_2025
    assert detect({"name": "x", "executable": {"kind": PING}}) is Dialect.SEED_2025
    v106 = uri_for(Family.COMPUTE, "simple-compute-resource", Dialect.V1_0_6)
    assert detect({"executable": {"kind": PING}, "compute": {"kind": v106}}) is Dialect.V1_0_6


def test_a_kind_of_the_wrong_family_is_unknown() -> None:
    """A data kind where an executable kind belongs is unknown, with the executable kinds."""
    with pytest.raises(UnknownKind) as caught:
        resolve(v1(Family.DATA, "simple-data-resource"), Family.EXECUTABLE)
    assert caught.value.known == known_uris(Family.EXECUTABLE)


def test_seed_identity_moves_into_meta() -> None:
    """Seed ``name``/``uuid``/``href`` at the top of a component become ``meta`` fields."""
    canonical = dialects.to_canonical(seed_doc(), Dialect.SEED_2025)
    assert canonical["meta"] == {"name": "notebook-test"}
    assert "name" not in canonical
    assert canonical["executable"]["kind"] == "docker-container"
    assert "type" not in canonical["executable"]
    (volume,) = canonical["compute"]["volumes"]
    assert volume["meta"] == {"name": "Input data"}
    assert volume["kind"] == "simple-volume-mount"
    assert [item["meta"]["name"] for item in canonical["data"]] == [
        "example-data-01",
        "example-data-02",
    ]
    assert {item["kind"] for item in canonical["data"]} == {"skao-data-resource"}

    with_uuid = dialects.to_canonical(
        {"executable": {"type": PING, "uuid": "u-1", "href": "http://h/x"}}, Dialect.SEED_2025
    )
    assert with_uuid["executable"] == {"kind": "ping", "meta": {"uuid": "u-1", "url": "http://h/x"}}


def test_the_seed_request_is_valid_and_keeps_its_dialect() -> None:
    """The seed's own request validates in the seed dialect with implicit storage."""
    valid = parse(seed_doc())
    assert valid.dialect is Dialect.SEED_2025
    assert valid.executable_kind == "docker-container"
    assert valid.duration == timedelta(minutes=10)
    assert valid.request.meta is not None
    assert valid.request.meta.name == "notebook-test"
    names = [item.meta.name if item.meta else None for item in valid.request.storage]
    assert names == ["Storage for [example-data-01]", "Storage for [example-data-02]"]
    assert valid.volume_targets == ((Target("data", 0), Target("data", 1)),)


def _canonical_offerset() -> dict[str, Any]:
    session = {
        "meta": {"uuid": "s-1", "name": "offer-0", "url": "http://h/sessions/s-1"},
        "phase": "OFFERED",
        "executable": {
            "kind": "docker-container",
            "meta": {"uuid": "e-1"},
            "image": {"locations": ["img"]},
        },
        "compute": {
            "kind": "simple-compute-resource",
            "meta": {"uuid": "c-1", "name": "compute"},
            "cores": {"min": 2, "max": 2},
            "volumes": [
                {
                    "kind": "simple-volume-mount",
                    "meta": {"uuid": "v-1", "name": "in"},
                    "path": "/in",
                    "resources": ["d-1"],
                }
            ],
        },
        "storage": [{"kind": "simple-storage-resource", "meta": {"uuid": "st-1"}, "data": ["d-1"]}],
        "data": [
            {
                "kind": "skao-data-resource",
                "meta": {"uuid": "d-1", "name": "d"},
                "storage": "st-1",
                "skao": {"namespace": "n", "objectname": "o"},
            }
        ],
        "costs": [{"kind": "simple-minmax-float-cost", "min": 1.0, "max": 1.0}],
    }
    return {
        "meta": {"uuid": "o-1", "name": "set", "url": "http://h/offersets/o-1"},
        "result": "YES",
        "offers": [session],
    }


def test_render_session_speaks_the_seed_dialect() -> None:
    """A canonical session rendered for seed clients: ``type`` and identity at the top."""
    offerset = _canonical_offerset()
    out = render_session(copy.deepcopy(offerset["offers"][0]), Dialect.SEED_2025)
    assert out["type"] == uri_for(Family.SESSION, "execution-session", Dialect.SEED_2025)
    assert (out["uuid"], out["name"], out["href"]) == ("s-1", "offer-0", "http://h/sessions/s-1")
    assert list(out)[:4] == ["type", "uuid", "name", "href"]
    assert "meta" not in out
    assert "kind" not in out
    assert out["executable"]["type"] == uri_for(
        Family.EXECUTABLE, "docker-container", Dialect.SEED_2025
    )
    assert out["compute"]["volumes"][0]["uuid"] == "v-1"
    assert out["data"][0]["uuid"] == "d-1"
    # Cost items keep ``kind`` (the schema has no ``type`` spelling for them).
    assert out["costs"][0]["kind"] == uri_for(
        Family.COSTS, "simple-minmax-float-cost", Dialect.SEED_2025
    )


@pytest.mark.parametrize("dialect", list(Dialect), ids=lambda d: d.value)
def test_rendering_an_offerset_and_reading_it_back_is_lossless(dialect: Dialect) -> None:
    """render_offerset then to_canonical gives back the canonical offer set."""
    canonical = _canonical_offerset()
    rendered = render_offerset(copy.deepcopy(canonical), dialect)
    if dialect is Dialect.SEED_2025:
        assert rendered["uuid"] == "o-1"
        assert rendered["offers"][0]["uuid"] == "s-1"
    else:
        assert rendered["meta"]["uuid"] == "o-1"
        assert rendered["offers"][0]["kind"] == uri_for(
            Family.SESSION, "execution-session", dialect
        )
        assert "uuid" not in rendered["offers"][0]
    assert detect(rendered) is dialect
    assert dialects.to_canonical(rendered, dialect) == canonical


@pytest.mark.parametrize("dialect", list(Dialect), ids=lambda d: d.value)
def test_an_unknown_kind_lists_the_known_kinds_in_the_request_dialect(dialect: Dialect) -> None:
    """The unknown-kind message lists the family's kinds as the request's dialect spells them."""
    key = "type" if dialect is Dialect.SEED_2025 else "kind"
    compute = uri_for(Family.COMPUTE, "simple-compute-resource", dialect)
    doc = {
        "executable": {key: PING},
        "compute": {key: compute},
        "data": [{key: "https://example.org/kinds/ftp-data-resource"}],
    }
    (item,) = problems(doc)
    assert item.kind == "urn:talicada:error:unknown-kind"
    assert item.values["path"] == f"data[0].{key}"
    assert item.values["known"] == ", ".join(known_uris(Family.DATA, dialect))
    assert known_uris(Family.DATA, dialect)[0] in item.message


def test_a_missing_executable_is_reported() -> None:
    """No executable, or one without a kind, is reported on its path."""
    assert paths(problems({"compute": {}})) == ["executable"]
    assert paths(problems({"executable": {}})) == ["executable.kind"]


def test_a_request_that_is_not_an_object_is_refused() -> None:
    """A list where the request object belongs is refused at ``$``."""
    assert paths(problems([ping()])) == ["$"]


def test_identity_given_twice_is_refused() -> None:
    """``name`` at the top and ``meta.name`` together are refused."""
    (item,) = problems({"name": "a", "meta": {"name": "b"}, "executable": {"kind": PING}})
    assert item.values["path"] == "name"


# --------------------------------------------------------------------------- several errors at once


def test_unknown_kinds_in_independent_components_are_reported_together() -> None:
    """Every unknown kind is reported in one answer, in document order."""
    doc = {
        "executable": {"kind": "urn:example:nope"},
        "data": [{"kind": "urn:example:nope"}, datum("fine"), {"kind": "urn:example:nope2"}],
    }
    assert paths(problems(doc)) == ["executable.kind", "data[0].kind", "data[2].kind"]


def test_type_errors_in_independent_components_are_reported_together() -> None:
    """Wrong types in separate parts of the request are all reported at once."""
    doc = ping(
        compute={"cores": {"min": "two"}},
        data=[datum("a", colour="red")],
        schedule={"requested": {"duration": 10}},
        colour="blue",
    )
    assert sorted(paths(problems(doc))) == sorted(
        ["compute.cores.min", "data[0].colour", "schedule.requested.duration", "colour"]
    )


def test_rule_errors_in_independent_components_are_reported_together() -> None:
    """Ranges, durations, intervals, paths and references are checked independently."""
    doc = ping(
        compute={
            "cores": {"min": 4, "max": 2},
            "memory": {"min": 9, "max": 3},
            "volumes": [{"path": "relative", "resources": ["a"]}],
        },
        data=[datum("a", storage="ghost")],
        schedule={"requested": {"duration": "P1Y", "start": "2029-01-01T00:00Z/PT1H"}},
    )
    assert sorted(paths(problems(doc))) == sorted(
        [
            "compute.cores",
            "compute.memory",
            "compute.volumes[0].path",
            "data[0].storage",
            "schedule.requested.duration",
            "schedule.requested.start",
        ]
    )


# --------------------------------------------------------------------------- updates


@pytest.mark.parametrize(
    "doc",
    [
        {"kind": "uri:enum-value-update", "path": "phase", "value": "ACCEPTED"},
        {"type": "uri:enum-value-update", "path": "phase", "value": "ACCEPTED"},
        {"update": {"type": "uri:enum-value-update", "path": "/phase", "value": "ACCEPTED"}},
        {"update": {"kind": "uri:enum-value-update", "path": "phase/", "value": "ACCEPTED"}},
    ],
    ids=["bare-kind", "bare-type", "wrapped-slash", "wrapped-trailing-slash"],
)
def test_updates_are_read_bare_or_wrapped_in_any_spelling(doc: dict[str, Any]) -> None:
    """Bare or ``update:``-wrapped, ``kind`` or ``type``, ``phase`` or ``/phase``."""
    update = parse_update(doc)
    assert update == EnumValueUpdate(path="phase", value="ACCEPTED")


def test_update_paths_become_dotted() -> None:
    """Slash paths become dotted paths; other update kinds are typed."""
    doc = {
        "type": "uri:string-value-update",
        "path": "/schedule/available/duration",
        "value": "PT2H",
    }
    assert canonical_update(doc)["path"] == "schedule.available.duration"
    assert parse_update(doc) == StringValueUpdate(path="schedule.available.duration", value="PT2H")
    delta = parse_update({"kind": "uri:integer-delta-update", "path": "x", "delta": -5})
    assert delta == IntegerDeltaUpdate(path="x", delta=-5)


def test_lax_updates_read_numbers_from_text() -> None:
    """XML updates carry numbers as text: lax typing converts them, strict refuses."""
    doc = {"kind": "uri:integer-value-update", "path": "x", "value": "5"}
    assert parse_update(doc, lax=True) == IntegerValueUpdate(path="x", value=5)
    with pytest.raises(RequestInvalid) as caught:
        parse_update(doc)
    assert caught.value.messages[0].values["path"] == "value"


@pytest.mark.parametrize(
    ("doc", "path", "text"),
    [
        ({"kind": "uri:enum-value-update", "path": "phase"}, "value", "required"),
        (
            {"kind": "uri:colour-update", "path": "phase", "value": "x"},
            "kind",
            "uri:enum-value-update",
        ),
        ({"path": "phase", "value": "x"}, "kind", "required"),
        ({"kind": "uri:enum-value-update", "path": "phase", "value": "A", "x": 1}, "x", "unknown"),
        (["ACCEPTED"], "$", "object"),
        ("ACCEPTED", "$", "object"),
    ],
    ids=["missing-value", "unknown-kind", "no-kind", "unknown-field", "array", "string"],
)
def test_bad_updates_name_the_field(doc: object, path: str, text: str) -> None:
    """Each malformed update names the field at fault."""
    with pytest.raises(RequestInvalid) as caught:
        parse_update(doc)
    (item,) = caught.value.messages
    assert item.values["path"] == path
    assert text in item.message
