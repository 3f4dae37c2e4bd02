"""Answers in the v1.0.6 dialect conform to the community's reference schema.

The reference (``shared/reference/execution-broker-schema/`` beside the
repository: read at test time, never copied in) types every component through a
``kind`` discriminator. Each component of our answers is validated against the
schema its ``kind`` maps to in the reference's discriminator mappings, so a
client generated from the reference reads our offers, sessions, options and
refusals as the types they are.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestClient
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from talicada.schema.kinds import Dialect
from talicada.settings import PlatformSettings
from tests.conftest import ClientFactory
from tests.test_contract import in_dialect, seed_doc

DIALECT = Dialect.V1_0_6
_ROOT = Path(__file__).resolve().parents[1]
_CANDIDATES = [
    os.environ.get("TALICADA_REFERENCE_SCHEMA", ""),
    *(str(up / "shared/reference/execution-broker-schema") for up in _ROOT.parents),
    # The workplace keeps the reference here; CI's clean clone may live elsewhere
    # (the schema is someone else's work: read at test time, never copied in).
    "/work/shared/reference/execution-broker-schema",
]

#: Where each family of component lives in the reference, by the abstract schema
#: whose discriminator maps its kinds.
ABSTRACT = {
    "session": "AbstractExecutionSession",
    "executable": "AbstractExecutable",
    "compute": "AbstractComputeResource",
    "storage": "AbstractStorageResource",
    "data": "AbstractDataResource",
    "volume": "AbstractVolumeMount",
    "option": "AbstractOption",
}


def _reference_dir() -> Path:
    for candidate in _CANDIDATES:
        if candidate and (Path(candidate) / "components.yaml").is_file():
            return Path(candidate)
    pytest.fail(
        "the reference schema is missing: set TALICADA_REFERENCE_SCHEMA or keep "
        "shared/reference/execution-broker-schema beside the repository"
    )


class Reference:
    """The reference's YAML files as one registry, and its discriminator mappings."""

    def __init__(self, directory: Path) -> None:
        resources = []
        for path in sorted(directory.rglob("*.yaml")):
            contents = yaml.safe_load(path.read_text(encoding="utf-8"))
            resources.append(
                (path.as_uri(), Resource.from_contents(contents, default_specification=DRAFT202012))
            )
        self.registry: Registry[Any] = Registry().with_resources(resources)
        self.components = directory / "components.yaml"
        self.schemas = yaml.safe_load(self.components.read_text(encoding="utf-8"))["components"][
            "schemas"
        ]

    def target(self, family: str, kind: str) -> str:
        """The absolute reference of the schema ``kind`` maps to in ``family``'s mapping."""
        mapping = self.schemas[ABSTRACT[family]]["discriminator"]["mapping"]
        assert kind in mapping, f"{family} kind {kind!r} is not in the reference's mapping"
        relative = str(mapping[kind])
        if relative.startswith("#"):
            return self.components.as_uri() + relative
        path, _, fragment = relative.partition("#")
        return (self.components.parent / path).resolve().as_uri() + "#" + fragment

    def check(self, instance: Any, ref: str, where: str) -> None:
        """Fail naming ``where`` and every error unless ``instance`` fits ``ref``."""
        validator = Draft202012Validator({"$ref": ref}, registry=self.registry)
        errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.path))
        assert not errors, f"{where} does not fit {ref}:\n" + "\n".join(
            f"  {list(e.path)}: {e.message}" for e in errors[:10]
        )


@pytest.fixture(scope="module")
def reference() -> Reference:
    """The reference schema, loaded once."""
    return Reference(_reference_dir())


def components(session: dict[str, Any], where: str) -> Iterator[tuple[str, dict[str, Any], str]]:
    """(family, component, path) of every discriminated part of a session document."""
    yield "session", session, where
    yield "executable", session["executable"], f"{where}.executable"
    compute = session["compute"]
    yield "compute", compute, f"{where}.compute"
    for index, volume in enumerate(compute.get("volumes", [])):
        yield "volume", volume, f"{where}.compute.volumes[{index}]"
    for family in ("storage", "data"):
        for index, item in enumerate(session.get(family, [])):
            yield family, item, f"{where}.{family}[{index}]"
    for index, option in enumerate(session["meta"].get("options", [])):
        yield "option", option, f"{where}.meta.options[{index}]"


def check_session(reference: Reference, session: dict[str, Any], where: str) -> None:
    """Every component of ``session`` against the schema its kind maps to."""
    for family, component, path in components(session, where):
        reference.check(component, reference.target(family, component["kind"]), path)


async def _post(client: TestClient[Any, Any], path: str, body: dict[str, Any]) -> Any:
    response = await client.post(
        path, data=yaml.safe_dump(body), headers={"Content-Type": "application/yaml"}
    )
    return response.status, await response.json()


