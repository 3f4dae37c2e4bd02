"""Start-up checks and notices about exposure (docs/ARCHITECTURE.md §8).

Embedded mode with authentication off lets anyone who reaches the port act
as ``anonymous``: it listens on loopback only unless the site says
``allow_unauthenticated_listen`` explicitly. Fetching from loopback, allowed
by default in embedded mode, is said once at start-up.
"""

from __future__ import annotations

import ipaddress

import structlog

from talicada.security.fence import describe, platform_fence
from talicada.settings import Settings, SettingsError

log = structlog.get_logger("talicada.security")


def is_loopback(host: str) -> bool:
    """Whether ``host`` (as given to ``listen``) is a loopback name or address."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(settings: Settings, *, authenticated: bool) -> None:
    """SettingsError when an unauthenticated broker would listen beyond loopback."""
    if authenticated or settings.allow_unauthenticated_listen or is_loopback(settings.host):
        return
    raise SettingsError(
        f"host: {settings.host!r} is not loopback and authentication is off (embedded "
        "mode without auth_tokens_file or OIDC); anyone reaching it could act as 'anonymous'. "
        "Set TALICADA_ALLOW_UNAUTHENTICATED_LISTEN=true to do it anyway"
    )


def announce(settings: Settings) -> None:
    """Log what the outbound fence lets through, loudly when loopback is allowed."""
    for platform in settings.platforms:
        fence = platform_fence(settings, platform)
        if fence.loopback:
            log.warning(
                "fence.loopback_allowed",
                platform=platform.name,
                reason="data URLs on this machine's loopback may be fetched (allow_loopback_fetch)",
            )
        else:
            log.info("fence.active", platform=platform.name, **describe(fence))
