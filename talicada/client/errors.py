"""Exceptions the client raises, each carrying what the broker said."""

from __future__ import annotations

from talicada.schema.messages import MessageItem


class BrokerError(Exception):
    """The broker refused a call (4xx/5xx) or could not be reached.

    ``status`` is the HTTP status (0 when there was no answer) and ``messages``
    the broker's MessageItems: each has a stable ``kind`` to switch on and a
    rendered ``message`` for people.
    """

    def __init__(self, status: int, messages: list[MessageItem], *, url: str = "") -> None:
        self.status = status
        self.messages = messages
        self.url = url
        text = "; ".join(item.message or item.kind for item in messages) or "no message"
        super().__init__(f"{status}: {text}" if status else text)


class NoOffers(BrokerError):
    """The broker answered ``result: NO``: no platform can run the request; ``messages`` say why."""

    def __init__(self, messages: list[MessageItem], *, offerset: str = "") -> None:
        super().__init__(200, messages)
        self.offerset = offerset


def unreachable(url: str, error: BaseException) -> BrokerError:
    """A BrokerError for a broker that did not answer."""
    reason = f"cannot reach the broker at {url}: {type(error).__name__}: {error}"
    return BrokerError(0, [MessageItem(kind="urn:talicada:error:unreachable", message=reason)])
