"""Tests for talicada.schema.codec: body framing and content negotiation."""

from __future__ import annotations

import datetime
import json
import time
from collections.abc import Callable

import pytest
import yaml

from talicada.schema import codec
from talicada.schema._xml_names import item_name
from talicada.schema.codec import (
    CodecError,
    Limits,
    MediaType,
    NotAcceptable,
    UnsupportedMediaType,
    content_type_header,
    decode,
    encode,
    media_type_for_content_type,
    negotiate,
)

JSON, YAML, XML = MediaType.JSON, MediaType.YAML, MediaType.XML


def _name(factory: object) -> str:
    return getattr(factory, "__name__", repr(factory))


@pytest.fixture(params=list(codec._YAML_LOADERS), ids=_name)
def yaml_loader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run a YAML test once per available loader (pure Python and, if present, libyaml)."""
    monkeypatch.setattr(codec, "_YAML_LOADERS", [request.param])


@pytest.fixture(params=list(codec._YAML_DUMPERS), ids=_name)
def yaml_dumper(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run a YAML encoding test once per available dumper."""
    monkeypatch.setattr(codec, "_YAML_DUMPERS", [request.param])


def _stringify(value: object) -> object:
    """What XML gives back for ``value``: every scalar as text."""
    if isinstance(value, dict):
        return {key: _stringify(member) for key, member in value.items()}
    if isinstance(value, list):
        return [_stringify(member) for member in value]
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return None
    return str(value)


def _error(body: bytes, media: MediaType, limits: Limits | None = None) -> str:
    with pytest.raises(CodecError) as caught:
        decode(body, media, limits or Limits())
    return str(caught.value)


# --------------------------------------------------------------------------- negotiation


@pytest.mark.parametrize(
    ("accept", "default", "expected"),
    [
        (None, JSON, JSON),
        ("", YAML, YAML),
        ("   ", XML, XML),
        ("*/*", JSON, JSON),
        ("*/*", YAML, YAML),
        ("application/json", YAML, JSON),
        ("application/yaml", JSON, YAML),
        ("application/x-yaml", JSON, YAML),
        ("text/yaml", JSON, YAML),
        ("text/x-yaml", JSON, YAML),
        ("application/xml", JSON, XML),
        ("text/xml", JSON, XML),
        ("APPLICATION/XML", JSON, XML),
        ("application/xml; charset=utf-8", JSON, XML),
        ("application/yaml;q=0.5, application/xml;q=0.9", JSON, XML),
        ("application/yaml;q=0.9, application/xml;q=0.5", JSON, YAML),
        ("application/yaml ; q=0.9 , application/json ; q=0.95", XML, JSON),
        ("application/yaml, application/json", XML, YAML),
        ("application/json, application/yaml", XML, JSON),
        ("*/*, application/xml", JSON, XML),
        ("application/*", JSON, JSON),
        ("application/*", XML, XML),
        ("text/*", JSON, YAML),
        ("text/*", XML, XML),
        ("*/*;q=0.1, application/json;q=0", JSON, YAML),
        ("application/json;q=0, */*", JSON, YAML),
        ("application/json;q=0.2, */*;q=0.1", YAML, JSON),
        ("text/html, application/xhtml+xml, application/xml;q=0.9, */*;q=0.8", JSON, XML),
        ("text/html;q=abc, application/json", YAML, JSON),
        ('application/json; profile="a,b;c"; q=0.2, text/xml;q=0.1', YAML, JSON),
        ("application/json;q=1.000", YAML, JSON),
        ("application/json;q=0.001, application/xml;q=0.0001", YAML, JSON),
    ],
)
def test_negotiate_picks_the_best_acceptable_type(
    accept: str | None, default: MediaType, expected: MediaType
) -> None:
    assert negotiate(accept, default) is expected


def test_negotiate_default_is_json() -> None:
    assert negotiate(None) is JSON
    assert negotiate("*/*") is JSON


@pytest.mark.parametrize(
    "accept",
    [
        "text/html",
        "application/json;q=0",
        "application/json;q=0, application/yaml;q=0.000, application/xml;q=0",
        "*/*;q=0",
        "image/*",
        "text/html, application/json;q=abc",
    ],
)
def test_negotiate_refuses_when_nothing_is_acceptable(accept: str) -> None:
    with pytest.raises(NotAcceptable) as caught:
        negotiate(accept)
    message = str(caught.value)
    assert repr(accept) in message
    assert "application/json, application/yaml, application/xml" in message
    assert isinstance(caught.value, CodecError)


@pytest.mark.parametrize("q", ["abc", "1.5", "2", "-1", "0.1234", ".5", ""])
def test_negotiate_ignores_a_range_with_a_malformed_q(q: str) -> None:
    assert negotiate(f"application/xml;q={q}, application/yaml;q=0.1") is YAML


