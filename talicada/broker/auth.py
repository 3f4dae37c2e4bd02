"""Who is calling: bearer tokens from a token file or OIDC access tokens (docs/ARCHITECTURE.md §8).

The token file holds one ``<token> <principal> [role,role]`` line per caller;
``#`` starts a comment. OIDC issuers are configured with ``[[oidc]]``
(:mod:`talicada.auth.oidc`). With neither, every caller is ``anonymous`` —
allowed only in embedded mode, and logged loudly at startup.
"""

from __future__ import annotations

import hmac
from pathlib import Path

import structlog

from talicada.auth.identity import ANONYMOUS, Identity
from talicada.auth.oidc import OidcVerifier, TokenRefused, looks_like_jwt
from talicada.broker.store import EVERYONE
from talicada.settings import Settings, SettingsError

__all__ = ["ANONYMOUS", "Authenticator", "Tokens"]

log = structlog.get_logger("talicada.auth")

#: Fewest characters of a bearer token in the token file.
MIN_TOKEN_LENGTH = 16


class Tokens:
    """Maps bearer tokens to identities; compares in constant time."""

    def __init__(self, pairs: dict[str, Identity]) -> None:
        self._pairs = pairs

    @classmethod
    def load(cls, path: str) -> Tokens:
        """Read a token file; SettingsError naming the line when it is malformed."""
        pairs: dict[str, Identity] = {}
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except OSError as error:
            raise SettingsError(f"auth_tokens_file {path}: {error.strerror}") from error
        for number, line in enumerate(lines, start=1):
            text = line.split("#", 1)[0].strip()
            if not text:
                continue
            parts = text.split()
            if len(parts) not in (2, 3) or len(parts[0]) < MIN_TOKEN_LENGTH:
                raise SettingsError(
                    f"auth_tokens_file {path} line {number}: expected '<token> <principal> "
                    f"[roles]' with a token of at least {MIN_TOKEN_LENGTH} characters"
                )
            if parts[1] == EVERYONE:
                raise SettingsError(
                    f"auth_tokens_file {path} line {number}: {EVERYONE!r} is not a principal"
                )
            roles = frozenset(filter(None, parts[2].split(","))) if len(parts) == 3 else frozenset()
            pairs[parts[0]] = Identity(parts[1], roles)
        return cls(pairs)

    def identify(self, token: str) -> Identity | None:
        """The identity of a bearer token, or None."""
        found = None
        for known, identity in self._pairs.items():
            if hmac.compare_digest(known.encode(), token.encode()):
                found = identity
        return found

    def principal(self, authorization: str | None) -> str | None:
        """The principal of an ``Authorization: Bearer`` header, or None."""
        token = bearer(authorization)
        identity = self.identify(token) if token else None
        return identity.principal if identity else None


def bearer(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > 16384:
        return None
    return token


class Authenticator:
    """Resolves a request's bearer token through the token file, then OIDC."""

    def __init__(self, tokens: Tokens | None, oidc: OidcVerifier | None) -> None:
        self.tokens = tokens
        self.oidc = oidc

    @classmethod
    def from_settings(cls, settings: Settings) -> Authenticator | None:
        """The configured authenticator; None when authentication is off (embedded only)."""
        tokens = Tokens.load(settings.auth_tokens_file) if settings.auth_tokens_file else None
        oidc = OidcVerifier(list(settings.oidc)) if settings.oidc else None
        if tokens is None and oidc is None:
            if not settings.embedded:
                raise SettingsError(
                    "auth_tokens_file or oidc: required when redis_url is set "
                    "(auth is off only in embedded mode)"
                )
            return None
        return cls(tokens, oidc)

    async def identify(self, authorization: str | None) -> tuple[Identity | None, str]:
        """The caller's identity, or None and why not."""
        token = bearer(authorization)
        if token is None:
            return None, "a valid bearer token is required"
        if self.tokens is not None:
            found = self.tokens.identify(token)
            if found is not None:
                return found, ""
        if self.oidc is not None and looks_like_jwt(token):
            try:
                return await self.oidc.identify(token), ""
            except TokenRefused as error:
                log.info("auth.refused", reason=str(error))
                return None, str(error)
        return None, "a valid bearer token is required"

    async def close(self) -> None:
        if self.oidc is not None:
            await self.oidc.close()
