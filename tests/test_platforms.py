"""Platform feasibility and preparation estimates (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import yaml

from talicada.broker import platforms
from talicada.schema.validation import parse_request
from talicada.settings import LOCAL, PlatformSettings
from tests.conftest import EXAMPLES, SKAHA

NOW = datetime(2030, 1, 1, tzinfo=UTC)


def seed() -> object:
    return yaml.safe_load((EXAMPLES / "seed-notebook-request.yaml").read_text())


def test_each_unsupported_kind_is_one_reason_however_many_items_use_it() -> None:
    reasons = platforms.feasibility(LOCAL, parse_request(seed(), now=NOW))
    # Reasons name kinds by URI (what the API accepts); one reason per kind.
    kinds = sorted(reason.values["kind"].rsplit("/", 1)[-1] for reason in reasons)
    assert kinds == ["docker-container-1.0", "skao-data-resource-1.0"]


def test_a_platform_that_runs_containers_and_reaches_skao_data_has_no_objection() -> None:
    assert platforms.feasibility(SKAHA, parse_request(seed(), now=NOW)) == []


def test_sizes_beyond_a_platforms_session_limit_are_named() -> None:
    small = PlatformSettings(name="small", cores=8, max_cores=2, memory=16, max_memory=4)
    request = {
        "executable": {"kind": "urn:talicada:kinds:executable:ping-1.0"},
        "compute": {"cores": {"min": 3}, "memory": {"min": 5}},
    }
    reasons = platforms.feasibility(small, parse_request(request, now=NOW))
    assert [(r.values["resource"], r.values["limit"]) for r in reasons] == [
        ("cores", "2"),
        ("GiB of memory", "4"),
    ]


def test_preparation_is_the_critical_path_of_staging_and_caching() -> None:
    valid = parse_request(seed(), now=NOW)
    prep = SKAHA.preparation
    expected = prep.storage + max(prep.image["docker-container"], prep.data["skao-data-resource"])
    assert platforms.preparation(SKAHA, valid) == timedelta(seconds=expected + prep.launch)


def test_data_from_a_host_the_platform_may_not_fetch_from_is_named() -> None:
    fenced = PlatformSettings(name="fenced", data_hosts=["data.example.org"])
    request = {
        "executable": {"kind": "urn:talicada:kinds:executable:ping-1.0"},
        "data": [
            {
                "kind": "https://www.purl.org/ivoa.net/EB/schema/v1.0/types/data/simple-data-resource-1.0",
                "location": "http://169.254.169.254/latest/meta-data",
            }
        ],
    }
    (reason,) = platforms.feasibility(fenced, parse_request(request, now=NOW))
    assert reason.values["path"] == "data[0]"
    assert "data.example.org" in reason.message