def test_negotiate_treats_a_header_without_well_formed_ranges_as_absent() -> None:
    assert negotiate("nonsense", YAML) is YAML
    assert negotiate("application/json;q=high", XML) is XML
    assert negotiate("*/json", XML) is XML


def test_negotiate_error_does_not_echo_a_huge_header() -> None:
    accept = "text/html, " + "x/y, " * 1000
    with pytest.raises(NotAcceptable) as caught:
        negotiate(accept)
    assert len(str(caught.value)) < 400


# --------------------------------------------------------------------------- content types


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, JSON),
        ("", JSON),
        ("  ", JSON),
        ("application/json", JSON),
        ("Application/JSON; charset=UTF-8", JSON),
        ("application/json;charset=utf8", JSON),
        ("application/json; charset=us-ascii", JSON),
        ("application/problem+json", JSON),
        ("application/vnd.example.job+json; version=2", JSON),
        ("application/yaml", YAML),
        ("application/x-yaml", YAML),
        ("text/yaml", YAML),
        ("text/x-yaml; charset=utf-8", YAML),
        ("application/vnd.example+yaml", YAML),
        ("application/xml", XML),
        ("text/xml", XML),
        ('text/xml; charset="utf-8"', XML),
        ("application/atom+xml", XML),
    ],
)
def test_content_type_maps_to_media_type(header: str | None, expected: MediaType) -> None:
    assert media_type_for_content_type(header) is expected


@pytest.mark.parametrize(
    "header",
    [
        "text/plain",
        "application/octet-stream",
        "multipart/form-data; boundary=x",
        "json",
        "text/json",
    ],
)
def test_unsupported_content_type_is_refused_naming_type_and_alternatives(header: str) -> None:
    with pytest.raises(UnsupportedMediaType) as caught:
        media_type_for_content_type(header)
    message = str(caught.value)
    assert header.split(";")[0] in message
    assert "application/json, application/yaml, application/xml" in message


@pytest.mark.parametrize("charset", ["latin-1", "ISO-8859-1", "utf-16", '"windows-1252"'])
def test_content_type_with_non_utf8_charset_is_refused(charset: str) -> None:
    with pytest.raises(UnsupportedMediaType, match="charset") as caught:
        media_type_for_content_type(f"application/json; charset={charset}")
    assert charset.strip('"').lower() in str(caught.value)


def test_content_type_header_for_each_media_type() -> None:
    assert content_type_header(JSON) == "application/json"
    assert content_type_header(YAML) == "application/yaml; charset=utf-8"
    assert content_type_header(XML) == "application/xml; charset=utf-8"


def test_response_content_types_are_readable_back() -> None:
    for media in MediaType:
        assert media_type_for_content_type(content_type_header(media)) is media


# --------------------------------------------------------------------------- decoding

_JSON_DOC = b"""{
  "kind": "job",
  "name": "reduce-ms",
  "priority": 3,
  "fraction": 0.25,
  "interactive": false,
  "tags": ["a", "b"],
  "single": ["only"],
  "resources": {"cores": 4, "memory": "8GiB", "gpus": []},
  "steps": [{"run": "x", "args": ["--fast"]}, {"run": "y", "args": []}],
  "when": "2025-11-06T11:09:50Z"
}"""

_YAML_DOC = b"""\
kind: job
name: reduce-ms
priority: 3
fraction: 0.25
interactive: false
tags: [a, b]
single:
  - only
resources:
  cores: 4
  memory: 8GiB
  gpus: []
steps:
  - run: x
    args: [--fast]
  - run: "y"
    args: []
when: 2025-11-06T11:09:50Z
"""

_XML_DOC = b"""<?xml version="1.0" encoding="UTF-8"?>
<job xmlns="urn:example:talicada">
  <kind>job</kind>
  <name>reduce-ms</name>
  <priority>3</priority>
  <fraction>0.25</fraction>
  <interactive>false</interactive>
  <tags>a</tags>
  <tags>b</tags>
  <single><item>only</item></single>
  <resources cores="4">
    <memory>8GiB</memory>
    <gpus><item/></gpus>
  </resources>
  <steps>
    <item><run>x</run><args><item>--fast</item></args></item>
    <item><run>y</run><args/></item>
  </steps>
  <when>2025-11-06T11:09:50Z</when>
</job>
"""


def test_same_document_decodes_equally_from_json_yaml_and_xml(yaml_loader: None) -> None:
    from_json = decode(_JSON_DOC, JSON)
    assert from_json == decode(_YAML_DOC, YAML)
    from_xml = decode(_XML_DOC, XML)
    # XML cannot tell an empty list from nothing, so align those two spots.
    assert isinstance(from_xml, dict)
    from_xml["resources"]["gpus"] = []
    from_xml["steps"][1]["args"] = []
    assert _stringify(from_json) == from_xml


