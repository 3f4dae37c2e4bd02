"""Bad input never gets a 500: every malformed body or update is a 4xx naming what is wrong.

Each table row runs once per store (``memory`` and ``redis``). Every refusal must
carry a ``messages`` list naming the field (or the body) and must change nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from talicada.broker.app import create_app
from talicada.broker.store.memory import MemoryStore
from talicada.schema.kinds import KINDS, Dialect, Family, known_uris, uri_for
from talicada.settings import load
from tests.conftest import ClientFactory

Client: TypeAlias = TestClient[web.Request, web.Application]

PING = "urn:talicada:kinds:executable:ping-1.0"
CHECKSUM = "urn:talicada:kinds:executable:checksum-1.0"
V1 = "https://www.purl.org/ivoa.net/EB/schema/v1.0/types/"
DATA_KIND = V1 + "data/simple-data-resource-1.0"
ENUM_UPDATE = "uri:enum-value-update"


def ping(**extra: Any) -> dict[str, Any]:
    """A valid ping request with ``extra`` top-level fields."""
    return {"executable": {"kind": PING}, **extra}


def datum(name: str, **extra: Any) -> dict[str, Any]:
    """A simple data resource named ``name``."""
    return {"kind": DATA_KIND, "meta": {"name": name}, "location": f"http://x.test/{name}", **extra}


def mount(path: str, *resources: str) -> dict[str, Any]:
    """A volume mounting ``resources`` at ``path``."""
    return {"path": path, "resources": list(resources)}


@dataclass(frozen=True)
class Bad:
    """One bad request body and what the broker must say about it."""

    body: object
    names: tuple[str, ...]  # substrings the messages must contain (paths first)
    media: str = "application/json"
    status: int = 400
    settings: dict[str, Any] = field(default_factory=dict)

    def payload(self) -> bytes:
        """The body as bytes: given bytes as they are, anything else as JSON."""
        if isinstance(self.body, bytes):
            return self.body
        return json.dumps(self.body).encode()


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
  <!ENTITY lol "lol">
  <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
  <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
  <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<offers-request><executable><kind>&lol4;</kind></executable></offers-request>"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE r [<!ENTITY secret SYSTEM "file:///etc/passwd">]>
<offers-request><executable><kind>&secret;</kind></executable></offers-request>"""

YAML_LAUGHS = b"""a: &a ["lol", "lol", "lol", "lol"]
b: &b [*a, *a, *a, *a]
c: &c [*b, *b, *b, *b]
executable: {kind: "urn:talicada:kinds:executable:ping-1.0"}
"""

