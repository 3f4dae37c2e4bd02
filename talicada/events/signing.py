"""Signed worker callbacks (docs/ARCHITECTURE.md §8): HMAC-SHA256 over timestamp and body.

A worker sends ``X-Talicada-Timestamp`` (Unix seconds) and
``X-Talicada-Signature: sha256=<hex>`` where the MAC covers
``<timestamp>.<body>`` with the deployment's shared secret. The broker
refuses a report whose signature is missing or wrong, or whose timestamp is
more than :data:`WINDOW` seconds away from its own clock (a captured report
cannot be replayed later).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Final

TIMESTAMP_HEADER: Final = "X-Talicada-Timestamp"
SIGNATURE_HEADER: Final = "X-Talicada-Signature"
#: Largest accepted difference between the report's timestamp and now (seconds).
WINDOW: Final = 300


class SignatureError(Exception):
    """Why a callback's signature is not accepted (the broker answers 401)."""


def signature(secret: bytes, timestamp: int, body: bytes) -> str:
    """The signature header value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def sign(secret: bytes, body: bytes, now: float) -> dict[str, str]:
    """The headers that sign ``body`` now."""
    timestamp = int(now)
    return {TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: signature(secret, timestamp, body)}


def verify(secret: bytes, headers: Mapping[str, str], body: bytes, now: float) -> None:
    """Raise SignatureError unless ``headers`` sign ``body`` within the window."""
    stamp = headers.get(TIMESTAMP_HEADER)
    given = headers.get(SIGNATURE_HEADER)
    if not stamp or not given:
        raise SignatureError("the report is not signed")
    try:
        timestamp = int(stamp)
    except ValueError:
        raise SignatureError("the report's timestamp is not a number") from None
    if abs(now - timestamp) > WINDOW:
        raise SignatureError(f"the report's timestamp is more than {WINDOW} s from now")
    if not hmac.compare_digest(given.encode(), signature(secret, timestamp, body).encode()):
        raise SignatureError("the report's signature does not match")