@pytest.mark.parametrize(
    ("media", "body", "fragments"),
    [
        (JSON, b'{"a": 1,}', ["invalid JSON", "trailing comma", "byte 8"]),
        (JSON, b'{"a": 1} {}', ["invalid JSON", "trailing characters"]),
        (JSON, b'{"a": tru}', ["invalid JSON", "byte"]),
        (JSON, b'{"a": [1, 2}', ["invalid JSON"]),
        (JSON, b'{"a": "\xff"}', ["not valid UTF-8", "byte"]),
        (YAML, b"a: [1, 2\nb: 3\n", ["invalid YAML", "line", "column"]),
        (YAML, b"a: 1\n b: 2\n", ["invalid YAML", "line 2", "column"]),
        (YAML, b"a:\n  - 1\n  b: 2\n", ["invalid YAML", "line 3"]),
        (YAML, b'a: "unterminated\n', ["invalid YAML", "line"]),
        (YAML, b"a: \x01\n", ["invalid YAML", "unacceptable character"]),
        (YAML, b"a: \xff\n", ["not valid UTF-8", "byte 3"]),
        (XML, b"<r><a>1</r>", ["invalid XML", "mismatched tag", "line 1", "column"]),
        (XML, b"<r>\n<a>1</a>\n<b>", ["invalid XML", "line 3"]),
        (XML, b"<r/><r/>", ["invalid XML", "junk after document element"]),
        (XML, b"<r>&nbsp;</r>", ["invalid XML", "undefined entity"]),
        (XML, b"<r>\xff</r>", ["not valid UTF-8", "byte 3"]),
        (XML, b"not xml at all", ["invalid XML", "syntax error"]),
    ],
)
def test_malformed_body_gives_a_useful_codec_error(
    media: MediaType, body: bytes, fragments: list[str], yaml_loader: None
) -> None:
    message = _error(body, media)
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize(
    ("media", "body", "kind"),
    [
        (JSON, b"[1, 2]", "a list"),
        (JSON, b'"text"', "a string"),
        (JSON, b"42", "a number"),
        (JSON, b"null", "empty (null)"),
        (YAML, b"- 1\n- 2\n", "a list"),
        (YAML, b"just text\n", "a string"),
        (YAML, b"# only a comment\n", "empty (null)"),
        (YAML, b"true\n", "a boolean"),
        (XML, b"<r>text</r>", "a string"),
        (XML, b"<r><item>1</item><item>2</item></r>", "a list"),
    ],
)
def test_top_level_must_be_an_object(
    media: MediaType, body: bytes, kind: str, yaml_loader: None
) -> None:
    assert _error(body, media) == f"the body must be an object, not {kind}"


@pytest.mark.parametrize("media", list(MediaType))
@pytest.mark.parametrize("body", [b"", b"  \n\t"])
def test_empty_body_is_refused(media: MediaType, body: bytes) -> None:
    assert "the body is empty" in _error(body, media)


@pytest.mark.parametrize(
    ("media", "body"),
    [(JSON, b'{"a": "b"}'), (YAML, b"a: b\n"), (XML, b"<r><a>b</a></r>")],
)
def test_utf8_byte_order_mark_is_accepted(media: MediaType, body: bytes) -> None:
    assert decode(b"\xef\xbb\xbf" + body, media) == {"a": "b"}


@pytest.mark.parametrize("media", list(MediaType))
def test_utf16_body_is_refused(media: MediaType) -> None:
    body = {JSON: '{"a": "b"}', YAML: "a: b\n", XML: "<r><a>b</a></r>"}[media]
    assert "UTF-8" in _error(body.encode("utf-16"), media)


def test_non_ascii_text_survives_decoding() -> None:
    assert decode('{"name": "Ångström ✓"}'.encode(), JSON) == {"name": "Ångström ✓"}
    assert decode("name: Ångström ✓\n".encode(), YAML) == {"name": "Ångström ✓"}
    assert decode("<r><name>Ångström ✓</name></r>".encode(), XML) == {"name": "Ångström ✓"}


# --------------------------------------------------------------------------- limits


def _nested_json(depth: int) -> bytes:
    return b'{"a":' * (depth - 1) + b"{}" + b"}" * (depth - 1)


def _nested_yaml(depth: int) -> bytes:
    return b"a: " + b"[" * (depth - 1) + b"]" * (depth - 1) + b"\n"


def _nested_xml(depth: int) -> bytes:
    return b"<a>" * depth + b"<b>x</b>" + b"</a>" * depth


@pytest.mark.parametrize(
    ("media", "nested"),
    [(JSON, _nested_json), (YAML, _nested_yaml), (XML, _nested_xml)],
)
def test_depth_limit_allows_max_depth_and_refuses_one_more(
    media: MediaType, nested: Callable[[int], bytes], yaml_loader: None
) -> None:
    limits = Limits(max_depth=8)
    decode(nested(8), media, limits)
    assert _error(nested(9), media, limits) == "the body nests deeper than max_depth=8 levels"


