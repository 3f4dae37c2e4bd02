"""Offer-time fence: data URLs on internal addresses get NO (talicada/security/fence.py).

The worker checks again when it fetches; this check lets a client learn at
once, naming the data item, instead of after it accepted an offer.
"""

from __future__ import annotations

from talicada.schema import messages as msg
from talicada.schema.messages import MessageItem
from talicada.schema.model import SimpleDataResource
from talicada.schema.validation import ValidRequest
from talicada.security.fence import Fence, OfferTimeResolver
from talicada.settings import PlatformSettings


async def fenced_data(
    platform: PlatformSettings, fence: Fence, resolver: OfferTimeResolver, valid: ValidRequest
) -> list[MessageItem]:
    """A NO reason for each data item whose URL the fence of ``platform`` refuses."""
    reasons: list[MessageItem] = []
    for index, item in enumerate(valid.request.data):
        if not isinstance(item, SimpleDataResource):
            continue
        reason = await resolver.refusal(fence, item.location)
        if reason is not None:
            reasons.append(
                msg.make(
                    msg.UNREACHABLE_DATA,
                    platform=platform.name,
                    path=f"data[{index}]",
                    reason=reason,
                )
            )
    return reasons