async def test_v106_offers_sessions_and_refusals_fit_the_reference_schema(
    make_client: ClientFactory, skaha_platform: PlatformSettings, reference: Reference
) -> None:
    """Offer set, offers, the accepted session and a refused direct request, kind by kind."""
    client = await make_client(platforms=[skaha_platform])
    request = in_dialect(seed_doc(), DIALECT)
    (volume,) = request["compute"]["volumes"]
    volume["mode"] = "READONLY"

    # Given an offer set for the seed request in the v1.0.6 spelling
    status, offerset = await _post(client, "/requests", request)
    assert status == 200, offerset
    assert offerset["result"] == "YES", offerset
    components_ref = reference.components.as_uri() + "#/components/schemas/"
    reference.check(offerset, components_ref + "OfferSetResponse", "offerset")
    for index, offer in enumerate(offerset["offers"]):
        check_session(reference, offer, f"offers[{index}]")
        # Volume modes and the updates an offer allows are part of the answer.
        assert all(v["mode"] == "READONLY" for v in offer["compute"]["volumes"])
        phases = [o for o in offer["meta"]["options"] if o["path"] == "phase"]
        assert phases == [
            {"kind": "uri:enum-value-option", "path": "phase", "values": ["ACCEPTED", "REJECTED"]}
        ]

    # When the first offer is accepted, the session fits too and offers cancel and resize
    uuid = offerset["offers"][0]["meta"]["uuid"]
    accept = {"kind": "uri:enum-value-update", "path": "phase", "value": "ACCEPTED"}
    status, session = await _post(client, f"/sessions/{uuid}", accept)
    assert status == 200, session
    check_session(reference, session, "session")
    options = {option["path"]: option for option in session["meta"]["options"]}
    assert options["phase"]["values"] == ["CANCELLED"]
    resize = options["schedule.available.duration"]
    assert resize["kind"] == "uri:integer-delta-option"
    assert resize["min"] < 0 < resize["max"]
    assert resize["units"] == "seconds"

    # And a direct request that cannot run is a REJECTED execution with its reasons
    too_big = in_dialect(seed_doc(), DIALECT)
    too_big["compute"]["cores"] = {"min": 100_000}
    status, refused = await _post(client, "/direct", too_big)
    assert status == 400, refused
    reference.check(refused, reference.target("session", refused["kind"]), "refusal")
    assert refused["phase"] == "REJECTED"
    assert refused["meta"]["messages"], refused
    assert refused["meta"]["messages"] == refused["messages"]


def _schemas(node: Any, key: str | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
    """(key, schema) of every schema in ``node``: ``key`` names its property or itself."""
    if isinstance(node, list):
        for member in node:
            yield from _schemas(member, key)
        return
    if not isinstance(node, dict):
        return
    if key is not None:
        yield key, node
    for name, value in node.items():
        if name in ("properties", "schemas") and isinstance(value, dict):
            for inner, schema in value.items():
                yield from _schemas(schema, inner)
        elif name in ("allOf", "anyOf", "oneOf", "items"):
            yield from _schemas(value, None if name == "items" else key)


def test_the_xml_names_agree_with_the_reference_schemas_xml_hints(reference: Reference) -> None:
    """Every member name and attribute the reference gives, the codec writes the same way."""
    from talicada.schema._xml_names import ELEMENT_KIND, attribute_name, item_name

    checked = {"members": 0, "attributes": 0}
    for path in sorted(reference.components.parent.rglob("*.yaml")):
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
        for key, schema in _schemas(document.get("components")):
            items = schema.get("items")
            member = items.get("xml", {}).get("name") if isinstance(items, dict) else None
            if member is not None:
                list_name = schema.get("xml", {}).get("name", key)
                assert item_name(list_name) == member, (path.name, key)
                checked["members"] += 1
            for name, value in schema.get("properties", {}).items():
                if isinstance(value, dict) and value.get("xml", {}).get("attribute") is True:
                    assert attribute_name(name, key), (path.name, key, name)
                    checked["attributes"] += 1
    assert checked["members"] >= 5
    assert checked["attributes"] >= 5
    # The free-text kinds the reference leaves without a hint: a message's and a connector's.
    messages = reference.components.parent / "messages.yaml"
    message = yaml.safe_load(messages.read_text(encoding="utf-8"))["components"]["schemas"][
        "MessageItem"
    ]
    assert "xml" not in message["properties"]["kind"]
    assert "xml" not in reference.schemas["SimpleSessionConnector"]["properties"]["kind"]
    assert {"message", "connector"} <= ELEMENT_KIND