@pytest.mark.parametrize(
    ("media", "nested"),
    [(JSON, _nested_json), (YAML, _nested_yaml), (XML, _nested_xml)],
)
def test_very_deep_nesting_is_refused_as_a_codec_error(
    media: MediaType, nested: Callable[[int], bytes], yaml_loader: None
) -> None:
    # Deep enough to exhaust recursion in a recursive parser or walker.
    message = _error(nested(20_000), media)
    assert "nest" in message


@pytest.mark.parametrize(
    ("media", "body"),
    [
        (JSON, b'{"a": [1, 2, 3, 4, 5, 6, 7, 8]}'),
        (YAML, b"a: [1, 2, 3, 4, 5, 6, 7, 8]\n"),
        (XML, b"<r><a>1</a><a>2</a><a>3</a><a>4</a><a>5</a><a>6</a><a>7</a><a>8</a></r>"),
    ],
)
def test_item_limit_counts_containers_and_scalars(
    media: MediaType, body: bytes, yaml_loader: None
) -> None:
    # root object + list + 8 scalars = 10 items
    decode(body, media, Limits(max_items=10))
    assert _error(body, media, Limits(max_items=9)) == "the body has more than max_items=9 items"


def test_item_limit_refuses_a_huge_flat_list() -> None:
    body = b'{"a": [' + b",".join([b"0"] * 20_000) + b"]}"
    assert "max_items=10000" in _error(body, JSON)


@pytest.mark.parametrize(
    ("media", "template"),
    [(JSON, '{"a": "%s"}'), (YAML, "a: %s\n"), (XML, "<r><a>%s</a></r>")],
)
def test_string_limit_applies_to_values(media: MediaType, template: str, yaml_loader: None) -> None:
    limits = Limits(max_string=5)
    assert decode((template % "abcde").encode(), media, limits) == {"a": "abcde"}
    message = _error((template % "abcdef").encode(), media, limits)
    assert message == "a string in the body is longer than max_string=5 characters"


@pytest.mark.parametrize(
    ("media", "body"),
    [(JSON, b'{"abcdef": 1}'), (YAML, b"abcdef: 1\n"), (XML, b"<r><abcdef>1</abcdef></r>")],
)
def test_string_limit_applies_to_keys(media: MediaType, body: bytes, yaml_loader: None) -> None:
    assert "a key in the body is longer than max_string=5" in _error(
        body, media, Limits(max_string=5)
    )


def test_string_limit_counts_characters_not_bytes() -> None:
    assert decode('{"a": "ÅÅÅ"}'.encode(), JSON, Limits(max_string=3)) == {"a": "ÅÅÅ"}


@pytest.mark.parametrize("media", list(MediaType))
def test_byte_limit_is_checked_before_parsing(media: MediaType) -> None:
    message = _error(b"x" * 101, media, Limits(max_bytes=100))
    assert message == "the body is larger than max_bytes=100 bytes"


def test_default_limits() -> None:
    limits = Limits()
    assert (limits.max_depth, limits.max_items, limits.max_string) == (32, 10_000, 65_536)
    decode(_nested_json(32), JSON)
    assert "max_depth=32" in _error(_nested_json(33), JSON)


@pytest.mark.parametrize("field", ["max_depth", "max_items", "max_string", "max_bytes"])
def test_limits_must_be_positive(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        Limits(**{field: 0})


# --------------------------------------------------------------------------- YAML specifics


@pytest.mark.parametrize(
    "word", ["YES", "NO", "yes", "no", "Yes", "No", "on", "off", "ON", "Off", "y", "n", "Y", "N"]
)
def test_yaml_11_booleans_stay_strings(word: str, yaml_loader: None) -> None:
    assert decode(f"result: {word}\n".encode(), YAML) == {"result": word}


@pytest.mark.parametrize(
    ("word", "value"),
    [("true", True), ("True", True), ("TRUE", True), ("false", False), ("False", False)],
)
def test_yaml_core_booleans_are_booleans(word: str, value: bool, yaml_loader: None) -> None:
    assert decode(f"flag: {word}\n".encode(), YAML) == {"flag": value}


@pytest.mark.parametrize(
    "text",
    ["2025-11-06T11:09:50Z", "2025-11-06", "2025-11-06 11:09:50", "2025-11-06T11:09:50.5+01:00"],
)
def test_yaml_timestamps_stay_strings(text: str, yaml_loader: None) -> None:
    assert decode(f"when: {text}\n".encode(), YAML) == {"when": text}


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0", 0),
        ("-17", -17),
        ("+3", 3),
        ("0x1F", 31),
        ("0o17", 15),
        ("1.5", 1.5),
        ("-.5", -0.5),
        ("1e3", 1000.0),
        ("1.0e+17", 1.0e17),
        ("~", None),
        ("null", None),
        ("NULL", None),
        ("", None),
    ],
)
def test_yaml_core_scalars_resolve(text: str, value: object, yaml_loader: None) -> None:
    assert decode(f"v: {text}\n".encode(), YAML) == {"v": value}


