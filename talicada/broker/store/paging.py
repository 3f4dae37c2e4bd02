"""Opaque cursors for paging a listing of sessions, newest first."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from talicada.schema import messages as msg
from talicada.schema.messages import RequestInvalid


@dataclass(frozen=True, slots=True)
class Cursor:
    """The last item of a page: the next page starts just after (older than) it."""

    created: int
    uuid: str

    @property
    def key(self) -> tuple[int, str]:
        """Sort key of the item, matching the stores' (created, uuid) order."""
        return self.created, self.uuid

    def encode(self) -> str:
        """The cursor as an opaque URL-safe token."""
        return base64.urlsafe_b64encode(f"{self.created}:{self.uuid}".encode()).decode()

    @classmethod
    def decode(cls, token: str) -> Cursor:
        """The cursor in ``token``; RequestInvalid when it is not one of ours."""
        try:
            created, _, uuid = base64.urlsafe_b64decode(token.encode()).decode().partition(":")
            if not uuid:
                raise ValueError(token)
            return cls(int(created), uuid)
        except (ValueError, binascii.Error, UnicodeDecodeError) as error:
            raise RequestInvalid(
                [msg.make(msg.INVALID_FIELD, path="cursor", reason="not a cursor from this API")]
            ) from error
