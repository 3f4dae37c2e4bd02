"""An authenticated caller: a principal and the roles it holds."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

#: Sees and cancels every session and reads /metrics when that needs a role.
OPERATOR: Final = "operator"
ANONYMOUS: Final = "anonymous"


@dataclass(frozen=True)
class Identity:
    """Who made a request (``principal`` owns what they create) and their roles."""

    principal: str
    roles: frozenset[str] = field(default_factory=frozenset)

    @property
    def operator(self) -> bool:
        """Whether this caller may see and cancel everyone's sessions."""
        return OPERATOR in self.roles


NOBODY: Final = Identity(ANONYMOUS)
