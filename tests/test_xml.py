"""XML answers and requests in the community schema's XML form.

The reference names a list's members (``<offers>`` holds ``<execution>``) and
writes ``kind`` as an attribute; talicada/schema/_xml_names.py keeps those
names. Answers are written that way, requests are read that way, and requests
in the form this broker wrote before (``<item>`` members, ``<kind>`` elements)
are still read.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import defusedxml.ElementTree as SafeET
import pytest

from talicada.schema.codec import MediaType, decode, encode
from talicada.schema.kinds import Dialect, Family, uri_for
from talicada.settings import PlatformSettings
from tests.conftest import ClientFactory
from tests.lifecycle_support import Client
from tests.test_contract import in_dialect, seed_doc

XML = MediaType.XML
DIALECT = Dialect.V1_0_6
JSON_HEADERS = {"Accept": "application/json"}
XML_HEADERS = {"Content-Type": "application/xml", "Accept": "application/xml"}
PING = "urn:talicada:kinds:executable:ping-1.0"


def kind(family: Family, name: str) -> str:
    """A kind URI in the reference's dialect."""
    return uri_for(family, name, DIALECT)


def reference_form_request() -> bytes:
    """The seed request as a client of the reference schema writes it in XML:
    ``kind`` attributes, list members named (``<volume>``, ``<data>``, ``<resource>``)."""
    docker = kind(Family.EXECUTABLE, "docker-container")
    compute = kind(Family.COMPUTE, "simple-compute-resource")
    volume = kind(Family.VOLUME, "simple-volume-mount")
    skao = kind(Family.DATA, "skao-data-resource")
    data = "".join(
        f'<data kind="{skao}"><meta><name>example-data-0{n}</name></meta>'
        f"<skao><namespace>testing</namespace><objectname>{obj}</objectname></skao></data>"
        for n, obj in ((1, "zrq-test-20250509-082506"), (2, "zrq-test-20250509-094501"))
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<offers-request>
  <meta><name>notebook-test</name></meta>
  <executable kind="{docker}">
    <image>
      <locations><location>images.canfar.net/skaha/base-notebook:latest</location></locations>
      <digest>0000</digest>
    </image>
  </executable>
  <schedule><requested><duration>PT10M</duration></requested></schedule>
  <compute kind="{compute}">
    <volumes>
      <volume kind="{volume}">
        <meta><name>Input data</name></meta>
        <path>/inputs/</path>
        <mode>READONLY</mode>
        <resources><resource>example-data-01</resource><resource>example-data-02</resource></resources>
      </volume>
    </volumes>
  </compute>
  <data>{data}</data>
</offers-request>""".encode()


def legacy_xml(data: object, root: str) -> bytes:
    """``data`` in the form this broker wrote before: ``<item>`` members, ``<kind>`` elements."""

    def fill(element: ET.Element, value: object) -> None:
        if isinstance(value, dict):
            for key, member in value.items():
                fill(ET.SubElement(element, key), member)
        elif isinstance(value, list):
            for member in value:
                fill(ET.SubElement(element, "item"), member)
        else:
            element.text = str(value)

    top = ET.Element(root)
    fill(top, data)
    body: bytes = ET.tostring(top, encoding="utf-8")
    return body


def as_xml_reads(value: Any) -> Any:
    """What a JSON answer reads back as from XML: scalars as text, nulls left out,
    empty strings, lists and objects as None (XML cannot tell them from nothing)."""
    if isinstance(value, dict):
        kept = {key: as_xml_reads(member) for key, member in value.items() if member is not None}
        return kept or None
    if isinstance(value, list):
        return [as_xml_reads(member) for member in value] or None
    if isinstance(value, bool):
        return "true" if value else "false"
    if value == "":
        return None
    return str(value)


#: What two asks for the same answer may differ in: the clock (message times, the
#: seconds an answer stays valid) and, for a POST, what it made.
VOLATILE = frozenset({"time", "ttl"})


def without(value: Any, keys: frozenset[str]) -> Any:
    """``value`` with ``keys`` left out of every mapping in it."""
    if isinstance(value, dict):
        return {key: without(member, keys) for key, member in value.items() if key not in keys}
    if isinstance(value, list):
        return [without(member, keys) for member in value]
    return value


async def answered_alike(
    client: Client,
    method: str,
    path: str,
    volatile: frozenset[str] = VOLATILE,
    **kwargs: Any,
) -> ET.Element:
    """Ask for ``path`` in JSON and in XML; the XML must decode to the JSON. Its root."""
    headers = kwargs.pop("headers", {})
    as_json = await client.request(method, path, headers={**headers, **JSON_HEADERS}, **kwargs)
    as_xml = await client.request(
        method, path, headers={**headers, "Accept": "application/xml"}, **kwargs
    )
    assert as_xml.status == as_json.status
    body = await as_xml.read()
    expected = as_xml_reads(without(await as_json.json(), volatile))
    assert without(decode(body, XML), volatile) == expected, body.decode()
    root: ET.Element = SafeET.fromstring(body)
    # The reference's names everywhere: no <item>, kind an element only where it is free text.
    assert not [element.tag for element in root.iter() if element.tag == "item"]
    for parent in root.iter():
        tags = {child.tag for child in parent}
        if "kind" in tags and tags != {"kind"}:  # not a list of kinds (/capabilities)
            assert parent.tag in ("message", "connector"), f"<{parent.tag}> has a <kind> element"
    return root


# --------------------------------------------------------------------------- requests


def test_the_reference_form_reads_as_the_same_request() -> None:
    """Attributes and named members decode to what the JSON request says."""
    expected = in_dialect(seed_doc(), DIALECT)
    expected["compute"]["volumes"][0]["mode"] = "READONLY"
    assert decode(reference_form_request(), XML) == as_xml_reads(expected)


def test_the_form_written_before_still_reads_as_the_same_request() -> None:
    """``<item>`` members and ``<kind>`` elements, as clients may have saved them, still read."""
    expected = in_dialect(seed_doc(), DIALECT)
    assert decode(legacy_xml(expected, "request"), XML) == as_xml_reads(expected)


async def test_a_reference_form_request_gets_execution_offers_with_kind_attributes(
    make_client: ClientFactory, skaha_platform: PlatformSettings
) -> None:
    """The seed example in the reference's XML → ``<offers><execution kind="…">``, and
    every component, volume, data resource and option with its ``kind`` attribute."""
    client = await make_client(platforms=[skaha_platform])
    response = await client.post("/requests", data=reference_form_request(), headers=XML_HEADERS)
    body = await response.read()
    assert response.status == 200, body.decode()
    root = SafeET.fromstring(body)
    assert root.tag == "offers-response"
    assert root.findtext("result") == "YES", body.decode()
    offers = root.findall("offers/execution")
    assert 1 <= len(offers) <= 4
    for offer in offers:
        assert offer.get("kind") == kind(Family.SESSION, "execution-session")
        assert offer.findtext("phase") == "OFFERED"
        executable = offer.find("executable")
        assert executable is not None
        assert executable.get("kind") == kind(Family.EXECUTABLE, "docker-container")
        assert [e.text for e in executable.findall("image/locations/location")] == [
            "images.canfar.net/skaha/base-notebook:latest"
        ]
        (volume,) = offer.findall("compute/volumes/volume")
        assert volume.get("kind") == kind(Family.VOLUME, "simple-volume-mount")
        assert volume.findtext("mode") == "READONLY"
        data = offer.findall("data/data")
        assert [item.get("kind") for item in data] == [kind(Family.DATA, "skao-data-resource")] * 2
        (phase,) = [
            o for o in offer.findall("meta/options/option") if o.findtext("path") == "phase"
        ]
        assert phase.get("kind") == "uri:enum-value-option"
        assert [value.text for value in phase.findall("values/value")] == ["ACCEPTED", "REJECTED"]


async def test_a_reference_form_update_accepts_an_offer(
    make_client: ClientFactory, skaha_platform: PlatformSettings
) -> None:
    """``<update kind="uri:enum-value-update">`` is read like its JSON."""
    client = await make_client(platforms=[skaha_platform])
    response = await client.post("/requests", data=reference_form_request(), headers=XML_HEADERS)
    offer = SafeET.fromstring(await response.read()).find("offers/execution")
    assert offer is not None
    uuid = offer.findtext("meta/uuid")
    update = (
        b'<update kind="uri:enum-value-update"><path>phase</path><value>ACCEPTED</value></update>'
    )
    response = await client.post(f"/sessions/{uuid}", data=update, headers=XML_HEADERS)
    body = await response.read()
    assert response.status == 200, body.decode()
    session = SafeET.fromstring(body)
    assert session.tag == "execution"
    assert session.get("kind") == kind(Family.SESSION, "execution-session")
    assert session.findtext("phase") not in ("OFFERED", "REJECTED")


async def test_a_request_in_the_form_written_before_is_still_accepted(
    make_client: ClientFactory, skaha_platform: PlatformSettings
) -> None:
    """The seed request with ``<item>`` lists and ``<kind>`` elements gets offers."""
    client = await make_client(platforms=[skaha_platform])
    body = legacy_xml(in_dialect(seed_doc(), DIALECT), "offers-request")
    assert b"<item>" in body
    response = await client.post("/requests", data=body, headers=XML_HEADERS)
    answer = await response.read()
    assert response.status == 200, answer.decode()
    assert SafeET.fromstring(answer).findtext("result") == "YES", answer.decode()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"<offers-request><executable kind='k'>", ["invalid XML", "no element found", "line 1"]),
        (
            f"<offers-request><executable kind='{PING}'><kind>{PING}</kind></executable>"
            "</offers-request>".encode(),
            ["/offers-request/executable has both an attribute and a child named 'kind'"],
        ),
        (
            f"<offers-request><executable kind='{PING}'><speed>9</speed></executable>"
            "</offers-request>".encode(),
            ["executable.speed"],
        ),
    ],
    ids=["malformed", "kind-twice", "unknown-field"],
)
async def test_a_bad_xml_body_is_a_400_naming_the_problem(
    client: Client, body: bytes, expected: list[str]
) -> None:
    """Broken XML, a ``kind`` given twice, an unknown field: 400, each saying which."""
    response = await client.post("/requests", data=body, headers=XML_HEADERS)
    assert response.status == 400
    root = SafeET.fromstring(await response.read())
    assert root.tag == "error"
    text = " ".join(e.text or "" for e in root.findall("messages/message/message"))
    for part in expected:
        assert part in text


# --------------------------------------------------------------------------- answers


async def test_every_answer_reads_back_from_xml_as_its_json(
    make_client: ClientFactory, skaha_platform: PlatformSettings
) -> None:
    """Offer set, offer, session, list, log, NO, refusal, error and capabilities:
    XML decodes to the JSON answer, with the reference's names throughout."""
    client = await make_client(platforms=[skaha_platform])
    request = in_dialect(seed_doc(), DIALECT)
    response = await client.post("/requests", json=request)
    offerset = await response.json()
    assert offerset["result"] == "YES", offerset
    uuid = offerset["offers"][0]["meta"]["uuid"]

    root = await answered_alike(client, "GET", f"/offersets/{offerset['meta']['uuid']}")
    assert root.tag == "offers-response"
    assert root.findall("offers/execution")
    root = await answered_alike(client, "GET", f"/sessions/{uuid}")
    assert (root.tag, root.findtext("phase")) == ("execution", "OFFERED")

    accept = {"kind": "uri:enum-value-update", "path": "phase", "value": "ACCEPTED"}
    assert (await client.post(f"/sessions/{uuid}", json=accept)).status == 200
    root = await answered_alike(client, "GET", f"/sessions/{uuid}")
    assert root.get("kind") == kind(Family.SESSION, "execution-session")
    root = await answered_alike(client, "GET", "/sessions", params={"offers": "true"})
    assert len(root.findall("sessions/execution")) == len(offerset["offers"])
    root = await answered_alike(client, "GET", f"/sessions/{uuid}/log")
    assert root.tag == "log"
    assert root.findall("history/transition")

    # A NO carries its reasons as <messages><message>, kind an element as the reference has it.
    too_big = in_dialect(seed_doc(), DIALECT)
    too_big["compute"]["cores"] = {"min": 100_000}
    response = await client.post("/requests", json=too_big)
    refused = await response.json()
    assert refused["result"] == "NO"
    root = await answered_alike(client, "GET", f"/offersets/{refused['meta']['uuid']}")
    message = root.find("meta/messages/message")
    assert message is not None
    assert message.findtext("kind", "").startswith("urn:talicada:")
    made = VOLATILE | {"uuid", "url"}
    root = await answered_alike(client, "POST", "/direct", made, json=too_big)
    assert (root.tag, root.findtext("phase")) == ("execution", "REJECTED")
    bad = {"Content-Type": "application/json"}
    root = await answered_alike(client, "POST", "/requests", data=b"{", headers=bad)
    assert root.tag == "error"
    root = await answered_alike(client, "GET", "/capabilities")
    assert root.findall("dialects/dialect")
    assert root.findall("kinds/executable/kind")


def test_every_document_type_round_trips_through_the_codec() -> None:
    """Encoded and decoded again, each document shape comes back as XML reads it."""
    session = {
        "kind": kind(Family.SESSION, "execution-session"),
        "meta": {
            "uuid": "u1",
            "messages": [{"kind": "urn:talicada:x", "values": {"path": "p"}, "message": "m"}],
            "options": [{"kind": "uri:enum-value-option", "path": "phase", "values": ["A", "B"]}],
        },
        "phase": "RUNNING",
        "executable": {"kind": "k", "command": ["run", 10], "environment": {"A": "1"}},
        "compute": {"kind": "c", "volumes": [{"kind": "v", "resources": ["d1"]}]},
        "storage": [{"kind": "s", "data": ["d1"]}],
        "data": [{"kind": "d", "storage": "s"}],
        "connectors": [{"kind": "urn:c", "protocol": "HTTP", "location": "http://x"}],
        "costs": [{"kind": "cost", "max": 1.5}],
        "metrics": [{"kind": "metric", "min": 2.0}],
        "exit_code": 0,
    }
    documents = {
        "execution": session,
        "offers-response": {"kind": "o", "result": "YES", "offers": [session, session]},
        "sessions": {"sessions": [session], "cursor": "c"},
        "log": {
            "session": session,
            "history": [{"from": "A", "to": "B"}],
            "messages": [{"about": "session", "kind": "urn:x"}],
            "output": {"stdout": "hi"},
        },
        "error": {"messages": [{"kind": "urn:talicada:error:x", "values": {"path": "p"}}]},
        "update": {"kind": "uri:integer-delta-update", "path": "p", "delta": -5},
        "capabilities": {"dialects": ["v1.0"], "kinds": {"data": ["u"], "executable": ["e"]}},
    }
    for root, document in documents.items():
        body = encode(document, XML, root=root)
        assert decode(body, XML) == as_xml_reads(document), body.decode()
    one = SafeET.fromstring(encode(documents["offers-response"], XML, root="offers-response"))
    assert [offer.get("kind") for offer in one.findall("offers/execution")] == [session["kind"]] * 2
    connector = one.find("offers/execution/connectors/connector")
    assert connector is not None
    assert connector.findtext("kind") == "urn:c"  # free text, an element as in the reference
