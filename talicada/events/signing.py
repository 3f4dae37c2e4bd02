"""Signed worker callbacks (docs/ARCHITECTURE.md §8): HMAC-SHA256 over session, timestamp, body.

A worker sends ``X-Talicada-Timestamp`` (Unix seconds) and
``X-Talicada-Signature: sha256=<hex>`` where the MAC covers
``<session uuid>.<timestamp>.<body>`` with the deployment's shared secret.
The broker refuses a report whose signature is missing or wrong, whose
timestamp is more than :data:`WINDOW` seconds away from its own clock (a
captured report cannot be replayed later), or that was signed for another
session (it cannot be replayed against another path either). Two secrets may
be accepted at once, so a site can rotate the secret without stopping.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from typing import Final

TIMESTAMP_HEADER: Final = "X-Talicada-Timestamp"
SIGNATURE_HEADER: Final = "X-Talicada-Signature"
#: Largest accepted difference between the report's timestamp and now (seconds).
WINDOW: Final = 300
#: Fewest characters a callback secret may have (as for bearer tokens).
MIN_SECRET_LENGTH: Final = 16


class SignatureError(Exception):
    """Why a callback's signature is not accepted (the broker answers 401)."""


def signature(secret: bytes, session: str, timestamp: int, body: bytes) -> str:
    """The signature header value for ``body`` about ``session`` sent at ``timestamp``."""
    mac = hmac.new(secret, f"{session}.{timestamp}.".encode() + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def sign(secret: bytes, session: str, body: bytes, now: float) -> dict[str, str]:
    """The headers that sign ``body`` about ``session`` now."""
    timestamp = int(now)
    return {
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: signature(secret, session, timestamp, body),
    }


def verify(
    secrets: Iterable[bytes], session: str, headers: Mapping[str, str], body: bytes, now: float
) -> None:
    """Raise SignatureError unless one of ``secrets`` signed ``body`` for ``session`` lately."""
    stamp = headers.get(TIMESTAMP_HEADER)
    given = headers.get(SIGNATURE_HEADER)
    if not stamp or not given:
        raise SignatureError("the report is not signed")
    if not stamp.isascii() or not stamp.isdigit() or len(stamp) > 12:
        raise SignatureError("the report's timestamp is not a number")
    timestamp = int(stamp)
    if abs(now - timestamp) > WINDOW:
        raise SignatureError(f"the report's timestamp is more than {WINDOW} s from now")
    matched = False
    for secret in secrets:
        # Every secret is compared, so the time taken does not tell which one matched.
        expected = signature(secret, session, timestamp, body).encode()
        matched |= hmac.compare_digest(given.encode(errors="replace"), expected)
    if not matched:
        raise SignatureError("the report's signature does not match")