REQUESTS = [
    # -- bodies that cannot be read
    pytest.param(Bad(b"executable: [ping\nkind: x", ("YAML",), "application/yaml"), id="yaml"),
    pytest.param(Bad(YAML_LAUGHS, ("YAML",), "application/yaml"), id="yaml-aliases"),
    pytest.param(
        Bad(b"executable: {}\nexecutable: {}\n", ("YAML",), "application/yaml"),
        id="yaml-duplicate-key",
    ),
    pytest.param(Bad(b'{"executable": {"kind": ', ("JSON",)), id="json"),
    pytest.param(Bad(b"{'executable': 1}", ("JSON",)), id="json-single-quotes"),
    pytest.param(
        Bad(b"<offers-request><executable></offers-request>", ("XML",), "application/xml"), id="xml"
    ),
    pytest.param(
        Bad(BILLION_LAUGHS, ("XML", "entities"), "application/xml"), id="xml-billion-laughs"
    ),
    pytest.param(
        Bad(EXTERNAL_ENTITY, ("XML", "entities"), "application/xml"), id="xml-external-entity"
    ),
    pytest.param(Bad(b"[1, 2, 3]", ("JSON", "object")), id="json-array"),
    pytest.param(Bad(b'"ping"', ("JSON", "object")), id="json-string"),
    pytest.param(Bad(b"", ("empty",)), id="empty-body"),
    pytest.param(Bad(b"   \n", ("empty",)), id="blank-body"),
    pytest.param(Bad(b"\xff\xfe{}", ("UTF",)), id="not-utf8"),
    pytest.param(Bad(b"a,b\n", ("Content-Type", "text/csv"), "text/csv", 415), id="csv-415"),
    pytest.param(
        Bad(b"{}", ("Content-Type", "latin-1"), "application/json; charset=latin-1", 415),
        id="charset-415",
    ),
    pytest.param(
        Bad(
            ping(meta={"name": "x" * 4096}),
            ("larger than 2048",),
            status=413,
            settings={"max_body_bytes": 2048},
        ),
        id="too-large-413",
    ),
    # -- shapes and types
    pytest.param(
        Bad({"compute": {"cores": {"min": 1}}}, ("executable", "required")), id="no-executable"
    ),
    pytest.param(
        Bad(ping(compute={"cores": {"min": "two"}}), ("compute.cores.min",)), id="cores-string"
    ),
    pytest.param(
        Bad(ping(compute={"cores": {"min": 1.5}}), ("compute.cores.min",)), id="cores-float"
    ),
    pytest.param(Bad(ping(compute=[1]), ("compute",)), id="compute-array"),
    pytest.param(Bad({"executable": "ping"}, ("executable",)), id="executable-string"),
    pytest.param(Bad(ping(data=["x"]), ("data[0]",)), id="data-item-string"),
    pytest.param(Bad(ping(meta="x"), ("meta",)), id="meta-string"),
    pytest.param(Bad({"executable": {"kind": 7}}, ("executable.kind",)), id="kind-number"),
    pytest.param(
        Bad(
            {"executable": {"kind": "urn:example:no-such-task"}},
            ("executable.kind", *known_uris(Family.EXECUTABLE)),
        ),
        id="unknown-executable-kind",
    ),
    pytest.param(
        Bad({"executable": {}}, ("executable.kind", "required")), id="executable-without-kind"
    ),
    pytest.param(
        Bad(ping(colour="blue"), ("colour", "unknown field")), id="unknown-top-level-field"
    ),
    pytest.param(
        Bad(ping(compute={"colour": "blue"}), ("compute.colour", "unknown field")),
        id="unknown-compute-field",
    ),
    pytest.param(
        Bad({"executable": {"kind": PING, "colour": 1}}, ("executable.colour",)),
        id="unknown-executable-field",
    ),
    pytest.param(
        Bad(ping(data=[datum("a", colour=1)]), ("data[0].colour",)), id="unknown-data-field"
    ),
    pytest.param(Bad(ping(name="a", meta={"name": "b"}), ("name", "meta.name")), id="name-twice"),
    pytest.param(Bad(ping(compute={}, computer={}), ("computer",)), id="compute-and-computer"),
    # -- references
    pytest.param(
        Bad(
            ping(data=[datum("a")], compute={"volumes": [mount("/in", "nope")]}),
            ("compute.volumes[0].resources[0]", "nope"),
        ),
        id="dangling-volume-resource",
    ),
    pytest.param(
        Bad(
            ping(
                data=[datum("x")],
                storage=[{"meta": {"name": "x"}}],
                compute={"volumes": [mount("/in", "x")]},
            ),
            ("compute.volumes[0].resources[0]", "more than one"),
        ),
        id="ambiguous-volume-resource",
    ),
    pytest.param(
        Bad(ping(data=[datum("a", storage="nowhere")]), ("data[0].storage", "nowhere")),
        id="data-storage-dangling",
    ),
    pytest.param(
        Bad(
            ping(storage=[{"meta": {"name": "s"}, "data": ["ghost"]}]),
            ("storage[0].data[0]", "ghost"),
        ),
        id="storage-data-dangling",
    ),
    pytest.param(
        Bad(ping(compute={"volumes": ["ghost"]}), ("compute.volumes[0]", "ghost")),
        id="named-volume-dangling",
    ),
    pytest.param(
        Bad(
            ping(data=[datum("a")], compute={"volumes": [{"path": "/in"}]}),
            ("compute.volumes[0].resources",),
        ),
        id="volume-mounting-nothing",
    ),
    # -- numbers
    pytest.param(
        Bad(ping(compute={"cores": {"min": 4, "max": 2}}), ("compute.cores", "min 4")),
        id="cores-min-over-max",
    ),
    pytest.param(
        Bad(ping(compute={"memory": {"min": 8, "max": 2}}), ("compute.memory", "min 8")),
        id="memory-min-over-max",
    ),
    pytest.param(Bad(ping(compute={"cores": {"min": 0}}), ("compute.cores.min",)), id="zero-cores"),
    pytest.param(
        Bad(ping(compute={"cores": {"min": -2}}), ("compute.cores.min",)), id="negative-cores"
    ),
    pytest.param(
        Bad(ping(compute={"memory": {"max": 0}}), ("compute.memory.max",)), id="zero-memory"
    ),
    pytest.param(
        Bad(ping(compute={"cores": {"min": 10**30}}), ("compute.cores.min",)), id="huge-cores"
    ),
    pytest.param(
        Bad(
            ping(storage=[{"meta": {"name": "s"}, "size": {"min": 9, "max": 1}}]),
            ("storage[0].size",),
        ),
        id="storage-size-min-over-max",
    ),
    pytest.param(
        Bad(
            ping(costs=[{"kind": V1 + "costs/simple-minmax-float-cost-1.0", "min": 5, "max": 1}]),
            ("costs[0]",),
        ),
        id="cost-min-over-max",
    ),
    # -- times
    pytest.param(
        Bad(
            ping(schedule={"requested": {"duration": "P1Y"}}),
            ("schedule.requested.duration", "years"),
        ),
        id="duration-years",
    ),
    pytest.param(
        Bad(ping(schedule={"requested": {"duration": "PT"}}), ("schedule.requested.duration",)),
        id="duration-empty",
    ),
    pytest.param(
        Bad(
            ping(schedule={"requested": {"duration": "10 minutes"}}),
            ("schedule.requested.duration",),
        ),
        id="duration-words",
    ),
    pytest.param(
        Bad(
            ping(schedule={"requested": {"duration": "PT0S"}}),
            ("schedule.requested.duration", "zero"),
        ),
        id="duration-zero",
    ),
    pytest.param(
        Bad(ping(schedule={"requested": {"duration": 600}}), ("schedule.requested.duration",)),
        id="duration-number",
    ),
    pytest.param(
        Bad(ping(schedule={"requested": {"start": "2025-01-01"}}), ("schedule.requested.start",)),
        id="start-not-interval",
    ),
    pytest.param(
        Bad(
            ping(schedule={"requested": {"start": "2031-01-02T00:00Z/2031-01-01T00:00Z"}}),
            ("schedule.requested.start", "before"),
        ),
        id="start-end-before-start",
    ),
    pytest.param(
        Bad(
            ping(schedule={"requested": {"start": "2020-01-01T00:00Z/PT1H"}}),
            ("schedule.requested.start", "ended"),
        ),
        id="start-in-the-past",
    ),
    pytest.param(
        Bad(
            ping(schedule={"requested": {"start": "9999-12-31T00:00Z/PT1H", "duration": "P366D"}}),
            ("schedule.requested.start",),
        ),
        id="start-at-the-end-of-time",
    ),
    pytest.param(
        Bad(
            {"executable": {"kind": "urn:talicada:kinds:executable:delay-1.0", "duration": "soon"}},
            ("executable.duration",),
        ),
        id="delay-duration",
    ),
    pytest.param(
        Bad({"executable": {"kind": PING, "fail": {"phase": "LATER"}}}, ("executable.fail.phase",)),
        id="fail-phase",
    ),
    # -- paths
    pytest.param(
        Bad(
            {
                "executable": {"kind": CHECKSUM, "paths": ["/elsewhere/"]},
                "data": [datum("a")],
                "compute": {"volumes": [mount("/inputs/", "a")]},
            },
            ("executable.paths[0]", "/elsewhere/"),
        ),
        id="checksum-path-not-mounted",
    ),
    pytest.param(
        Bad(
            ping(data=[datum("a")], compute={"volumes": [mount("inputs", "a")]}),
            ("compute.volumes[0].path", "absolute"),
        ),
        id="relative-volume-path",
    ),
    pytest.param(
        Bad(
            ping(
                data=[datum("a"), datum("b")],
                compute={"volumes": [mount("/in", "a"), mount("/in/", "b")]},
            ),
            ("compute.volumes[1].path",),
        ),
        id="two-volumes-one-path",
    ),
    pytest.param(
        Bad(ping(data=[{"kind": DATA_KIND, "location": "nowhere"}]), ("data[0].location",)),
        id="data-location-relative",
    ),
    pytest.param(
        Bad(
            {
                "executable": {
                    "kind": V1 + "executable/docker-container-1.0",
                    "image": {"locations": ["x"], "digest": "sha256:abc"},
                }
            },
            ("executable.image.digest",),
        ),
        id="bad-sha256-digest",
    ),
]


