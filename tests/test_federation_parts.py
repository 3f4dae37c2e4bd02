"""The parts of federation on their own: settings, faults, capabilities, caches, index."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from talicada.federation import faults
from talicada.federation.cache import TtlCache, answer_ttl, max_age, request_key
from talicada.federation.capabilities import describe, refusals
from talicada.federation.index import Index, MemoryIndex, RedisIndex, RemoteSession
from talicada.schema.validation import parse_request
from talicada.settings import PlatformSettings, SettingsError, load

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _request(kind: str, cores: int = 1) -> object:
    doc = {
        "executable": {"kind": f"urn:talicada:kinds:executable:{kind}-1.0"},
        "compute": {"cores": {"min": cores}},
    }
    return parse_request(doc, now=NOW)


# -- settings ---------------------------------------------------------------------------------


def test_a_platform_with_remote_in_the_config_file_becomes_a_remote_platform(
    tmp_path: Path,
) -> None:
    """``[[platforms]]`` tables with ``remote`` are aggregated sites, not local platforms."""
    config = tmp_path / "talicada.toml"
    config.write_text(
        '[[platforms]]\nname = "here"\n\n'
        '[[platforms]]\nname = "far"\nremote = "http://far.example:8082"\n'
        'token_file = "/run/far.token"\ntimeout = 2.5\noffers = 2\n\n'
        '[federation]\noffers_per_site = 1\ntrusted = ["aggregator"]\n'
    )
    settings = load(config, environ={})
    assert [p.name for p in settings.platforms] == ["here"]
    (far,) = settings.remote_platforms
    assert (far.name, far.url, far.token_file, far.timeout, far.offers) == (
        "far",
        "http://far.example:8082",
        "/run/far.token",
        2.5,
        2,
    )
    assert settings.federation.trusted == ["aggregator"]


def test_an_aggregator_needs_no_local_platform_but_names_stay_unique(tmp_path: Path) -> None:
    """Only remote platforms is a valid aggregator; a name used twice is refused."""
    config = tmp_path / "talicada.toml"
    config.write_text('[[platforms]]\nname = "far"\nremote = "http://far.example"\n')
    assert load(config, environ={}).platforms == []
    config.write_text(
        '[[platforms]]\nname = "far"\n\n[[platforms]]\nname = "far"\nremote = "http://x"\n'
    )
    with pytest.raises(SettingsError, match="unique"):
        load(config, environ={})
    config.write_text('[[platforms]]\nname = "far"\nremote = "ftp://x"\n')
    with pytest.raises(SettingsError, match="remote_platforms"):
        load(config, environ={})


# -- faults ------------------------------------------------------------------------------------


def test_faults_are_read_from_the_header() -> None:
    """Each comma-separated fault has its parameters; bad ones are refused by name."""
    found = faults.parse(["delay=1.5; path=/requests, status=503; method=GET; site=b/c", "drop"])
    assert found == [
        faults.Fault(delay=1.5, path="/requests"),
        faults.Fault(status=503, method="GET", site="b/c"),
        faults.Fault(drop=True),
    ]
    for bad in ("status=200", "delay=-1", "delay=61", "colour=red", "status=x"):
        with pytest.raises(faults.BadFault):
            faults.parse([bad])


def test_an_aggregator_passes_each_site_only_its_own_faults() -> None:
    """``site=b`` goes to b as b's own fault; ``site=b/c`` goes to b for its site c."""
    found = faults.parse(["status=503; site=b, delay=2; site=b/c, drop; site=a, status=500"])
    assert faults.for_site(found, "b") == "status=503, delay=2; site=c"
    assert faults.for_site(found, "a") == "drop"
    assert faults.for_site(found, "z") is None
    assert faults.Fault(status=500).matches("GET", "/x")
    assert not faults.Fault(path="/sessions/*/events").matches("GET", "/requests")


# -- capabilities ------------------------------------------------------------------------------


def _site(*platforms: PlatformSettings) -> dict[str, object]:
    settings = load(environ={}, platforms=list(platforms))
    return describe(settings, {}, [])


