"""Authentication and roles: OIDC access tokens from a stand-in issuer, the token file,
and the operator who sees and cancels everyone's sessions (must show 3)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestServer
from joserfc.jwk import RSAKey

from talicada.settings import SettingsError, load
from tests.conftest import ClientFactory
from tests.lifecycle_support import ACCEPT, CANCEL, Client, task
from tests.standins.oidc import Issuer

AUDIENCE = "talicada"


@pytest_asyncio.fixture
async def issuer() -> AsyncIterator[tuple[Issuer, str]]:
    """The stand-in issuer on loopback, and its JWKS URL."""
    standin = Issuer()
    server = TestServer(standin.app(), host="127.0.0.1")
    await server.start_server()
    yield standin, str(server.make_url("/jwk"))
    await server.close()


def oidc(issuer: Issuer, jwks_url: str, **extra: object) -> list[dict[str, object]]:
    return [
        {
            "issuer": issuer.issuer,
            "audiences": [AUDIENCE],
            "jwks_url": jwks_url,
            "roles": {"talicada/operators": "operator"},
            **extra,
        }
    ]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def offer(client: Client, token: str) -> set[str]:
    """The uuids of the offers made to the bearer of ``token``."""
    response = await client.post("/requests", json=task("delay"), headers=bearer(token))
    body = await response.json()
    assert response.status == 200, body
    return {offer["meta"]["uuid"] for offer in body["offers"]}


async def test_tokens_from_the_issuer_are_accepted_and_bad_ones_are_401(
    make_client: ClientFactory, issuer: tuple[Issuer, str]
) -> None:
    standin, url = issuer
    client = await make_client(oidc=oidc(standin, url))
    good = standin.token("alice")
    assert (await client.get("/sessions", headers=bearer(good))).status == 200
    stranger = RSAKey.generate_key(2048, parameters={"kid": str(standin.signing_key.kid)})
    refused = {
        "expired": standin.token("alice", lifetime=-120),
        "wrongly signed": standin.token("alice", key=stranger),
        "wrong audience": standin.token("alice", audience="someone-else"),
        "other issuer": Issuer("https://evil.test/").token("alice"),
        "tampered": good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB"),
        "not a token": "eyJ.garbage.here",
    }
    for name, token in refused.items():
        response = await client.get("/sessions", headers=bearer(token))
        assert response.status == 401, name
        assert response.headers["WWW-Authenticate"].startswith("Bearer"), name
        assert (await response.json())["messages"][0]["values"]["path"] == "Authorization"
    assert (await client.get("/sessions")).status == 401  # no token at all
    assert standin.jwks_fetches == 1  # keys were cached across all of those


async def test_an_operator_sees_and_cancels_every_session_and_a_user_only_theirs(
    make_client: ClientFactory, issuer: tuple[Issuer, str]
) -> None:
    standin, url = issuer
    client = await make_client(oidc=oidc(standin, url), metrics_access="operator")
    alice, bob = standin.token("alice"), standin.token("bob")
    operator = standin.token("olga", groups=["/talicada/operators"])
    alices, all_bobs = await offer(client, alice), await offer(client, bob)

    async def listed(token: str) -> set[str]:
        page = await (await client.get("/sessions?offers=true", headers=bearer(token))).json()
        return {session["meta"]["uuid"] for session in page["sessions"]}

    assert await listed(alice) == alices
    assert await listed(bob) == all_bobs
    assert await listed(operator) >= alices | all_bobs
    bobs = min(all_bobs)
    assert (await client.get(f"/sessions/{bobs}", headers=bearer(alice))).status == 404
    assert (await client.get(f"/sessions/{bobs}", headers=bearer(operator))).status == 200
    accepted = await client.post(f"/sessions/{bobs}", json=ACCEPT, headers=bearer(bob))
    assert accepted.status == 200
    refused = await client.post(f"/sessions/{bobs}", json=CANCEL, headers=bearer(alice))
    assert refused.status == 404
    cancelled = await client.post(f"/sessions/{bobs}", json=CANCEL, headers=bearer(operator))
    assert cancelled.status == 200, await cancelled.text()
    assert (await cancelled.json())["phase"] == "CANCELLED"
    # /metrics needs the operator role when so configured
    assert (await client.get("/metrics", headers=bearer(alice))).status == 403
    assert (await client.get("/metrics")).status == 401
    assert (await client.get("/metrics", headers=bearer(operator))).status == 200


async def test_a_rotated_key_is_fetched_once_and_the_withdrawn_one_refused(
    make_client: ClientFactory, issuer: tuple[Issuer, str]
) -> None:
    standin, url = issuer
    client = await make_client(oidc=oidc(standin, url, jwks_refresh=0))
    old = standin.token("alice")
    assert (await client.get("/sessions", headers=bearer(old))).status == 200
    standin.rotate()
    new = standin.token("alice")
    assert (await client.get("/sessions", headers=bearer(new))).status == 200
    assert standin.jwks_fetches == 2  # the unknown key id made it ask again
    assert (await client.get("/sessions", headers=bearer(old))).status == 401


async def test_keys_from_a_file_and_roles_in_the_token_file(
    make_client: ClientFactory, tmp_path: Path
) -> None:
    standin = Issuer()
    keys = tmp_path / "jwks.json"
    keys.write_text(json.dumps(standin.jwks()))
    tokens = tmp_path / "tokens"
    tokens.write_text("o" * 20 + " otto operator\n" + "u" * 20 + " ursula\n")
    client = await make_client(
        auth_tokens_file=str(tokens),
        oidc=[{"issuer": standin.issuer, "audiences": [AUDIENCE], "jwks_file": str(keys)}],
        metrics_port=9,  # /metrics elsewhere: here it needs the role
    )
    assert (await client.get("/sessions", headers=bearer(standin.token("amy")))).status == 200
    assert (await client.get("/metrics", headers=bearer("u" * 20))).status == 403
    assert (await client.get("/metrics", headers=bearer("o" * 20))).status == 200


def test_oidc_settings_need_exactly_one_key_source() -> None:
    base = {"issuer": "https://iam.test/", "audiences": ["x"]}
    with pytest.raises(SettingsError, match=r"oidc\[0\]: set exactly one"):
        load(environ={}, oidc=[base])
    with pytest.raises(SettingsError, match=r"oidc\[0\]: set exactly one"):
        load(environ={}, oidc=[{**base, "jwks_url": "https://a/", "jwks_file": "/b"}])
