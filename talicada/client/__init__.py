"""Python clients of the Talicada broker: :class:`AsyncClient` for asyncio code and
:class:`Client` for scripts and notebooks (it works where a loop already runs).

Both speak the HTTP API in README "The API", return the model classes of
:mod:`talicada.schema.model`, and raise :class:`BrokerError` carrying the
broker's messages. The ``talicada`` command's user commands are built on them.
"""

from talicada.client.aio import DEFAULT_URL, AsyncClient
from talicada.client.errors import BrokerError, NoOffers
from talicada.client.sync import Client
from talicada.client.wire import FINAL, SessionLog, SessionPage, Transition, is_final

__all__ = [
    "DEFAULT_URL",
    "FINAL",
    "AsyncClient",
    "BrokerError",
    "Client",
    "NoOffers",
    "SessionLog",
    "SessionPage",
    "Transition",
    "is_final",
]