def test_capabilities_rule_out_only_what_no_platform_of_the_site_can_run() -> None:
    """A site is ruled out with its own reasons when every platform refuses, never when one
    can or when part of it is unknown."""
    site = _site(PlatformSettings(name="p", executables=["ping"], max_cores=2))
    assert refusals(site, "s", _request("ping")) == []  # type: ignore[arg-type]
    reasons = refusals(site, "s", _request("delay", cores=4))  # type: ignore[arg-type]
    assert [r.kind for r in reasons] == [
        "urn:talicada:error:unsupported-kind",
        "urn:talicada:error:resource-limit",
    ]
    assert reasons[0].values["platform"] == "s/p"
    aggregator = {
        "platforms": [
            {"name": "lower", "remote": True, "reachable": True, "platforms": site["platforms"]},
            {"name": "gone", "remote": True, "reachable": False},
        ]
    }
    assert refusals(aggregator, "top", _request("delay")) == []  # type: ignore[arg-type]
    reachable_only = {"platforms": aggregator["platforms"][:1]}
    reasons = refusals(reachable_only, "top", _request("delay"))  # type: ignore[arg-type]
    assert reasons[0].values["platform"] == "top/lower/p"


# -- caches ------------------------------------------------------------------------------------


def test_a_cached_answer_lasts_its_ttl_by_the_clock() -> None:
    """An entry is fresh until its own TTL has passed on the injected clock."""
    now = [NOW]
    cache: TtlCache[str] = TtlCache(lambda: now[0], limit=2)
    cache.put("a", "A", 10)
    cache.put("never", "N", 0)
    assert cache.get("a") == "A"
    assert cache.get("never") is None
    now[0] += timedelta(seconds=9)
    assert cache.remaining("a") == pytest.approx(1)
    now[0] += timedelta(seconds=1)
    assert cache.get("a") is None
    for key in ("x", "y", "z"):
        cache.put(key, key, 100)
    assert cache.get("x") is None  # the oldest went first
    assert cache.get("z") == "z"


def test_the_ttl_of_an_answer_comes_from_its_body_or_its_cache_control() -> None:
    """``ttl`` in the body wins; otherwise ``max-age`` among other directives."""
    assert answer_ttl({"ttl": "PT5M"}, {"Cache-Control": "max-age=3"}) == 300
    assert answer_ttl({}, {"Cache-Control": "private, max-age=30"}) == 30
    assert max_age({"Cache-Control": "no-store"}) is None
    assert request_key("a", b"b") != request_key("ab", b"")


# -- index -------------------------------------------------------------------------------------


@pytest_asyncio.fixture(params=["memory", "redis"])
async def index(request: pytest.FixtureRequest, redis_url: str) -> AsyncIterator[Index]:
    if request.param == "memory":
        yield MemoryIndex()
        return
    client = aioredis.Redis.from_url(redis_url)
    prefix = f"talicada-test-{uuid.uuid4().hex}"
    yield RedisIndex(client, prefix)
    keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
    if keys:
        await client.unlink(*keys)
    await client.aclose()


async def test_one_offer_per_offer_set_can_be_claimed(index: Index) -> None:
    """The first claim wins; a repeat of it is fine, another offer hears who won."""
    assert await index.claim("set", "one") == "one"
    assert await index.claim("set", "one") == "one"
    assert await index.claim("set", "two") == "one"
    await index.unclaim("set", "two")  # not the holder: no effect
    assert await index.claim("set", "two") == "one"
    await index.unclaim("set", "one")
    assert await index.claim("set", "two") == "two"


async def test_an_offer_uuid_is_routed_to_one_site_only(index: Index) -> None:
    """A uuid already in the index is never overwritten by another site's offer."""
    first = RemoteSession(uuid="u", site="a", offerset="s", owner="me", dialect="v1.0")
    again = RemoteSession(uuid="u", site="b", offerset="t", owner="me", dialect="v1.0")
    assert await index.add_sessions([first]) == [True]
    assert await index.add_sessions([again]) == [False]
    assert await index.session("u") == first
    assert await index.session("nothing") is None