async def _count_sessions(client: Client) -> int:
    response = await client.get("/sessions?limit=500")
    assert response.status == 200
    doc = await response.json()
    return len(doc["sessions"])


async def _seed_one_session(client: Client) -> str:
    """One real offer, so 'nothing changed' compares a non-empty listing."""
    response = await client.post("/requests", json=ping())
    assert response.status == 200
    doc = await response.json()
    uuid: str = doc["offers"][0]["meta"]["uuid"]
    return uuid


def _assert_names(doc: Any, names: tuple[str, ...]) -> None:
    assert isinstance(doc, dict), doc
    messages = doc["messages"]
    assert messages, doc
    text = "\n".join(item["message"] for item in messages)
    for name in names:
        assert name in text, f"{name!r} not in {text!r}"
    for item in messages:
        assert item["kind"].startswith("urn:talicada:error:")
        assert item["message"] == item["template"].format_map(item["values"])


@pytest.mark.parametrize("bad", REQUESTS)
async def test_a_bad_request_is_a_4xx_naming_the_field_and_changes_nothing(
    make_client: ClientFactory, bad: Bad
) -> None:
    """POST /requests (and /direct) with a bad body → the expected 4xx, named, nothing stored."""
    client = await make_client(**bad.settings)
    await _seed_one_session(client)
    before = await _count_sessions(client)
    for path in ("/requests", "/direct"):
        response = await client.post(path, data=bad.payload(), headers={"Content-Type": bad.media})
        assert response.status == bad.status, await response.text()
        assert response.headers["Content-Type"].startswith("application/json")
        _assert_names(await response.json(), bad.names)
    assert await _count_sessions(client) == before


