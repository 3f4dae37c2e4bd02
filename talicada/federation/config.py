"""Federation settings: remote brokers as platforms, and how an aggregator treats them.

In the TOML file a remote broker is a ``[[platforms]]`` table with ``remote``
set; :func:`talicada.settings.load` moves such tables into
``Settings.remote_platforms``, so everything that runs local platforms
(workers, calendars, metrics of streams) never sees them.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

#: Where an aggregator puts the client's principal when it calls with its own token.
PRINCIPAL_HEADER = "X-Talicada-Principal"


class RemotePlatform(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A remote broker this broker aggregates (a ``[[platforms]]`` table with ``remote``).

    name: how this broker names the site (in messages and ``/capabilities``).
    remote: the site's base URL (``http://host:port``).
    token_file: a service token to call the site with, re-read when the file
    changes; the client's principal then travels in the federation's
    ``principal_header``, which the site must be configured to trust. None:
    the client's own ``Authorization`` is passed through.
    timeout: seconds the site has to answer one call (None: ``[federation] timeout``).
    offers: the best K offers to keep from the site's answer (None:
    ``[federation] offers_per_site``; 0 keeps all).
    """

    name: Annotated[str, Meta(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
    remote: Annotated[str, Meta(pattern=r"^https?://[^\s]+$")]
    token_file: str | None = None
    timeout: Annotated[float, Meta(gt=0, le=300)] | None = None
    offers: Annotated[int, Meta(ge=0, le=32)] | None = None

    @property
    def url(self) -> str:
        """The base URL without a trailing slash."""
        return self.remote.rstrip("/")


class FederationSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """How this broker aggregates remote brokers and is aggregated (``[federation]``).

    timeout: seconds each site has to answer one call, unless its platform says.
    offers_per_site: the best K offers kept from each site (0: all of them).
    capabilities_ttl: seconds this broker says its ``/capabilities`` stay true
    (``Cache-Control: max-age``), and the longest it trusts a site's.
    principal_header: the header carrying the client's principal when this
    broker calls a site with a service token, and the one it reads from
    ``trusted`` callers.
    trusted: principals (of service tokens) allowed to act for the principal
    they name in ``principal_header``; every other caller's header is refused.
    fault_injection: obey ``X-Talicada-Fault`` headers (for test sites only).
    follow_limit: remote sessions this replica follows at once.
    """

    timeout: Annotated[float, Meta(gt=0, le=300)] = 5.0
    offers_per_site: Annotated[int, Meta(ge=0, le=32)] = 0
    capabilities_ttl: Annotated[float, Meta(ge=0)] = 300.0
    principal_header: Annotated[str, Meta(pattern=r"^[A-Za-z0-9-]{1,64}$")] = PRINCIPAL_HEADER
    trusted: list[str] = msgspec.field(default_factory=list)
    fault_injection: bool = False
    follow_limit: Annotated[int, Meta(ge=0, le=100_000)] = 1000