def test_yaml_special_floats_resolve(yaml_loader: None) -> None:
    data = decode(b"a: .inf\nb: -.Inf\nc: .NaN\n", YAML)
    assert isinstance(data, dict)
    assert data["a"] == float("inf")
    assert data["b"] == float("-inf")
    assert data["c"] != data["c"]


@pytest.mark.parametrize(
    "text",
    ["0000", "007", "010", "1:30", "190:20:30", "1_000", "0b101", "-0o17", "12e", ".", "1.2.3"],
)
def test_yaml_ambiguous_numbers_stay_strings(text: str, yaml_loader: None) -> None:
    assert decode(f"v: {text}\n".encode(), YAML) == {"v": text}


def test_yaml_explicit_core_tags_are_honoured(yaml_loader: None) -> None:
    body = b'a: !!int "010"\nb: !!float 1\nc: !!str 12\nd: !!bool "true"\ne: !!null ""\n'
    assert decode(body, YAML) == {"a": 10, "b": 1.0, "c": "12", "d": True, "e": None}


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"a: !!binary aGVsbG8=\n", "'tag:yaml.org,2002:binary' is not accepted"),
        (b"a: !!timestamp 2025-01-01\n", "'tag:yaml.org,2002:timestamp' is not accepted"),
        (b"a: !!set {x: null}\n", "'tag:yaml.org,2002:set' is not accepted"),
        (b"a: !!omap [x: 1]\n", "'tag:yaml.org,2002:omap' is not accepted"),
        (b"a: !!python/object/apply:os.system [ls]\n", "python/object/apply:os.system"),
        (b"a: !local x\n", "'!local' is not accepted"),
        (b"a: !!bool yes\n", "'yes' is not a valid boolean"),
        (b"a: !!int 1.5\n", "'1.5' is not a valid integer"),
        (b"a: !!float abc\n", "'abc' is not a valid float"),
        (b"a: !!null x\n", "'x' is not a valid null"),
    ],
)
def test_yaml_other_tags_are_refused(body: bytes, fragment: str, yaml_loader: None) -> None:
    message = _error(body, YAML)
    assert fragment in message
    assert "line 1, column 4" in message


def test_yaml_aliases_are_refused(yaml_loader: None) -> None:
    message = _error(b"base: &b {cores: 4}\njob: *b\n", YAML)
    assert message.startswith("YAML aliases are not accepted")
    assert "line 1" in message


def test_yaml_recursive_alias_is_refused(yaml_loader: None) -> None:
    assert "YAML aliases are not accepted" in _error(b"a: &r [*r]\n", YAML)


def test_yaml_merge_keys_are_plain_keys(yaml_loader: None) -> None:
    assert decode(b"<<: {a: 1}\n", YAML) == {"<<": {"a": 1}}
    assert "YAML aliases are not accepted" in _error(b"x: &x {a: 1}\ny:\n  <<: *x\n", YAML)


def test_yaml_billion_laughs_is_refused_quickly(yaml_loader: None) -> None:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for previous, name in zip("abcdefgh", "bcdefghi", strict=True):
        refs = ",".join([f"*{previous}"] * 9)
        lines.append(f"{name}: &{name} [{refs}]")
    body = ("\n".join(lines) + "\n").encode()
    started = time.perf_counter()
    assert "YAML aliases are not accepted" in _error(body, YAML)
    assert time.perf_counter() - started < 0.5


@pytest.mark.parametrize(
    "body",
    [b"a: 1\n---\nb: 2\n", b"---\na: 1\n---\n", b"a: 1\n...\n---\na: 2\n"],
)
def test_yaml_multiple_documents_are_refused(body: bytes, yaml_loader: None) -> None:
    assert _error(body, YAML) == "the body must be a single YAML document, not several"


def test_yaml_explicit_single_document_is_accepted(yaml_loader: None) -> None:
    assert decode(b"%YAML 1.2\n---\na: 1\n...\n", YAML) == {"a": 1}


@pytest.mark.parametrize(
    "body",
    [b"1: a\n", b"true: a\n", b"~: a\n", b"a:\n  2.5: b\n", b"? [a, b]\n: c\n", b"{x: {1: y}}\n"],
)
def test_yaml_keys_must_be_strings(body: bytes, yaml_loader: None) -> None:
    message = _error(body, YAML)
    assert message.startswith("mapping keys must be strings (line")


def test_yaml_quoted_keys_that_look_like_numbers_are_strings(yaml_loader: None) -> None:
    assert decode(b'"1": a\n!!str 2: b\n', YAML) == {"1": "a", "2": "b"}


