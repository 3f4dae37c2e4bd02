"""Fixtures of the crash suite, and its summary: each scenario's figures.

``deployment`` starts nothing by itself: a scenario calls ``start_all`` with the
settings it needs, and the fixture stops every process and deletes every key
afterwards, whatever happened. ``own_redis`` is a redis-server of the test's
own (AOF on), the only Redis a scenario may stop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.reliability.support import Deployment, Figures, OwnRedis, saved, table

_RECORDED: list[str] = []


@pytest_asyncio.fixture
async def own_redis(tmp_path: Path) -> AsyncIterator[OwnRedis]:
    """A redis-server on a free port in a temporary directory, stopped afterwards."""
    server = OwnRedis(tmp_path / "redis")
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest_asyncio.fixture
async def deployment(redis_url: str, tmp_path: Path) -> AsyncIterator[Deployment]:
    """A deployment on the shared test Redis (under its own key prefix)."""
    deployed = Deployment(tmp_path / "deployment", redis_url)
    try:
        yield deployed
    finally:
        await deployed.stop()


def recorded(figures: Figures) -> None:
    """Save a scenario's figures and list them in this run's summary."""
    figures.save()
    _RECORDED.append(figures.scenario)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the figures of the scenarios that ran (docs/RELIABILITY.md's table)."""
    figures = [item for item in saved() if item.scenario in _RECORDED]
    if figures:
        terminalreporter.write_sep("=", "reliability figures (docs/RELIABILITY.md)")
        terminalreporter.write_line(table(figures))