async def test_an_unknown_kind_lists_the_known_kinds_in_the_request_dialect(client: Client) -> None:
    """A seed request with an unknown data kind hears the seed spellings of the data kinds."""
    body = {
        "name": "seed",
        "executable": {"type": PING},
        "data": [
            {"name": "d", "type": "https://www.purl.org/ivoa.net/EB/schema/types/data/ftp-1.0"}
        ],
    }
    response = await client.post("/requests", json=body)
    assert response.status == 400
    doc = await response.json()
    text = doc["messages"][0]["message"]
    assert text.startswith("data[0].type: ")
    for name in KINDS[Family.DATA]:
        assert uri_for(Family.DATA, name, Dialect.SEED_2025) in text


# --------------------------------------------------------------------------- updates

UPDATES = [
    pytest.param({"type": ENUM_UPDATE, "path": "phase"}, ("value", "required"), id="missing-value"),
    pytest.param(
        {"type": "uri:colour-update", "path": "phase", "value": "ACCEPTED"},
        ("kind", "uri:enum-value-update", "uri:integer-delta-update"),
        id="unknown-update-kind",
    ),
    pytest.param({"path": "phase", "value": "ACCEPTED"}, ("kind",), id="no-update-kind"),
    pytest.param(["ACCEPTED"], ("JSON", "object"), id="update-array"),
    pytest.param("ACCEPTED", ("JSON", "object"), id="update-string"),
    pytest.param({"update": "ACCEPTED"}, ("kind",), id="update-wrapping-a-string"),
    pytest.param(
        {"type": ENUM_UPDATE, "path": "phase", "value": 1}, ("value",), id="value-not-a-string"
    ),
    pytest.param(
        {"type": ENUM_UPDATE, "path": "phase", "value": "ACCEPTED", "colour": 1},
        ("colour",),
        id="unknown-update-field",
    ),
    pytest.param(
        {"type": ENUM_UPDATE, "path": "compute.cores", "value": "ACCEPTED"},
        ("compute.cores",),
        id="unsupported-path",
    ),
    pytest.param(
        {"type": "uri:integer-delta-update", "path": "phase", "delta": 1},
        ("kind", "uri:enum-value-update"),
        id="wrong-kind-for-phase",
    ),
    pytest.param(
        {"type": ENUM_UPDATE, "path": "phase", "value": "COMPLETED"},
        ("value",),
        id="phase-broker-only",
    ),
]


