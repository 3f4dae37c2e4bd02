"""The generated OpenAPI document: up to date, valid, in the v1.0 wire form, complete."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args, get_type_hints

import msgspec
import pytest
import yaml
from aiohttp import web
from openapi_schema_validator import OAS31Validator
from openapi_schema_validator import validate as validate_instance
from openapi_spec_validator import OpenAPIV31SpecValidator

from talicada.schema import kinds, model, openapi
from talicada.schema import messages as msg
from talicada.schema.dialects import render_offerset
from tests.conftest import EXAMPLES

SCHEMA_DIR = Path(__file__).resolve().parents[1] / "schema"
REGENERATE = "run `python -m talicada.schema.openapi` to regenerate"


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    """The document as a client reads it: decoded from the served JSON bytes."""
    decoded: dict[str, Any] = json.loads(openapi.document_bytes()[0])
    return decoded


def _update_kinds() -> set[str]:
    """Update kinds, and the option kinds that offer them: the same in every dialect."""
    updates = {str(update.__struct_config__.tag) for update in get_args(model.AnyUpdate)}
    return updates | set(get_args(get_type_hints(model.Option)["kind"]))


def _kind_values(node: Any) -> Iterator[str]:
    """Every discriminator mapping key and fixed ``kind`` value below ``node``."""
    if isinstance(node, list):
        for item in node:
            yield from _kind_values(item)
    elif isinstance(node, dict):
        discriminator = node.get("discriminator")
        if isinstance(discriminator, dict) and discriminator.get("propertyName") == "kind":
            yield from discriminator.get("mapping", {})
        properties = node.get("properties")
        kind = properties.get("kind") if isinstance(properties, dict) else None
        if isinstance(kind, dict):
            yield from ([kind["const"]] if "const" in kind else kind.get("enum", []))
        for value in node.values():
            yield from _kind_values(value)


def _resolves(uri: str) -> bool:
    for family in kinds.Family:
        try:
            kinds.resolve(uri, family)
        except kinds.UnknownKind:
            continue
        return True
    return False


def _validate(document: dict[str, Any], instance: Any, schema: str) -> None:
    """Validate ``instance`` against component ``schema``, resolving refs in the document."""
    root = {"$ref": f"#/components/schemas/{schema}", "components": document["components"]}
    validate_instance(instance, root, cls=OAS31Validator)


# -- the checked-in copies -----------------------------------------------------------------


@pytest.mark.parametrize("index", [0, 1], ids=list(openapi.FILE_NAMES))
def test_checked_in_copy_matches_the_model(index: int) -> None:
    """schema/openapi.{json,yaml} are byte for byte what the model generates now."""
    path = SCHEMA_DIR / openapi.FILE_NAMES[index]
    assert path.is_file(), f"{path} is missing; {REGENERATE}"
    assert path.read_bytes() == openapi.document_bytes()[index], f"{path} is stale; {REGENERATE}"


def test_yaml_and_json_say_the_same() -> None:
    """The YAML copy decodes to exactly the JSON document."""
    json_bytes, yaml_bytes = openapi.document_bytes()
    assert yaml.safe_load(yaml_bytes) == json.loads(json_bytes)


def test_check_reports_stale_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``--check`` exits 1 naming each stale file, and 0 once they are written."""
    (tmp_path / "openapi.json").write_bytes(openapi.document_bytes()[0])
    (tmp_path / "openapi.yaml").write_text("openapi: 3.0.0\n")

    assert openapi.main(["--check", str(tmp_path)]) == 1
    error = capsys.readouterr().err
    assert "openapi.yaml" in error
    assert "openapi.json" not in error

    assert openapi.main([str(tmp_path)]) == 0
    assert openapi.main(["--check", str(tmp_path)]) == 0


# -- validity --------------------------------------------------------------------------------


def test_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    """The document passes the OpenAPI 3.1 specification validator."""
    assert document["openapi"] == "3.1.0"
    OpenAPIV31SpecValidator(document).validate()


def test_operation_ids_are_unique(document: dict[str, Any]) -> None:
    """Every operation has its own operationId and a summary."""
    operations = [
        operation
        for item in document["paths"].values()
        for method, operation in item.items()
        if method != "parameters"
    ]
    ids = [operation["operationId"] for operation in operations]
    assert len(ids) == len(set(ids))
    assert all(operation["summary"] for operation in operations)


# -- the wire form ----------------------------------------------------------------------------


def test_kinds_are_registry_uris_not_internal_names(document: dict[str, Any]) -> None:
    """Every kind tag in the components is a URI the registry resolves, or an update kind."""
    found = set(_kind_values(document["components"]["schemas"]))
    updates = _update_kinds()
    leaked = sorted(value for value in found if value not in updates and not _resolves(value))
    assert not leaked, f"kind values the registry does not resolve: {leaked}"
    # And nothing is left out: every registered kind appears in its v1.0 spelling.
    expected = {
        kinds.uri_for(family, name, kinds.Dialect.V1_0)
        for family, names in kinds.KINDS.items()
        for name in names
    }
    assert expected | updates <= found


