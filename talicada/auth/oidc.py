"""OIDC access tokens (INDIGO IAM and the like): JWTs checked against configured issuers.

A token is accepted when its ``iss`` is a configured issuer, its signature
verifies with one of that issuer's keys (JWKS from a URL, cached and
refetched when an unknown key id appears, so the issuer may rotate keys; or
from a file), its ``aud`` names a configured audience, and it is neither
expired nor not yet valid. The principal is the configured claim (``sub`` by
default); groups from the configured claim map to roles.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp
import structlog
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet

from talicada.auth.identity import Identity
from talicada.settings import OidcSettings, SettingsError

log = structlog.get_logger("talicada.auth.oidc")


class TokenRefused(Exception):
    """Why a token is not accepted (answered 401)."""


def unverified_claims(token: str) -> dict[str, Any]:
    """The payload of a compact JWT, not yet verified (to pick the issuer)."""
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenRefused("not a JWT")
    try:
        padded = parts[1] + "=" * (-len(parts[1]) % 4)
        claims = json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))
    except (ValueError, UnicodeError) as error:
        raise TokenRefused("the token's payload cannot be read") from error
    if not isinstance(claims, dict):
        raise TokenRefused("the token's payload is not an object")
    return claims


def looks_like_jwt(token: str) -> bool:
    """Whether ``token`` has the compact JWT shape (three dot-separated parts)."""
    return token.count(".") == 2 and token.startswith("ey")


class KeySource:
    """An issuer's keys: from a JWKS file, or a URL fetched with caching."""

    def __init__(self, settings: OidcSettings, clock: Any = time.monotonic) -> None:
        self.settings = settings
        self.clock = clock
        self._keys: KeySet | None = None
        self._fetched = float("-inf")
        self._http: aiohttp.ClientSession | None = None
        if settings.jwks_file:
            self._keys = self._parse(self._read_file(settings.jwks_file))

    @staticmethod
    def _read_file(path: str) -> Mapping[str, Any]:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise SettingsError(f"oidc.jwks_file {path}: {error}") from error
        if not isinstance(data, dict):
            raise SettingsError(f"oidc.jwks_file {path}: not a JWKS object")
        return data

    @staticmethod
    def _parse(data: Mapping[str, Any]) -> KeySet:
        return KeySet.import_key_set(data)  # type: ignore[arg-type]

    async def keys(self, *, refresh: bool = False) -> KeySet:
        """The issuer's keys; ``refresh`` asks again (an unknown key id), at most so often."""
        if self.settings.jwks_url is None:
            assert self._keys is not None
            return self._keys
        now = self.clock()
        stale = now - self._fetched > self.settings.jwks_ttl
        may_refresh = refresh and now - self._fetched > self.settings.jwks_refresh
        if self._keys is None or stale or may_refresh:
            try:
                self._keys = self._parse(await self._fetch(self.settings.jwks_url))
                self._fetched = now
            except (aiohttp.ClientError, TimeoutError, ValueError, JoseError) as error:
                log.warning("oidc.jwks_failed", url=self.settings.jwks_url, reason=str(error))
                if self._keys is None:
                    raise TokenRefused("the issuer's keys cannot be fetched now") from error
        return self._keys

    async def _fetch(self, url: str) -> Mapping[str, Any]:
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        async with self._http.get(url) as response:
            response.raise_for_status()
            data = await response.json(content_type=None)
        if not isinstance(data, dict):
            raise ValueError("the JWKS is not an object")
        return data

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()


class OidcVerifier:
    """Verifies access tokens of the configured issuers."""

    def __init__(self, issuers: list[OidcSettings]) -> None:
        self.issuers = {issuer.issuer: (issuer, KeySource(issuer)) for issuer in issuers}

    async def identify(self, token: str, now: float | None = None) -> Identity:
        """The identity a valid ``token`` carries; TokenRefused saying why otherwise."""
        issuer_name = unverified_claims(token).get("iss")
        if not isinstance(issuer_name, str) or issuer_name not in self.issuers:
            raise TokenRefused("the token's issuer is not trusted here")
        settings, source = self.issuers[issuer_name]
        try:
            try:
                decoded = jwt.decode(token, await source.keys(), algorithms=settings.algorithms)
            except InvalidKeyIdError:
                # The issuer may have rotated its keys since they were fetched.
                keys = await source.keys(refresh=True)
                decoded = jwt.decode(token, keys, algorithms=settings.algorithms)
            registry = jwt.JWTClaimsRegistry(
                now=int(now if now is not None else time.time()),
                leeway=int(settings.leeway),
                iss={"essential": True, "value": settings.issuer},
                aud={"essential": True, "values": settings.audiences},
                exp={"essential": True},
            )
            registry.validate(decoded.claims)
        except JoseError as error:
            raise TokenRefused(f"the token is not valid: {error.description or error}") from error
        claims = decoded.claims
        principal = claims.get(settings.principal_claim)
        if not isinstance(principal, str) or principal in ("", "*") or len(principal) > 256:
            raise TokenRefused(f"the token has no usable {settings.principal_claim!r} claim")
        return Identity(principal, roles_of(claims.get(settings.groups_claim), settings.roles))

    async def close(self) -> None:
        for _, source in self.issuers.values():
            await source.close()


def roles_of(groups: object, mapping: Mapping[str, str]) -> frozenset[str]:
    """The roles the ``groups`` claim (a list, or a space-separated string) maps to."""
    if isinstance(groups, str):
        names = groups.split()
    elif isinstance(groups, list):
        names = [group for group in groups if isinstance(group, str)]
    else:
        names = []
    # IAM spells groups with or without the leading slash (groups / wlcg.groups).
    found = {mapping.get(name) or mapping.get(name.lstrip("/")) for name in names}
    return frozenset(role for role in found if role)