@pytest.mark.parametrize(("body", "names"), UPDATES)
async def test_a_bad_update_is_a_400_naming_the_field_and_changes_nothing(
    client: Client, body: object, names: tuple[str, ...]
) -> None:
    """POST /sessions/{uuid} with a bad update → 400 with named messages; the phase stays."""
    uuid = await _seed_one_session(client)
    response = await client.post(
        f"/sessions/{uuid}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    assert response.status == 400, await response.text()
    _assert_names(await response.json(), names)
    response = await client.get(f"/sessions/{uuid}")
    assert (await response.json())["phase"] == "OFFERED"


async def test_an_oversized_update_is_413(make_client: ClientFactory) -> None:
    """The body limit applies to updates too."""
    client = await make_client(max_body_bytes=2048)
    uuid = await _seed_one_session(client)
    body = {"type": ENUM_UPDATE, "path": "phase", "value": "ACCEPTED", "pad": "x" * 4096}
    response = await client.post(f"/sessions/{uuid}", json=body)
    assert response.status == 413
    assert (await response.json())["messages"]
    response = await client.get(f"/sessions/{uuid}")
    assert (await response.json())["phase"] == "OFFERED"


# --------------------------------------------------------------------------- random requests

_KINDS = [
    *(
        uri_for(family, name, dialect)
        for family, names in KINDS.items()
        for name in names
        for dialect in Dialect
    ),
    "urn:talicada:kinds:executable:nope-1.0",
    "simple-data-resource",
]
_WORDS = [
    *_KINDS,
    "PT10M",
    "PT0S",
    "P1Y",
    "PT",
    "P400D",
    "/inputs/",
    "inputs",
    "READONLY",
    "READWRITE",
    "2030-01-01T00:00Z/PT1H",
    "2020-01-01T00:00Z/PT1H",
    "9999-12-31T23:00Z/PT1H",
    "2025-01-01",
    "a",
    "b",
    "x",
    "http://x.test/a",
    "file:///tmp/a",
    "sha256:00",
    "RUNNING",
    "",
]
_KEYS = [
    "kind",
    "type",
    "meta",
    "name",
    "uuid",
    "href",
    "cores",
    "memory",
    "min",
    "max",
    "volumes",
    "path",
    "mode",
    "resources",
    "resource",
    "storage",
    "data",
    "location",
    "paths",
    "duration",
    "fail",
    "phase",
    "after",
    "image",
    "locations",
    "digest",
    "skao",
    "namespace",
    "objectname",
    "size",
    "schedule",
    "requested",
    "start",
    "cardinality",
    "costs",
]
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(_WORDS)
)
_keys = st.sampled_from(_KEYS) | st.text(min_size=1, max_size=6)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_keys, inner, max_size=4),
    max_leaves=10,
)
_component = st.builds(
    lambda kind, rest: {**rest, "kind": kind} if kind is not None else rest,
    st.none() | st.sampled_from(_KINDS),
    st.dictionaries(_keys, _values, max_size=5),
)
_requests = st.fixed_dictionaries(
    {"executable": _component | _values},
    optional={
        "compute": _component | _values,
        "computer": _component,
        "data": st.lists(_component, max_size=3) | _values,
        "storage": st.lists(_component, max_size=2),
        "volumes": st.lists(_component, max_size=2),
        "schedule": st.fixed_dictionaries(
            {"requested": st.dictionaries(_keys, _values, max_size=3)}
        )
        | _values,
        "name": _values,
        "meta": _values,
        "offers": _values,
    },
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=_requests)
async def test_random_requests_never_get_a_500(body: dict[str, Any]) -> None:
    """Whatever JSON-able request shape arrives, the broker answers below 500."""
    app = create_app(load(environ={}), store=MemoryStore())
    client: Client = TestClient(TestServer(app))
    await client.start_server()
    try:
        for path in ("/requests", "/direct"):
            response = await client.post(path, json=body)
            assert response.status < 500, (body, await response.text())
            doc = await response.json()
            if response.status >= 400:
                assert doc["messages"], doc
            else:
                assert "result" in doc or "phase" in doc
    finally:
        await client.close()