def test_v1_example_request_matches_the_request_schema(document: dict[str, Any]) -> None:
    """The shared v1.0 example request is a valid ExecutionRequest as documented."""
    request = yaml.safe_load((EXAMPLES / "v1-local-checksum-request.yaml").read_text())
    _validate(document, request, "ExecutionRequest")


def test_rendered_offer_set_matches_the_offer_set_schema(document: dict[str, Any]) -> None:
    """What the broker writes in the v1.0 dialect is a valid OfferSet as documented."""
    # Given an offer with every family of component in it
    offer = model.ExecutionSession(
        meta=model.Metadata(uuid="6a1e7c1e-0000-4000-8000-000000000001", name="offer"),
        phase="OFFERED",
        expires="2025-11-06T11:09:50Z",
        executable=model.Checksum(paths=["/inputs/"]),
        compute=model.SimpleComputeResource(
            cores=model.MinMax(min=1, max=2),
            volumes=[model.SimpleVolumeMount(path="/inputs/", resources=["file-a"])],
        ),
        storage=[model.SimpleStorageResource(data=["file-a"])],
        data=[model.SimpleDataResource(meta=model.Metadata(name="file-a"), location="http://x/a")],
        costs=[model.SimpleMinMaxFloatCost(max=1.5)],
        metrics=[model.SimpleMinMaxFloatMetric(min=1.0)],
    )
    offerset = model.OfferSet(
        meta=model.Metadata(
            uuid="6a1e7c1e-0000-4000-8000-000000000002",
            messages=[msg.make(msg.COMPONENT_MESSAGE, "INFO", component="compute", text="ok")],
        ),
        result="YES",
        offers=[offer],
    )
    # When it is rendered as a v1.0 client sees it
    wire = render_offerset(msgspec.to_builtins(offerset), kinds.Dialect.V1_0)
    # Then the documented schema accepts it
    _validate(document, wire, "OfferSet")


def test_update_matches_the_update_schema(document: dict[str, Any]) -> None:
    """An accept update as docs/ARCHITECTURE.md §3 writes it is a valid AnyUpdate."""
    update = {"kind": "uri:enum-value-update", "path": "phase", "value": "ACCEPTED"}
    _validate(document, update, "AnyUpdate")


# -- completeness ----------------------------------------------------------------------------


def _routes() -> list[web.RouteDef]:
    from talicada.broker import callbacks, event_feed, routes, watch

    tables = [routes.routes, watch.routes, callbacks.routes, event_feed.routes]
    return [route for table in tables for route in table if isinstance(route, web.RouteDef)]


def test_every_route_is_documented(document: dict[str, Any]) -> None:
    """Each method and path the app serves has an operation in the document."""
    served = _routes()
    assert served, "talicada.broker.routes.routes is empty"
    missing = [
        f"{route.method} {route.path}"
        for route in served
        if route.method.lower() not in document["paths"].get(route.path, {})
    ]
    assert not missing, f"routes missing from the OpenAPI document: {missing}"


def test_only_open_paths_are_documented_without_a_token(document: dict[str, Any]) -> None:
    """Operations need the bearer token exactly where the auth middleware demands one."""
    from talicada.broker.app import OPEN_PATHS

    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method == "parameters":
                continue
            if path.startswith("/callbacks/"):
                # Workers sign their reports instead of presenting a token.
                assert operation["security"] == [{"callbackSignature": []}]
                continue
            secured = operation.get("security") == [{"bearer": []}]
            assert secured is (path not in OPEN_PATHS), f"{method.upper()} {path}"


def test_the_document_gives_the_xml_names_the_codec_writes(document: dict[str, Any]) -> None:
    """``kind`` an attribute (a message's stays an element), lists wrapped, members named."""
    from talicada.schema.codec import MediaType, encode

    schemas = document["components"]["schemas"]
    assert schemas["OfferSet"]["xml"] == {"name": "offers-response"}
    assert schemas["ExecutionSession"]["xml"] == {"name": "execution"}
    assert schemas["ExecutionSession"]["properties"]["kind"]["xml"] == {"attribute": True}
    assert schemas["DockerContainer"]["properties"]["kind"]["xml"] == {"attribute": True}
    assert "xml" not in schemas["MessageItem"]["properties"]["kind"]
    offers = schemas["OfferSet"]["properties"]["offers"]
    assert offers["xml"] == {"wrapped": True}
    assert offers["items"]["xml"] == {"name": "execution"}
    # What the hints say is what the codec writes.
    body = encode({"kind": "k", "offers": [{"kind": "s"}]}, MediaType.XML, root="offers-response")
    assert body.endswith(
        b'<offers-response kind="k"><offers><execution kind="s" /></offers></offers-response>'
    )
