"""``GET /capabilities``, and what a site's capabilities rule out. Pure code.

The document lists the kinds this broker knows, its limits, and each platform
with the kinds it runs and its per-session limits. A remote platform appears
with the platforms its site listed (``platforms``, nested as deep as
aggregators are stacked), or ``reachable: false`` when its capabilities are
not known. An aggregator reads a site's document to decide, before asking it,
whether any of the site's platforms could run a request: each entry becomes a
:class:`~talicada.settings.PlatformSettings` and goes through the same
feasibility check the site itself would apply, so the reasons it gives are the
site's own (naming the platform as ``site/platform``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import msgspec

from talicada import __version__, constants
from talicada.broker import platforms
from talicada.schema import iso8601
from talicada.schema.kinds import KINDS, Dialect, Family, UnknownKind, resolve, uri_for
from talicada.schema.messages import MessageItem
from talicada.schema.validation import ValidRequest
from talicada.settings import PlatformSettings, Settings


def _duration(seconds: float) -> str:
    return iso8601.format_duration(timedelta(seconds=round(seconds)))


def local_entry(platform: PlatformSettings) -> dict[str, Any]:
    """One local platform: its kinds and per-session limits."""
    entry: dict[str, Any] = {
        "name": platform.name,
        "launcher": platform.launcher,
        "executables": [uri_for(Family.EXECUTABLE, k, Dialect.V1_0) for k in platform.executables],
        "data": [uri_for(Family.DATA, k, Dialect.V1_0) for k in platform.data],
        "data_schemes": platform.data_schemes,
        "data_hosts": platform.data_hosts,
        "cores": platform.cores,
        "memory": platform.memory,
        "max_cores": platform.session_cores,
        "max_memory": platform.session_memory,
        "max_duration": _duration(platform.max_duration),
    }
    if platform.core_hour_price is not None:
        entry["core_hour_price"] = platform.core_hour_price
    return entry


def describe(
    settings: Settings,
    remote: Mapping[str, dict[str, Any] | None],
    endpoints: list[str],
) -> dict[str, Any]:
    """This broker's capabilities; ``remote`` holds each remote platform's document
    (None: not known now)."""
    entries = [local_entry(p) for p in settings.platforms]
    for site in settings.remote_platforms:
        doc = remote.get(site.name)
        if doc is None:
            entries.append({"name": site.name, "remote": True, "reachable": False})
        else:
            nested = doc.get("platforms")
            entries.append(
                {
                    "name": site.name,
                    "remote": True,
                    "reachable": True,
                    "platforms": nested if isinstance(nested, list) else [],
                }
            )
    return {
        "service": "talicada",
        "version": __version__,
        "dialects": [dialect.value for dialect in Dialect],
        "kinds": {
            family.value: [uri_for(family, name, Dialect.V1_0) for name in names]
            for family, names in KINDS.items()
            if family is not Family.SESSION
        },
        "limits": {
            "body_bytes": settings.max_body_bytes,
            "long_poll": _duration(constants.MAX_LONG_POLL.total_seconds()),
        },
        "platforms": entries,
        "offers": {"max": settings.max_offers, "ttl": _duration(settings.offer_ttl)},
        "ttl": _duration(settings.federation.capabilities_ttl),
        "endpoints": endpoints,
    }


# -- reading a site's document -----------------------------------------------------------


class _Entry(msgspec.Struct, kw_only=True):
    """A platform entry as a site lists it; unknown fields are ignored (newer sites)."""

    name: str = "?"
    remote: bool = False
    reachable: bool = True
    platforms: list[dict[str, Any]] = msgspec.field(default_factory=list)
    executables: list[str] = msgspec.field(default_factory=list)
    data: list[str] = msgspec.field(default_factory=list)
    data_schemes: list[str] = msgspec.field(default_factory=list)
    data_hosts: list[str] = msgspec.field(default_factory=list)
    max_cores: int = 1
    max_memory: int = 1
    max_duration: str | None = None
    core_hour_price: float | None = None


class Unknown(Exception):
    """Part of a site's capabilities is not known, so nothing can be ruled out."""


def _kinds(uris: list[str], family: Family) -> list[str]:
    names = []
    for uri in uris:
        try:
            names.append(resolve(uri, family)[0])
        except UnknownKind:
            continue  # a kind this version does not know cannot be asked for either
    return names


def site_platforms(doc: Mapping[str, Any], prefix: str) -> list[PlatformSettings]:
    """The platforms in a site's capabilities, named ``prefix/name``; Unknown when
    some of them are not known (an unreachable site behind an aggregator)."""
    found: list[PlatformSettings] = []
    items = doc.get("platforms")
    if not isinstance(items, list):
        raise Unknown(prefix)
    for item in items:
        try:
            entry = msgspec.convert(item, _Entry)
        except msgspec.ValidationError as error:
            raise Unknown(prefix) from error
        name = f"{prefix}/{entry.name}"
        if entry.remote:
            if not entry.reachable:
                raise Unknown(name)
            found += site_platforms({"platforms": entry.platforms}, name)
            continue
        try:
            longest = iso8601.parse_duration(entry.max_duration) if entry.max_duration else None
        except iso8601.Iso8601Error as error:
            raise Unknown(name) from error
        # Built directly, not decoded, so the site/platform name is not checked.
        found.append(
            PlatformSettings(
                name=name,
                executables=_kinds(entry.executables, Family.EXECUTABLE),
                data=_kinds(entry.data, Family.DATA),
                data_schemes=entry.data_schemes,
                data_hosts=entry.data_hosts,
                cores=max(entry.max_cores, 1),
                memory=max(entry.max_memory, 1),
                max_duration=longest.total_seconds() if longest else 30 * 24 * 3600.0,
                core_hour_price=entry.core_hour_price,
            )
        )
    return found


def refusals(doc: Mapping[str, Any], site: str, valid: ValidRequest) -> list[MessageItem]:
    """Why no platform of ``site`` (by its capabilities ``doc``) can run ``valid``.

    Empty when one can, or when the document does not say enough to be sure.
    """
    try:
        candidates = site_platforms(doc, site)
    except Unknown:
        return []
    reasons: list[MessageItem] = []
    for platform in candidates:
        found = platforms.feasibility(platform, valid)
        if not found:
            return []
        reasons += found
    return reasons