def test_yaml_duplicate_keys_are_refused(yaml_loader: None) -> None:
    message = _error(b"a: 1\nb: 2\na: 3\n", YAML)
    assert message == "duplicate key 'a' (line 3, column 1)"


def test_yaml_loader_does_not_change_pyyaml_globally(yaml_loader: None) -> None:
    decode(b"a: yes\n", YAML)
    assert yaml.safe_load("a: yes\nb: 2025-01-01\n") == {"a": True, "b": datetime.date(2025, 1, 1)}


# --------------------------------------------------------------------------- XML specifics


def test_xml_mapping_convention() -> None:
    body = b"""<request id="r1">
      <single>one</single>
      <empty/>
      <blank>   </blank>
      <padded>  two  </padded>
      <repeated>a</repeated>
      <repeated>b</repeated>
      <list><item>x</item></list>
      <nested><item><item>1</item></item><item><k>v</k></item><item/></nested>
      <obj kind="k"><n>1</n></obj>
    </request>"""
    assert decode(body, XML) == {
        "id": "r1",
        "single": "one",
        "empty": None,
        "blank": None,
        "padded": "two",
        "repeated": ["a", "b"],
        "list": ["x"],
        "nested": [["1"], {"k": "v"}, None],
        "obj": {"kind": "k", "n": "1"},
    }


def test_xml_lists_are_read_from_members_named_for_one_of_them_or_item() -> None:
    """``<offers><execution/>``, ``<volumes><volume/>`` and ``<x><item/>`` are all lists,
    one member or many; ``kind`` reads the same as an attribute or an element."""
    body = b"""<r>
      <offers><execution kind="s"><phase>OFFERED</phase></execution></offers>
      <volumes><volume kind="v"/><volume kind="w"/></volumes>
      <command><argument>run</argument></command>
      <old><item>x</item></old>
      <data><data kind="d"><storage>s</storage></data></data>
      <executable><kind>e</kind></executable>
    </r>"""
    assert decode(body, XML) == {
        "offers": [{"kind": "s", "phase": "OFFERED"}],
        "volumes": [{"kind": "v"}, {"kind": "w"}],
        "command": ["run"],
        "old": ["x"],
        "data": [{"kind": "d", "storage": "s"}],
        "executable": {"kind": "e"},
    }


def test_xml_answers_use_the_reference_names() -> None:
    """Members named for one of their list, ``kind`` an attribute but in messages."""
    data = {
        "kind": "k",
        "offers": [{"kind": "s", "meta": {"messages": [{"kind": "m", "message": "hi"}]}}],
        "executable": {"kind": "e", "command": ["a", "b"]},
        "ports": [{"external": {"tcp": ["x"]}}],
    }
    body = encode(data, XML, root="offers-response").decode()
    assert body.endswith(
        '<offers-response kind="k"><offers><execution kind="s"><meta><messages><message>'
        "<kind>m</kind><message>hi</message></message></messages></meta></execution></offers>"
        '<executable kind="e"><command><argument>a</argument><argument>b</argument></command>'
        "</executable><ports><port><external><tcp><item>x</item></tcp></external></port></ports>"
        "</offers-response>"
    )
    assert decode(body.encode(), XML) == data


@pytest.mark.parametrize(
    ("name", "member"),
    [
        ("offers", "execution"),
        ("sessions", "execution"),
        ("messages", "message"),
        ("costs", "cost"),
        ("volumes", "volume"),
        ("storage", "storage"),
        ("data", "data"),
        ("command", "argument"),
        ("history", "transition"),
        ("replicas", "replica"),
        ("entries", "entry"),
        ("tcp", "item"),
        ("status", "item"),
    ],
)
def test_xml_list_members_are_named_by_one_table_then_by_singulars(name: str, member: str) -> None:
    assert item_name(name) == member


def test_xml_empty_root_is_an_empty_object() -> None:
    assert decode(b"<request/>", XML) == {}
    assert decode(b"<request>  </request>", XML) == {}


def test_xml_root_name_is_ignored() -> None:
    assert decode(b"<anything><a>1</a></anything>", XML) == {"a": "1"}


def test_xml_namespaces_are_stripped() -> None:
    body = b'<t:job xmlns:t="urn:t" xmlns:u="urn:u"><t:a u:x="1"><u:b>2</u:b></t:a></t:job>'
    assert decode(body, XML) == {"a": {"x": "1", "b": "2"}}


def test_xml_item_children_with_attributes_make_an_object() -> None:
    assert decode(b'<r><l n="2"><item>a</item><item>b</item></l></r>', XML) == {
        "l": {"n": "2", "item": ["a", "b"]}
    }


