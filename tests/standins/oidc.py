"""A stand-in OIDC issuer (INDIGO IAM's token side): a JWKS endpoint and token minting.

Written from RFC 7517 (JWK sets), RFC 7519 (JWT) and IAM's documented claims
(``sub``, ``iss``, ``aud``, ``exp``, ``groups``). It serves
``/.well-known/openid-configuration`` and ``/jwk`` and counts JWKS fetches, so
tests can show caching; :meth:`Issuer.rotate` replaces its signing key as an
issuer does.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey


class Issuer:
    """Signing keys and a web application that publishes their public halves."""

    def __init__(self, issuer: str = "https://iam.test/") -> None:
        self.issuer = issuer
        self.keys: list[RSAKey] = [self._new_key(1)]
        self.jwks_fetches = 0

    @staticmethod
    def _new_key(number: int) -> RSAKey:
        return RSAKey.generate_key(2048, parameters={"kid": f"key-{number}", "use": "sig"})

    @property
    def signing_key(self) -> RSAKey:
        return self.keys[-1]

    def rotate(self, *, keep_old: bool = False) -> None:
        """A new signing key; the old one is withdrawn unless ``keep_old``."""
        new = self._new_key(len(self.keys) + 1)
        self.keys = [*self.keys, new] if keep_old else [new]

    def jwks(self) -> dict[str, Any]:
        return dict(KeySet(list(self.keys)).as_dict(private=False))

    def token(
        self,
        subject: str = "alice",
        *,
        audience: str = "talicada",
        lifetime: float = 300,
        groups: list[str] | None = None,
        key: RSAKey | None = None,
        **claims: Any,
    ) -> str:
        """A signed access token; every claim can be overridden."""
        now = int(time.time())
        payload: dict[str, Any] = {
            "iss": self.issuer,
            "sub": subject,
            "aud": audience,
            "iat": now,
            "nbf": now,
            "exp": now + int(lifetime),
            "jti": f"{subject}-{now}",
            "groups": groups or [],
            **claims,
        }
        signer = key or self.signing_key
        header = {"alg": "RS256", "typ": "at+jwt", "kid": signer.kid}
        return jwt.encode(header, payload, signer)

    def app(self) -> web.Application:
        application = web.Application()

        async def configuration(request: web.Request) -> web.Response:
            base = f"{request.scheme}://{request.host}"
            return web.json_response({"issuer": self.issuer, "jwks_uri": f"{base}/jwk"})

        async def jwk(request: web.Request) -> web.Response:
            self.jwks_fetches += 1
            return web.json_response(self.jwks())

        application.router.add_get("/.well-known/openid-configuration", configuration)
        application.router.add_get("/jwk", jwk)
        return application
