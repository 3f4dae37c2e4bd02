"""Can a platform run a request at all, and how long will preparation take? Pure code.

Feasibility (docs/ARCHITECTURE.md §4.2) checks kinds, per-session sizes, data reachability
and cost. Each reason a platform cannot run the request becomes a message of
the ``result: NO`` answer, so a client learns which constraint failed where.

Preparation (docs/ARCHITECTURE.md §4.3) by the configured defaults alone is
:func:`preparation`; offers estimate it from history first
(talicada/broker/estimates.py).
"""

from __future__ import annotations

import urllib.parse
from datetime import timedelta

from talicada.schema import messages as msg
from talicada.schema.iso8601 import format_duration
from talicada.schema.kinds import Dialect, Family, uri_for
from talicada.schema.messages import MessageItem
from talicada.schema.model import AnyData, SimpleDataResource, kind_of
from talicada.schema.validation import ValidRequest
from talicada.security.fence import listed
from talicada.settings import EstimateSettings, PlatformSettings


def _uris(family: Family, kinds: list[str], dialect: Dialect) -> str:
    """Kinds as the client spells them (URIs it can send back), or ``none``."""
    return ", ".join(uri_for(family, kind, dialect) for kind in kinds) or "none"


def feasibility(platform: PlatformSettings, valid: ValidRequest) -> list[MessageItem]:
    """Why ``platform`` cannot run ``valid`` (empty when it can)."""
    reasons: list[MessageItem] = []
    executable = valid.executable_kind
    if executable not in platform.executables:
        reasons.append(
            msg.make(
                msg.UNSUPPORTED_KIND,
                platform=platform.name,
                family="executable",
                kind=uri_for(Family.EXECUTABLE, executable, valid.dialect),
                supported=_uris(Family.EXECUTABLE, platform.executables, valid.dialect),
            )
        )
    for resource, (low, _), limit in (
        ("cores", valid.cores, platform.session_cores),
        ("GiB of memory", valid.memory, platform.session_memory),
    ):
        if low > limit:
            reasons.append(
                msg.make(
                    msg.RESOURCE_LIMIT,
                    platform=platform.name,
                    resource=resource,
                    limit=limit,
                    requested=low,
                )
            )
    if valid.duration is not None and valid.duration.total_seconds() > platform.max_duration:
        reasons.append(
            msg.make(
                msg.DURATION_LIMIT,
                platform=platform.name,
                limit=format_duration(timedelta(seconds=platform.max_duration)),
                requested=format_duration(valid.duration),
            )
        )
    for index, item in enumerate(valid.request.data):
        for reason in _data_reasons(platform, item, f"data[{index}]", valid.dialect):
            # Ten items of one unsupported kind are one reason, not ten.
            if all(reason.message != known.message for known in reasons):
                reasons.append(reason)
    if valid.max_cost is not None and platform.core_hour_price is not None:
        hours = (valid.duration or timedelta(hours=1)).total_seconds() / 3600
        cheapest = valid.cores[0] * hours * platform.core_hour_price
        if cheapest > valid.max_cost:
            reasons.append(
                msg.make(
                    msg.COST_LIMIT,
                    platform=platform.name,
                    cost=round(cheapest, 2),
                    max=valid.max_cost,
                )
            )
    return reasons


def _data_reasons(
    platform: PlatformSettings, item: AnyData, path: str, dialect: Dialect
) -> list[MessageItem]:
    kind = kind_of(item)
    if kind not in platform.data:
        return [
            msg.make(
                msg.UNSUPPORTED_KIND,
                platform=platform.name,
                family="data",
                kind=uri_for(Family.DATA, kind, dialect),
                supported=_uris(Family.DATA, platform.data, dialect),
            )
        ]
    if isinstance(item, SimpleDataResource):
        url = urllib.parse.urlsplit(item.location)
        scheme = url.scheme.lower()
        if (
            platform.data_hosts
            and scheme != "file"
            and not listed(platform.data_hosts, item.location)
        ):
            return [
                msg.make(
                    msg.UNREACHABLE_DATA,
                    platform=platform.name,
                    path=path,
                    reason=f"it fetches only from {', '.join(platform.data_hosts)}",
                )
            ]
        if scheme not in platform.data_schemes:
            return [
                msg.make(
                    msg.UNREACHABLE_DATA,
                    platform=platform.name,
                    path=path,
                    reason=f"it fetches only {', '.join(platform.data_schemes)} URLs",
                )
            ]
    return []


def preparation(platform: PlatformSettings, valid: ValidRequest) -> timedelta:
    """How long ``platform`` needs from the start of preparation to available, by
    its configured defaults alone (offers also use history: talicada/broker/estimates.py)."""
    from talicada.broker.estimates import quote

    return quote(platform, valid, {}, EstimateSettings()).planned


def release(platform: PlatformSettings) -> timedelta:
    """How long ``platform`` needs to release a session."""
    return timedelta(seconds=platform.preparation.release)
