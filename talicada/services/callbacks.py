"""Status-change callbacks from compute services (our proposed protocol).

A service that supports callbacks answers ``GET <base>/v1/callbacks`` with 200
(404 when it does not), takes ``PUT`` of ``{"url", "secret"}`` to register the
account's webhook and ``DELETE`` to remove it. On every status change of one of
the account's sessions it POSTs a :class:`CallbackEvent` as JSON, signed:

* ``X-Callback-Timestamp``: Unix seconds when it was sent;
* ``X-Callback-Signature``: ``sha256=`` + hex HMAC-SHA256 keyed by the secret
  over ``f"{timestamp}.".encode() + body``.

Signing the timestamp with the body stops a captured delivery from being
replayed later; :func:`verify_callback` rejects stale timestamps for that reason.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

import msgspec

TIMESTAMP_HEADER = "X-Callback-Timestamp"
SIGNATURE_HEADER = "X-Callback-Signature"
#: Oldest (or furthest in the future, for skewed clocks) delivery accepted, seconds.
TOLERANCE = 300.0


class CallbackError(ValueError):
    """A callback delivery is unsigned, wrongly signed, stale or malformed."""


class CallbackEvent(msgspec.Struct, frozen=True):
    """One status change as a service reports it.

    ``details`` is the service's own description of the thing that changed,
    kept raw because each service shapes it differently: Skaha sends it as
    ``session`` (what ``GET /v1/session/{id}`` returns), SRCNet as ``details``.
    """

    service: str
    id: str
    status: str
    time: str
    previous: str | None = None
    details: dict[str, Any] = msgspec.field(default_factory=dict)


class _Wire(msgspec.Struct):
    service: str
    id: str
    status: str
    time: str
    previous: str | None = None
    details: dict[str, Any] | None = None
    session: dict[str, Any] | None = None


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """The ``X-Callback-Signature`` value for ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def _header(headers: Mapping[str, str], name: str) -> str | None:
    # aiohttp's headers are case-insensitive, a plain dict is not: accept both.
    value = headers.get(name)
    if value is not None:
        return value
    lower = name.lower()
    return next((v for k, v in headers.items() if k.lower() == lower), None)


def verify_callback(
    secret: bytes,
    headers: Mapping[str, str],
    body: bytes,
    now: float,
    *,
    tolerance: float = TOLERANCE,
) -> None:
    """Check a delivery's signature and freshness; raise :class:`CallbackError` if either fails."""
    timestamp = _header(headers, TIMESTAMP_HEADER)
    signed = _header(headers, SIGNATURE_HEADER)
    if not timestamp or not signed:
        raise CallbackError("callback is not signed")
    try:
        sent = float(timestamp)
    except ValueError:
        raise CallbackError(f"callback timestamp is not a number: {timestamp[:40]!r}") from None
    if abs(now - sent) > tolerance:
        raise CallbackError(f"callback timestamp is stale: {now - sent:.0f}s old")
    # Constant-time comparison: the signature is a secret-derived value.
    if not hmac.compare_digest(signed.strip(), signature(secret, timestamp, body)):
        raise CallbackError("callback signature does not match")


def decode_callback(body: bytes) -> CallbackEvent:
    """The event a (verified) delivery carries; :class:`CallbackError` when malformed."""
    try:
        wire = msgspec.json.decode(body, type=_Wire)
    except msgspec.ValidationError as error:
        raise CallbackError(f"callback body is malformed: {error}") from None
    except msgspec.DecodeError as error:
        raise CallbackError(f"callback body is not JSON: {error}") from None
    details = wire.details if wire.details is not None else wire.session
    return CallbackEvent(
        wire.service, wire.id, wire.status, wire.time, wire.previous, details or {}
    )
