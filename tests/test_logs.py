"""Logging: one JSON format for our events and the standard library's records, with context."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from talicada import logs


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    """JSON logging into a buffer for one test, then structlog's defaults again."""
    buffer = io.StringIO()
    assert logs.configure("json", stream=buffer, cache=False) is True
    try:
        yield buffer
    finally:
        logs.reset()


def _lines(buffer: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def test_library_records_and_our_events_share_the_bound_context(stream: io.StringIO) -> None:
    """Inside bound_contextvars, a redis warning and our event both carry session and event."""
    with structlog.contextvars.bound_contextvars(session="s-1", event_id="e-1"):
        logging.getLogger("redis.connection").warning("reconnecting to %s", "redis:6379")
        structlog.get_logger("talicada.test").info("thing.done", size=3)
    logging.getLogger("asyncio").warning("outside any context")
    redis_line, ours, outside = _lines(stream)
    assert redis_line["event"] == "reconnecting to redis:6379"
    assert redis_line["logger"] == "redis.connection"
    assert redis_line["level"] == "warning"
    assert ours["event"] == "thing.done"
    assert ours["size"] == 3
    for line in (redis_line, ours):
        assert line["session"] == "s-1"
        assert line["event_id"] == "e-1"
        assert "timestamp" in line
    assert "session" not in outside


def test_library_chatter_below_warning_is_left_out_but_the_access_log_is_kept(
    stream: io.StringIO,
) -> None:
    """aiohttp's access log is INFO and kept; redis and asyncio INFO are dropped."""
    logging.getLogger("redis").info("noise")
    logging.getLogger("asyncio").info("noise")
    logging.getLogger("aiohttp.access").info("GET /", extra={"status": 200})
    (line,) = _lines(stream)
    assert line["logger"] == "aiohttp.access"
    assert line["status"] == 200


def test_console_format_is_chosen_explicitly() -> None:
    """``console`` renders for people: not JSON."""
    buffer = io.StringIO()
    try:
        assert logs.configure("console", stream=buffer, cache=False) is False
        structlog.get_logger("talicada.test").info("thing.done")
    finally:
        logs.reset()
    text = buffer.getvalue()
    assert "thing.done" in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text.splitlines()[0])