@pytest.mark.parametrize(
    ("body", "path"),
    [
        (b"<r><a>text<b>1</b></a></r>", "/r/a"),
        (b"<r><a><b>1</b>tail</a></r>", "/r/a"),
        (b'<r><a unit="s">10</a></r>', "/r/a"),
        (b"<r>text<a>1</a></r>", "/r"),
        (b"<r><l><item>1</item>x<item>2</item></l></r>", "/r/l"),
    ],
)
def test_xml_mixed_content_is_refused(body: bytes, path: str) -> None:
    assert f"XML element {path} mixes text" in _error(body, XML)


def test_xml_attribute_and_child_with_the_same_name_are_refused() -> None:
    message = _error(b'<r><a b="1"><b>2</b></a></r>', XML)
    assert "XML element /r/a has both an attribute and a child named 'b'" in message


def test_xml_namespaced_attributes_with_the_same_local_name_are_refused() -> None:
    body = b'<r xmlns:p="urn:p" xmlns:q="urn:q"><a p:x="1" q:x="2"><y>1</y></a></r>'
    assert "two attributes with the same name" in _error(body, XML)


def test_xml_comments_and_processing_instructions_are_ignored() -> None:
    body = b"<?xml version='1.0'?><!-- hi --><r><a>1<!-- c -->2</a><?pi x?></r>"
    assert decode(body, XML) == {"a": "12"}


def test_xml_billion_laughs_is_refused_quickly() -> None:
    entities = ['<!ENTITY lol "lol">']
    for level in range(1, 10):
        previous = "lol" if level == 1 else f"lol{level - 1}"
        entities.append(f'<!ENTITY lol{level} "{("&" + previous + ";") * 10}">')
    body = (
        '<?xml version="1.0"?><!DOCTYPE lolz [' + "".join(entities) + "]><lolz>&lol9;</lolz>"
    ).encode()
    started = time.perf_counter()
    assert _error(body, XML) == "XML entities/DTDs are not accepted"
    assert time.perf_counter() - started < 0.5


@pytest.mark.parametrize(
    "body",
    [
        b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
        b"<r><a>&xxe;</a></r>",
        b'<!DOCTYPE r [<!ENTITY e "expanded">]><r><a>&e;</a></r>',
        b'<!DOCTYPE r [<!ENTITY % p SYSTEM "http://example.invalid/x.dtd"> %p;]><r/>',
        b'<!DOCTYPE r SYSTEM "http://example.invalid/r.dtd"><r/>',
        b"<!DOCTYPE r><r><a>1</a></r>",
    ],
    ids=["xxe", "internal-entity", "parameter-entity", "external-dtd", "bare-doctype"],
)
def test_xml_entities_and_dtds_are_refused(body: bytes) -> None:
    assert _error(body, XML) == "XML entities/DTDs are not accepted"


def test_xml_character_references_are_fine() -> None:
    assert decode(b"<r><a>&lt;&#65;&amp;&#x42;&gt;</a></r>", XML) == {"a": "<A&B>"}


@pytest.mark.parametrize("encoding", ["ISO-8859-1", "utf-16", "windows-1252"])
def test_xml_declared_non_utf8_encoding_is_refused(encoding: str) -> None:
    body = f'<?xml version="1.0" encoding="{encoding}"?><r><a>1</a></r>'.encode()
    message = _error(body, XML)
    assert encoding in message
    assert "must be UTF-8" in message


@pytest.mark.parametrize("encoding", ["UTF-8", "utf-8", "US-ASCII"])
def test_xml_declared_utf8_encoding_is_accepted(encoding: str) -> None:
    body = f"<?xml version='1.0' encoding='{encoding}'?><r><a>1</a></r>".encode()
    assert decode(body, XML) == {"a": "1"}


# --------------------------------------------------------------------------- encoding

_DATA: dict[str, object] = {
    "kind": "job",
    "count": 3,
    "ratio": 0.5,
    "big": 1.0e17,
    "negative": -2,
    "enabled": True,
    "disabled": False,
    "tags": ["a", "b"],
    "single": ["only"],
    "nested": {"steps": [{"run": "x", "args": ["--fast", "-v"]}, [1, [2, 3]]], "deep": {"x": "y"}},
    "text": "quotes \" and ' and <tags> & ampersands: colon # hash",
    "unicode": "Ångström ✓ 日本",
    "multiline": "line one\nline two",
}


@pytest.mark.parametrize("media", [JSON, YAML])
def test_encode_decode_round_trips_json_and_yaml(
    media: MediaType, yaml_loader: None, yaml_dumper: None
) -> None:
    assert decode(encode(_DATA, media), media) == _DATA


def test_encode_decode_round_trips_xml_as_strings() -> None:
    assert decode(encode(_DATA, XML), XML) == _stringify(_DATA)


def test_encode_json_is_compact_utf8() -> None:
    assert encode({"a": [1, "é"], "b": None}, JSON) == '{"a":[1,"é"],"b":null}'.encode()


