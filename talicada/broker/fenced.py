"""Offer-time fence: data URLs on internal addresses get NO (talicada/security/fence.py).

The worker checks again when it fetches; this check lets a client learn at
once, naming the data item, instead of after it accepted an offer.
"""

from __future__ import annotations

import asyncio

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
    located = [
        (index, item.location)
        for index, item in enumerate(valid.request.data)
        if isinstance(item, SimpleDataResource)
    ]
    # All at once: a request of many items on slow names costs one look-up's time.
    refusals = await asyncio.gather(*(resolver.refusal(fence, url) for _, url in located))
    reasons: list[MessageItem] = []
    for (index, _), reason in zip(located, refusals, strict=True):
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
