"""Who is calling: bearer tokens from a static token file (docs/ARCHITECTURE.md §8).

The file holds one ``<token> <principal>`` pair per line; ``#`` starts a
comment. With no token file every caller is ``anonymous`` — allowed only in
embedded mode, and logged loudly at startup.
"""

from __future__ import annotations

import hmac
from pathlib import Path

from talicada.settings import SettingsError

ANONYMOUS = "anonymous"


class Tokens:
    """Maps bearer tokens to principals; compares in constant time."""

    def __init__(self, pairs: dict[str, str]) -> None:
        self._pairs = pairs

    @classmethod
    def load(cls, path: str) -> Tokens:
        """Read a token file; SettingsError naming the line when it is malformed."""
        pairs: dict[str, str] = {}
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except OSError as error:
            raise SettingsError(f"auth_tokens_file {path}: {error.strerror}") from error
        for number, line in enumerate(lines, start=1):
            text = line.split("#", 1)[0].strip()
            if not text:
                continue
            parts = text.split()
            if len(parts) != 2 or len(parts[0]) < 16:
                raise SettingsError(
                    f"auth_tokens_file {path} line {number}: expected '<token> <principal>' "
                    "with a token of at least 16 characters"
                )
            pairs[parts[0]] = parts[1]
        return cls(pairs)

    def principal(self, authorization: str | None) -> str | None:
        """The principal of an ``Authorization: Bearer`` header, or None."""
        if not authorization:
            return None
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        found = None
        for known, principal in self._pairs.items():
            if hmac.compare_digest(known.encode(), token.strip().encode()):
                found = principal
        return found