@pytest.mark.parametrize(
    "text",
    [
        "YES",
        "NO",
        "yes",
        "on",
        "Off",
        "y",
        "N",
        "true",
        "False",
        "null",
        "~",
        "",
        "0000",
        "007",
        "010",
        "0o17",
        "0x1F",
        "12",
        "1.5",
        "1e3",
        ".inf",
        ".NaN",
        "1:30",
        "1_000",
        "2025-11-06T11:09:50Z",
        "2025-11-06",
        "<<",
        "=",
        "- dash",
        "key: value",
        "#hash",
        " padded ",
    ],
)
def test_yaml_encoded_strings_read_back_as_strings(
    text: str, yaml_loader: None, yaml_dumper: None
) -> None:
    body = encode({"value": text, text: "key"}, YAML)
    assert yaml.safe_load(body) == {"value": text, text: "key"}
    assert decode(body, YAML) == {"value": text, text: "key"}


def test_yaml_encoding_is_block_style_in_insertion_order() -> None:
    body = encode({"zeta": 1, "alpha": {"b": [1, 2]}, "when": "YES"}, YAML)
    assert body.decode() == "zeta: 1\nalpha:\n  b:\n  - 1\n  - 2\nwhen: 'YES'\n"


def test_yaml_encoding_keeps_unicode_readable() -> None:
    assert encode({"name": "Ångström"}, YAML) == "name: Ångström\n".encode()


def test_xml_encoding_layout() -> None:
    data = {"kind": "job", "ok": True, "no": False, "gone": None, "n": 2, "l": ["a"], "tags": ["b"]}
    body = encode(data, XML)
    assert body == (
        b"<?xml version='1.0' encoding='utf-8'?>\n"
        b'<response kind="job"><ok>true</ok><no>false</no><n>2</n>'
        b"<l><item>a</item></l><tags><tag>b</tag></tags></response>"
    )


def test_xml_encoding_uses_the_root_name() -> None:
    assert encode({"a": "1"}, XML, root="job").endswith(b"<job><a>1</a></job>")


def test_xml_encoding_keeps_none_list_members_in_place() -> None:
    assert decode(encode({"l": ["a", None, "b"]}, XML), XML) == {"l": ["a", None, "b"]}


def test_xml_encoding_escapes_markup() -> None:
    body = encode({"a": "<b>&amp;</b>"}, XML)
    assert b"&lt;b&gt;&amp;amp;&lt;/b&gt;" in body
    assert decode(body, XML) == {"a": "<b>&amp;</b>"}


def test_xml_encoding_replaces_characters_xml_cannot_carry() -> None:
    body = encode({"a": "x\x00y\x1bz\ufffe", "b": "tab\tkept"}, XML)
    assert decode(body, XML) == {"a": "x\ufffdy\ufffdz\ufffd", "b": "tab\tkept"}


def test_xml_encoding_refuses_keys_that_are_not_element_names() -> None:
    with pytest.raises(ValueError, match="cannot be written as an XML element name"):
        encode({"not a name": 1}, XML)
    with pytest.raises(ValueError, match="cannot be written as an XML element name"):
        encode({"a": 1}, XML, root="1bad")


def test_datetimes_encode_identically_in_every_format() -> None:
    when = datetime.datetime(2025, 11, 6, 11, 9, 50, tzinfo=datetime.UTC)
    assert json.loads(encode({"when": when}, JSON)) == {"when": "2025-11-06T11:09:50Z"}
    assert decode(encode({"when": when}, YAML), YAML) == {"when": "2025-11-06T11:09:50Z"}
    assert decode(encode({"when": when}, XML), XML) == {"when": "2025-11-06T11:09:50Z"}


def test_tuples_encode_as_lists_in_every_format() -> None:
    assert decode(encode({"t": (1, 2)}, JSON), JSON) == {"t": [1, 2]}
    assert decode(encode({"t": (1, 2)}, YAML), YAML) == {"t": [1, 2]}
    assert decode(encode({"t": (1, 2)}, XML), XML) == {"t": ["1", "2"]}


@pytest.mark.parametrize("media", list(MediaType))
def test_encode_refuses_values_that_are_not_plain_data(media: MediaType) -> None:
    with pytest.raises(TypeError):
        encode({"a": object()}, media)


def test_xml_lists_of_kinds_are_named_by_where_they_are() -> None:
    """/capabilities lists kind URIs by family: ``<kinds><executable><kind>``."""
    body = encode({"kinds": {"executable": ["a", "b"], "costs": ["c"]}}, XML, root="capabilities")
    assert b"<kinds><executable><kind>a</kind><kind>b</kind></executable>" in body
    assert b"<costs><kind>c</kind></costs>" in body
    assert decode(body, XML) == {"kinds": {"executable": ["a", "b"], "costs": ["c"]}}
    # Elsewhere an executable is a component, and its <kind> is one of its fields.
    assert decode(b"<r><executable><kind>a</kind></executable></r>", XML) == {
        "executable": {"kind": "a"}
    }
